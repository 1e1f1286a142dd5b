package bus

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestQuietLog: a message repeated within a second is written once, its repeats counted on
// its next line; other messages are unaffected; records below the level are dropped; the
// attributes a caller adds with With are on the lines that are written, in order.
func TestQuietLog(t *testing.T) {
	var buf bytes.Buffer
	inner := timeless(&buf)
	q := newQuietLog(inner, slog.LevelWarn)
	ctx := context.Background()
	if q.Enabled(ctx, slog.LevelInfo) || !q.Enabled(ctx, slog.LevelError) {
		t.Fatal("Enabled: want Warn and above only")
	}
	h := q.WithAttrs([]slog.Attr{slog.String("component", "pulsar")})
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	log := func(h slog.Handler, at time.Duration, msg string, attrs ...slog.Attr) {
		t.Helper()
		r := slog.NewRecord(t0.Add(at), slog.LevelError, msg, 0)
		r.AddAttrs(attrs...)
		if err := h.Handle(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		// the Pulsar client's way: a fresh With per call
		log(h.WithAttrs([]slog.Attr{slog.String("topic", "t")}), time.Duration(i)*time.Millisecond/2, "queue full", slog.Int("i", i))
	}
	log(h, 10*time.Millisecond, "other")
	log(h, 1500*time.Millisecond, "queue full", slog.Int("i", 1000))

	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=ERROR msg="queue full" component=pulsar topic=t i=0`,
		`level=ERROR msg=other component=pulsar`,
		`level=ERROR msg="queue full" component=pulsar i=1000 suppressed=999`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestQuietLogGroup: attributes added before a group stay outside it.
func TestQuietLogGroup(t *testing.T) {
	var buf bytes.Buffer
	inner := timeless(&buf)
	l := slog.New(newQuietLog(inner, slog.LevelWarn)).With("a", 1).WithGroup("g").With("b", 2)
	l.Warn("m", "c", 3)
	l.Info("dropped")
	if got, want := strings.TrimSpace(buf.String()), `level=WARN msg=m a=1 g.b=2 g.c=3`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// timeless is a text handler writing to w without the time attribute.
func timeless(w io.Writer) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
}

func BenchmarkQuietLogSuppressed(b *testing.B) {
	l := slog.New(newQuietLog(slog.NewTextHandler(&bytes.Buffer{}, nil), slog.LevelWarn))
	b.ReportAllocs()
	for b.Loop() {
		l.With("topic", "persistent://public/default/sb-upstream").Error("producer send queue is full")
	}
}
