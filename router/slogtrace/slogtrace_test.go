package slogtrace_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-io/switchboard/router/slogtrace"
)

func TestNewLoggerJSONWithTrace(t *testing.T) {
	var buf bytes.Buffer
	log, err := slogtrace.NewLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	log.With("svc", "logic").InfoContext(ctx, "hello", "n", 1)
	log.Info("plain")
	log.Debug("hidden")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["msg"] != "hello" || m["trace_id"] != tid.String() || m["span_id"] != sid.String() || m["svc"] != "logic" || m["n"] != 1.0 {
		t.Fatalf("record = %v", m)
	}
	m = nil
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["trace_id"]; ok {
		t.Fatalf("trace_id without a span: %v", m)
	}
}

func TestNewLoggerText(t *testing.T) {
	var buf bytes.Buffer
	log, err := slogtrace.NewLogger(&buf, "", "")
	if err != nil {
		t.Fatal(err)
	}
	log.WithGroup("g").Info("x", "k", "v")
	if !strings.Contains(buf.String(), "g.k=v") {
		t.Fatalf("text: %q", buf.String())
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"json", "loud"}} {
		if _, err := slogtrace.NewLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
