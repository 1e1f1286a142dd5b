package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/logic/bus"
)

// flakyBus refuses the first fail subscribes with err, then subscribes on the embedded bus.
type flakyBus struct {
	bus.Bus
	fail  int32
	err   error
	tries atomic.Int32
}

func (f *flakyBus) Subscribe(ctx context.Context, topic, sub string, opts bus.SubOptions, h bus.Handler) (bus.Subscription, error) {
	if f.tries.Add(1) <= f.fail {
		return nil, f.err
	}
	return f.Bus.Subscribe(ctx, topic, sub, opts, h)
}

func TestSubscribeRetry(t *testing.T) {
	mem, err := bus.NewMemory(bus.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	srv, err := edge.New(edge.Config{ID: "edge-cli-test", Addr: "127.0.0.1:0", InsecureDevAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)

	t.Run("unavailable is retried until it succeeds", func(t *testing.T) {
		b := &flakyBus{Bus: mem, fail: 3, err: fmt.Errorf("%w: broker starting", bus.ErrUnavailable)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ds, err := SubscribeRetry(ctx, b, srv, "", log)
		if err != nil {
			t.Fatalf("SubscribeRetry: %v", err)
		}
		if err := ds.Close(); err != nil {
			t.Error(err)
		}
		if got := b.tries.Load(); got < 4 {
			t.Errorf("%d subscribe attempts, want ≥ 4 (3 refused, then both topics)", got)
		}
	})
	t.Run("other errors are returned at once", func(t *testing.T) {
		boom := errors.New("boom")
		b := &flakyBus{Bus: mem, fail: 1, err: boom}
		if _, err := SubscribeRetry(context.Background(), b, srv, "", log); !errors.Is(err, boom) {
			t.Fatalf("SubscribeRetry = %v, want boom", err)
		}
	})
	t.Run("ctx ends the retries", func(t *testing.T) {
		b := &flakyBus{Bus: mem, fail: 1 << 30, err: bus.ErrUnavailable}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := SubscribeRetry(ctx, b, srv, "", log); !errors.Is(err, context.Canceled) || !errors.Is(err, bus.ErrUnavailable) {
			t.Fatalf("SubscribeRetry = %v, want canceled wrapping unavailable", err)
		}
	})
}

func TestReusePort(t *testing.T) {
	if ok, err := ReusePort("127.0.0.1:0", true); ok || err != nil {
		t.Errorf("port 0: ReusePort = %v, %v; want false, nil", ok, err)
	}
	if ok, err := ReusePort("127.0.0.1:1", false); ok || err != nil {
		t.Errorf("not wanted: ReusePort = %v, %v; want false, nil", ok, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if ok, err := ReusePort(addr, true); ok || err == nil {
		t.Errorf("taken address: ReusePort = %v, %v; want false and an error", ok, err)
	}
	_ = ln.Close()
	if ok, err := ReusePort(addr, true); !ok || err != nil {
		t.Errorf("free address: ReusePort = %v, %v; want true, nil", ok, err)
	}
}

func TestPprofToken(t *testing.T) {
	mux := http.NewServeMux()
	Pprof(mux, "s3cret")
	for _, c := range []struct {
		auth string
		want int
	}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"Bearer s3cret", http.StatusOK}} {
		r := httptest.NewRequest("GET", "/debug/pprof/", nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("Authorization %q: HTTP %d, want %d", c.auth, w.Code, c.want)
		}
	}
}
