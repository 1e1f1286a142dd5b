package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/protocol"
)

// StatsSource is what Metrics reads at scrape time; *logic.Runtime satisfies it.
type StatsSource interface {
	Stats() logic.Stats
	Ready() <-chan struct{}
}

var _ StatsSource = (*logic.Runtime)(nil)

// Metrics exports logic's numbers in Prometheus text format (OpenTelemetry instruments through
// the Prometheus exporter, on a private registry with the Go runtime and process collectors):
//
//	sb_logic_frames_total                 upstream events handled (logic.Stats)
//	sb_logic_error_frames_total           error frames sent to clients
//	sb_logic_nacks_total                  events nacked for redelivery
//	sb_logic_malformed_total              undecodable upstream envelopes dropped
//	sb_logic_published_total              downstream envelopes published
//	sb_logic_ready                        1 once the upstream subscription is established
//	sb_logic_handler_duration_seconds     histogram {type, outcome=ok|error|transient}
//	sb_logic_redeliveries_total           {type}: frames handled again after a nack
//	sb_logic_bus_publish_duration_seconds {result}: see InstrumentBus
//	sb_logic_upstream_lag_seconds         histogram: the edge's receive of a frame → its handler
//	                                      starting here (edge publish, broker, dispatch, queueing;
//	                                      across machines it includes their clock offset)
//
// The handler series come from Middleware, which the runtime must be configured with; the
// type label is the frame's type for routed types and "unknown" otherwise (clients cannot
// grow the label set; at most 256 types, then "other"). Types are per route, so per plugin
// (the runtime does not expose which plugin registered a type, so there is no plugin label).
type Metrics struct {
	handler   http.Handler
	duration  metric.Float64Histogram
	redeliv   metric.Int64Counter
	publish   metric.Float64Histogram
	publishOK metric.RecordOption
	lag       metric.Float64Histogram
	src       atomic.Pointer[sourceRef]

	unknown *typeAttrs   // unrouted types
	other   *typeAttrs   // types beyond maxTypes
	types   sync.Map     // frame type -> *typeAttrs; at most maxTypes (+ "other")
	ntype   atomic.Int32 // len(types)
}

// sourceRef boxes the interface for the atomic pointer.
type sourceRef struct{ src StatsSource }

// maxTypes caps the distinct type labels; more are recorded as "other".
const maxTypes = 256

// typeAttrs are a type's precomputed attribute sets (no allocation per frame).
type typeAttrs struct {
	ok, err, transient metric.RecordOption
	redeliv            metric.AddOption
}

func newTypeAttrs(t string) *typeAttrs {
	set := func(outcome string) metric.RecordOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("type", t), attribute.String("outcome", outcome)))
	}
	return &typeAttrs{ok: set("ok"), err: set("error"), transient: set("transient"),
		redeliv: metric.WithAttributeSet(attribute.NewSet(attribute.String("type", t)))}
}

func (x *Metrics) attrs(t string) *typeAttrs {
	if a, ok := x.types.Load(t); ok {
		return a.(*typeAttrs)
	}
	if x.ntype.Add(1) > maxTypes {
		x.ntype.Add(-1)
		return x.other
	}
	a, loaded := x.types.LoadOrStore(t, newTypeAttrs(t))
	if loaded {
		x.ntype.Add(-1)
	}
	return a.(*typeAttrs)
}

// NewMetrics builds the /metrics handler and the middleware's instruments. The runtime's
// series appear once SetSource is called (the runtime is built with Middleware, so it comes
// after NewMetrics).
func NewMetrics() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, fmt.Errorf("admin: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m := mp.Meter("github.com/switchboard-io/switchboard/logic")
	x := &Metrics{unknown: newTypeAttrs("unknown"), other: newTypeAttrs("other"), handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})}
	x.duration, err = m.Float64Histogram("sb.logic.handler.duration", metric.WithUnit("s"),
		metric.WithDescription("Handler latency per frame type (including the wait for its publishes)"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	if err != nil {
		return nil, fmt.Errorf("admin: instrument: %w", err)
	}
	x.redeliv, err = m.Int64Counter("sb.logic.redeliveries", metric.WithDescription("Frames handled again after a nack"))
	if err != nil {
		return nil, fmt.Errorf("admin: instrument: %w", err)
	}
	x.publish, err = m.Float64Histogram("sb.logic.bus.publish.duration", metric.WithUnit("s"),
		metric.WithDescription("Bus publishes from Publish to the broker's answer, by result (see InstrumentBus)"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	if err != nil {
		return nil, fmt.Errorf("admin: instrument: %w", err)
	}
	x.lag, err = m.Float64Histogram("sb.logic.upstream.lag", metric.WithUnit("s"),
		metric.WithDescription("From the edge's receive of a client frame to its handler starting in logic"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	if err != nil {
		return nil, fmt.Errorf("admin: instrument: %w", err)
	}
	x.publishOK = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))
	if err := x.registerStats(m); err != nil {
		return nil, err
	}
	return x, nil
}

// SetSource sets the runtime whose Stats are exported. Safe for concurrent use.
func (x *Metrics) SetSource(src StatsSource) { x.src.Store(&sourceRef{src}) }

func (x *Metrics) source() StatsSource {
	if r := x.src.Load(); r != nil {
		return r.src
	}
	return nil
}

// ServeHTTP serves /metrics.
func (x *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { x.handler.ServeHTTP(w, r) }

// Middleware records each message frame's handler latency and redeliveries. Configure the
// runtime with it (logic.Config.Middleware); it costs one histogram record per frame.
func (x *Metrics) Middleware() logic.Middleware {
	return func(next logic.Handler) logic.Handler {
		return func(ctx context.Context, c *logic.Context) error {
			start := time.Now()
			if !c.ReceivedAt.IsZero() {
				x.lag.Record(ctx, max(0, start.Sub(c.ReceivedAt).Seconds()))
			}
			err := next(ctx, c)
			d := time.Since(start)
			var a *typeAttrs
			var perr *protocol.Error
			if errors.As(err, &perr) && perr.Code == protocol.ErrUnknownType {
				a = x.unknown
			} else {
				a = x.attrs(c.Type)
			}
			outcome := a.ok
			if err != nil {
				outcome = a.err
				if logic.IsTransient(err) {
					outcome = a.transient
				}
			}
			x.duration.Record(ctx, d.Seconds(), outcome)
			if c.Redeliveries > 0 {
				x.redeliv.Add(ctx, 1, a.redeliv)
			}
			return err
		}
	}
}

func (x *Metrics) registerStats(m metric.Meter) error {
	var errs []error
	counter := func(name, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	frames := counter("sb.logic.frames", "Upstream events handled (acked or nacked)")
	errFrames := counter("sb.logic.error_frames", "Error frames sent to clients")
	nacks := counter("sb.logic.nacks", "Upstream events nacked for redelivery")
	malformed := counter("sb.logic.malformed", "Undecodable upstream envelopes dropped")
	published := counter("sb.logic.published", "Downstream envelopes published")
	ready, err := m.Int64ObservableGauge("sb.logic.ready", metric.WithDescription("1 once the upstream subscription is established"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("admin: instrument: %w", err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		src := x.source()
		if src == nil {
			return nil
		}
		st := src.Stats()
		o.ObserveInt64(frames, int64(st.Frames))
		o.ObserveInt64(errFrames, int64(st.Errors))
		o.ObserveInt64(nacks, int64(st.Nacks))
		o.ObserveInt64(malformed, int64(st.Malformed))
		o.ObserveInt64(published, int64(st.Published))
		var r int64
		select {
		case <-src.Ready():
			r = 1
		default:
		}
		o.ObserveInt64(ready, r)
		return nil
	}, frames, errFrames, nacks, malformed, published, ready)
	if err != nil {
		return fmt.Errorf("admin: callback: %w", err)
	}
	return nil
}
