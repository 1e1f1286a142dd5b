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

	"github.com/switchboard-io/switchboard/logic/admin"
	"github.com/switchboard-io/switchboard/router/presence"
)

type fakeRuntime struct{ ch chan struct{} }

func (f fakeRuntime) Ready() <-chan struct{} { return f.ch }

func TestReadiness(t *testing.T) {
	rt := fakeRuntime{make(chan struct{})}
	var routerErr atomic.Pointer[error]
	r := &admin.Readiness{Runtime: rt, Router: func(ctx context.Context) error {
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
	r.Drain()
	if code, body := probe(); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("draining: %d %q", code, body)
	}
}
