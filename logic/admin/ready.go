package admin

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Readiness serves /readyz: 200 "ready" only while the runtime's upstream subscription is
// established (Runtime.Ready), the bus accepts a publish (Bus) and the router answers (Router),
// each within Timeout, and Drain was not called; otherwise 503 with the reason. A load
// balancer or orchestrator stops sending work on 503; liveness (/healthz) is separate. The
// Bus and Router results are reused for CacheFor, so a probe storm does not become a storm
// of publishes and RPCs.
type Readiness struct {
	// Runtime is the logic runtime (its Ready channel). Required.
	Runtime interface{ Ready() <-chan struct{} }
	// Router checks the router (presence) is reachable, e.g. a client's Edges call. Nil means
	// not checked.
	Router func(ctx context.Context) error
	// Bus checks the bus accepts publishes (the binary publishes to a non-persistent health
	// topic). Nil means not checked.
	Bus func(ctx context.Context) error
	// Timeout bounds each check. Zero means 1s.
	Timeout time.Duration
	// CacheFor is how long a Bus/Router result is reused. Zero means 1s; negative: never.
	CacheFor time.Duration

	draining atomic.Bool

	mu      sync.Mutex
	checked time.Time // guarded by mu: when last was computed
	last    error     // guarded by mu
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
	return r.external(ctx)
}

// external runs the Bus and Router checks, or returns the cached result. Probes are serialised
// (the lock is held across the checks): concurrent probes wait for one answer.
func (r *Readiness) external(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cache := r.CacheFor
	if cache == 0 {
		cache = time.Second
	}
	if !r.checked.IsZero() && time.Since(r.checked) < cache {
		return r.last
	}
	t := r.Timeout
	if t <= 0 {
		t = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	var err error
	if r.Bus != nil {
		if e := r.Bus(ctx); e != nil {
			err = fmt.Errorf("bus: %w", e)
		}
	}
	if err == nil && r.Router != nil {
		if e := r.Router(ctx); e != nil {
			err = fmt.Errorf("router: %w", e)
		}
	}
	r.checked, r.last = time.Now(), err
	return err
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
