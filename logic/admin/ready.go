package admin

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// Readiness serves /readyz: 200 "ready" only while the runtime's upstream subscription is
// established (Runtime.Ready), the router answers Router within Timeout and Drain was not
// called; otherwise 503 with the reason. A load balancer or orchestrator stops sending work on
// 503; liveness (/healthz) is separate.
type Readiness struct {
	// Runtime is the logic runtime (its Ready channel). Required.
	Runtime interface{ Ready() <-chan struct{} }
	// Router checks the router (presence) is reachable, e.g. a client's Edges call. Nil means
	// not checked.
	Router func(ctx context.Context) error
	// Timeout bounds the Router check. Zero means 1s.
	Timeout time.Duration

	draining atomic.Bool
}

// Drain makes /readyz answer 503 from now on (shutdown started).
func (r *Readiness) Drain() { r.draining.Store(true) }

// Check returns nil when ready, or why not.
func (r *Readiness) Check(ctx context.Context) error {
	if r.draining.Load() {
		return fmt.Errorf("draining")
	}
	select {
	case <-r.Runtime.Ready():
	default:
		return fmt.Errorf("bus: upstream subscription not established")
	}
	if r.Router != nil {
		t := r.Timeout
		if t <= 0 {
			t = time.Second
		}
		ctx, cancel := context.WithTimeout(ctx, t)
		defer cancel()
		if err := r.Router(ctx); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	}
	return nil
}

// ServeHTTP answers the readiness probe.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if err := r.Check(req.Context()); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
