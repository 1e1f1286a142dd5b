// Package slogtrace builds Switchboard binaries' loggers: text or JSON log/slog output whose
// records carry trace_id and span_id when logged with a context holding a span. It lives in the
// router module because every other module that has a binary (logic, edge) already depends on it.
package slogtrace

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger returns the binary's logger: format "text" (the default when empty) or "json"
// (one JSON object per line, for log shippers), at level ("debug", "info", "warn", "error";
// empty means info). Records logged with a context that carries a span (slog's *Context
// methods) get trace_id and span_id attributes, so a log line joins its trace.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if level != "" {
		if err := lv.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("log level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
	return slog.New(TraceHandler(h)), nil
}

// TraceHandler wraps h so that records whose context carries a valid span context get
// trace_id and span_id attributes (hex, as in a W3C traceparent).
func TraceHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
