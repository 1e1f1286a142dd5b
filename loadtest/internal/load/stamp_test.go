package load

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestStampRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	s := makeStamp(stampFanout, 42, at, 100)
	if len(s) != 100 {
		t.Fatalf("len %d, want 100", len(s))
	}
	k, seq, ns, ok := parseStamp(s)
	if !ok || k != stampFanout || seq != 42 || ns != at.UnixNano() {
		t.Fatalf("parse = %c %d %d %v", k, seq, ns, ok)
	}
	if k2, seq2, ns2, ok := parseStampBytes([]byte(s)); !ok || k2 != k || seq2 != seq || ns2 != ns {
		t.Fatalf("parseStampBytes = %c %d %d %v", k2, seq2, ns2, ok)
	}
	for _, bad := range []string{"", "F", "F|x|1|", "F|1|y|", "F|1|2", "Fx1|2|", "F||2|", "F|1||"} {
		if _, _, _, ok := parseStamp(bad); ok {
			t.Errorf("%q parsed", bad)
		}
		if _, _, _, ok := parseStampBytes([]byte(bad)); ok {
			t.Errorf("%q parsed (bytes)", bad)
		}
	}
}

func TestPlanSplitsWithinTheFDBudget(t *testing.T) {
	cfg := Config{Scenario: ScenarioFanout, Targets: []string{"ws://127.0.0.1:1/ws"}, Conns: 40000}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	ps := plan(cfg)
	total := 0
	for i, p := range ps {
		if p.Count+1 > cfg.PerWorker {
			t.Errorf("worker %d holds %d+1 connections, over %d", i, p.Count, cfg.PerWorker)
		}
		if p.First != total {
			t.Errorf("worker %d first %d, want %d", i, p.First, total)
		}
		total += p.Count
		if p.Publisher != (i == 0) {
			t.Errorf("worker %d publisher=%v", i, p.Publisher)
		}
	}
	if total != 40000 || len(ps) != 3 {
		t.Fatalf("planned %d members in %d workers, want 40000 in 3", total, len(ps))
	}
	cfg.PerWorker = 20000
	if err := cfg.fill(); err == nil {
		t.Error("per-worker 20000 accepted (fd limit)")
	}
}

// BenchmarkFastFanout is the generator's cost per received fanout message (no JSON decode).
func BenchmarkFastFanout(b *testing.B) {
	for _, items := range []int{1, 8} {
		msg := []byte(`{"type":"danmaku.batch","data":{"room":"lt-room","items":[`)
		for i := range items {
			if i > 0 {
				msg = append(msg, ',')
			}
			msg = append(msg, `{"user":"u","text":"`+makeStamp(stampFanout, int64(i), time.Now(), 100)+`"}`...)
		}
		msg = append(msg, "]}}"...)
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			w := &worker{lat: newShardedHist()}
			c := &client{w: w, key: 1}
			b.ReportAllocs()
			for b.Loop() {
				c.fastFanout(msg)
			}
			if w.recv.Load() == 0 {
				b.Fatal("nothing counted")
			}
		})
	}
}

func TestHistRoundTrip(t *testing.T) {
	h := newHist()
	for _, v := range []int64{1, 50, 1000, 250_000, 3_000_000} {
		_ = h.RecordValue(v)
	}
	s := exportHist(h)
	if len(s.Counts) >= len(h.Export().Counts) {
		t.Fatalf("counts not trimmed: %d", len(s.Counts))
	}
	g := importHist(s)
	if g.TotalCount() != 5 || g.Max() != h.Max() || g.ValueAtQuantile(50) != h.ValueAtQuantile(50) {
		t.Fatalf("round trip: n=%d max=%d p50=%d", g.TotalCount(), g.Max(), g.ValueAtQuantile(50))
	}
}

func TestOpenWithRetries(t *testing.T) {
	w := &worker{cfg: workerConfig{Retries: 2}}
	attempts := 0
	fail := func() error { attempts++; w.failed.Add(1); return errTimeout }
	w.openWithRetries(context.Background(), fail)
	if attempts != 3 || w.failed.Load() != 1 || w.retried.Load() != 2 {
		t.Fatalf("attempts %d failed %d retried %d, want 3/1/2", attempts, w.failed.Load(), w.retried.Load())
	}
	attempts = 0
	ok := func() error {
		attempts++
		if attempts < 2 {
			w.failed.Add(1)
			return errTimeout
		}
		return nil
	}
	w.openWithRetries(context.Background(), ok)
	if attempts != 2 || w.failed.Load() != 1 || w.retried.Load() != 3 {
		t.Fatalf("attempts %d failed %d retried %d, want 2/1/3", attempts, w.failed.Load(), w.retried.Load())
	}
}
