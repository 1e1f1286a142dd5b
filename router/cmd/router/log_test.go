package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestJSONLogWithTrace(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	log.With("a", "b").WarnContext(ctx, "hi")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %q", err, buf.String())
	}
	if m["msg"] != "hi" || m["level"] != "WARN" || m["trace_id"] != tid.String() || m["span_id"] != sid.String() || m["a"] != "b" {
		t.Fatalf("record = %v", m)
	}
	if _, err := newLogger(&buf, "xml", "info"); err == nil {
		t.Fatal("bad format accepted")
	}
}
