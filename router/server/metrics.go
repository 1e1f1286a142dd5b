package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/switchboard-io/switchboard/router/presence"
)

// newMetrics returns the /metrics handler and store decorated with the presence series
// (OpenTelemetry instruments exported in Prometheus format on a private registry, with the Go
// runtime and process collectors):
//
//	sb_router_presence_duration_seconds{op, result}  histogram per Store call served
//	                                                 (result: ok, lease_lost, unavailable, invalid, error)
//	sb_router_presence_ops_total{kind}               ops applied (connect, disconnect, join, leave)
func newMetrics(store presence.Store) (http.Handler, presence.Store, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, nil, fmt.Errorf("router/server: prometheus exporter: %w", err)
	}
	m := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)).Meter("github.com/switchboard-io/switchboard/router")
	dur, err := m.Float64Histogram("sb.router.presence.duration", metric.WithUnit("s"),
		metric.WithDescription("Presence store calls served, by operation and result"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
	if err != nil {
		return nil, nil, fmt.Errorf("router/server: instrument: %w", err)
	}
	ops, err := m.Int64Counter("sb.router.presence.ops", metric.WithDescription("Presence ops applied, by kind"))
	if err != nil {
		return nil, nil, fmt.Errorf("router/server: instrument: %w", err)
	}
	ms := &metricsStore{Store: store, dur: dur, ops: ops, okAttrs: make(map[string]metric.RecordOption)}
	for _, op := range []string{"register", "renew", "deregister", "apply", "sync", "resolve_users", "room_edges", "room_counts", "online", "edges"} {
		ms.okAttrs[op] = metric.WithAttributeSet(attribute.NewSet(attribute.String("op", op), attribute.String("result", "ok")))
	}
	for k, name := range map[presence.OpKind]string{presence.OpConnect: "connect", presence.OpDisconnect: "disconnect",
		presence.OpJoin: "join", presence.OpLeave: "leave"} {
		ms.kindAttrs[k] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", name)))
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}), ms, nil
}

// metricsStore counts and times the calls of the Store it wraps. Events and Close pass through.
type metricsStore struct {
	presence.Store
	dur       metric.Float64Histogram
	ops       metric.Int64Counter
	okAttrs   map[string]metric.RecordOption // read-only after newMetrics
	kindAttrs [presence.OpLeave + 1]metric.AddOption
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, presence.ErrLeaseLost):
		return "lease_lost"
	case errors.Is(err, presence.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, presence.ErrInvalid):
		return "invalid"
	default:
		return "error"
	}
}

func (m *metricsStore) record(ctx context.Context, op string, start time.Time, err error) {
	d := time.Since(start).Seconds()
	if err == nil {
		m.dur.Record(ctx, d, m.okAttrs[op])
		return
	}
	m.dur.Record(ctx, d, metric.WithAttributes(attribute.String("op", op), attribute.String("result", result(err))))
}

func (m *metricsStore) Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error) {
	start := time.Now()
	ep, err := m.Store.Register(ctx, edge, ttl)
	m.record(ctx, "register", start, err)
	return ep, err
}

func (m *metricsStore) Renew(ctx context.Context, edge string, epoch uint64) error {
	start := time.Now()
	err := m.Store.Renew(ctx, edge, epoch)
	m.record(ctx, "renew", start, err)
	return err
}

func (m *metricsStore) Deregister(ctx context.Context, edge string, epoch uint64) error {
	start := time.Now()
	err := m.Store.Deregister(ctx, edge, epoch)
	m.record(ctx, "deregister", start, err)
	return err
}

func (m *metricsStore) Apply(ctx context.Context, edge string, epoch uint64, ops []presence.Op) error {
	start := time.Now()
	err := m.Store.Apply(ctx, edge, epoch, ops)
	m.record(ctx, "apply", start, err)
	if err == nil {
		var n [presence.OpLeave + 1]int64
		for _, op := range ops {
			if op.Kind <= presence.OpLeave {
				n[op.Kind]++
			}
		}
		for k := presence.OpConnect; k <= presence.OpLeave; k++ {
			if n[k] > 0 {
				m.ops.Add(ctx, n[k], m.kindAttrs[k])
			}
		}
	}
	return err
}

func (m *metricsStore) Sync(ctx context.Context, edge string, epoch uint64, conns []presence.Conn, rooms map[string][]uint64) error {
	start := time.Now()
	err := m.Store.Sync(ctx, edge, epoch, conns, rooms)
	m.record(ctx, "sync", start, err)
	return err
}

func (m *metricsStore) ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error) {
	start := time.Now()
	r, err := m.Store.ResolveUsers(ctx, users)
	m.record(ctx, "resolve_users", start, err)
	return r, err
}

func (m *metricsStore) RoomEdges(ctx context.Context, room string) ([]presence.RoomEdge, error) {
	start := time.Now()
	r, err := m.Store.RoomEdges(ctx, room)
	m.record(ctx, "room_edges", start, err)
	return r, err
}

func (m *metricsStore) RoomCounts(ctx context.Context, rooms []string) (map[string]int, error) {
	start := time.Now()
	r, err := m.Store.RoomCounts(ctx, rooms)
	m.record(ctx, "room_counts", start, err)
	return r, err
}

func (m *metricsStore) Online(ctx context.Context) (presence.Counts, error) {
	start := time.Now()
	r, err := m.Store.Online(ctx)
	m.record(ctx, "online", start, err)
	return r, err
}

func (m *metricsStore) Edges(ctx context.Context) (map[string]uint64, error) {
	start := time.Now()
	r, err := m.Store.Edges(ctx)
	m.record(ctx, "edges", start, err)
	return r, err
}

// pprofMux adds net/http/pprof's handlers under /debug/pprof/.
func pprofMux(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
