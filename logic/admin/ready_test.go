package admin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/admin"
	"github.com/switchboard-io/switchboard/router/presence"
)

type fakeRuntime struct{ ch chan struct{} }

func (f fakeRuntime) Ready() <-chan struct{} { return f.ch }

func TestReadiness(t *testing.T) {
	rt := fakeRuntime{make(chan struct{})}
	var routerErr atomic.Pointer[error]
	var busErr atomic.Pointer[error]
	r := &admin.Readiness{Runtime: rt, CacheFor: -1, Bus: func(ctx context.Context) error {
		if p := busErr.Load(); p != nil {
			return *p
		}
		return ctx.Err()
	}, Router: func(ctx context.Context) error {
		if p := routerErr.Load(); p != nil {
			return *p
		}
		return ctx.Err()
	}}
	srv := httptest.NewServer(r)
	defer srv.Close()
	probe := func() (int, string) {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := probe(); code != 503 || !strings.Contains(body, "subscription") {
		t.Fatalf("before subscribe: %d %q", code, body)
	}
	close(rt.ch)
	if code, body := probe(); code != 200 || body != "ready\n" {
		t.Fatalf("subscribed: %d %q", code, body)
	}
	down := error(presence.ErrUnavailable)
	routerErr.Store(&down)
	if code, body := probe(); code != 503 || !strings.Contains(body, "router") {
		t.Fatalf("router down: %d %q", code, body)
	}
	if err := r.Check(context.Background()); !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("Check = %v", err)
	}
	routerErr.Store(nil)
	if code, _ := probe(); code != 200 {
		t.Fatalf("router back: %d", code)
	}
	busErr.Store(&down)
	if code, body := probe(); code != 503 || !strings.Contains(body, "bus") {
		t.Fatalf("bus down: %d %q", code, body)
	}
	busErr.Store(nil)
	if code, _ := probe(); code != 200 {
		t.Fatalf("bus back: %d", code)
	}
	r.Drain()
	if code, body := probe(); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("draining: %d %q", code, body)
	}
}

func TestReadinessCache(t *testing.T) {
	rt := fakeRuntime{make(chan struct{})}
	close(rt.ch)
	var calls atomic.Int32
	r := &admin.Readiness{Runtime: rt, CacheFor: time.Hour, Router: func(context.Context) error { calls.Add(1); return nil }}
	for range 5 {
		if err := r.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("router checked %d times within CacheFor", n)
	}
	r.Drain() // not cached
	if err := r.Check(context.Background()); err == nil {
		t.Fatal("ready while draining")
	}
}
