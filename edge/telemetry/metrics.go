package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/switchboard-io/switchboard/edge"
)

// StatsSource is what MetricsHandler reads; *edge.Server satisfies it.
type StatsSource interface {
	ID() string
	Stats() edge.Stats
}

var _ StatsSource = (*edge.Server)(nil)

// MetricsHandler returns an http.Handler for /metrics: the edge's counters (edge.Stats) as
// OpenTelemetry observable instruments, exported in Prometheus text format through a private
// registry (with the Go runtime and process collectors). Stats is read once per scrape;
// nothing is added to the edge's hot paths. Series, each labelled edge="<id>":
//
//	sb_edge_connections{state="tcp"|"open"}        gauge
//	sb_edge_frames_in_total                         client frames accepted
//	sb_edge_frames_published_total                  client frames handed to the bus
//	sb_edge_frames_out_total                        frames written by fanout, per connection
//	sb_edge_bytes_in_total / sb_edge_bytes_out_total
//	sb_edge_closes_total{code}                      close codes sent
//	sb_edge_shed_total{priority="normal"}           deliveries shed for backlogged connections
//	sb_edge_downstream_total                        downstream envelopes handled
//	sb_edge_acks_total, sb_edge_publish_errors_total
//	sb_edge_handshake_rejections_total{status}      401 token, 403 origin, 431, 400, 404, …
//	sb_edge_handshake_timeouts_total, sb_edge_handshakes_total (accepted)
//	sb_edge_publish_latency_seconds                 histogram: Publish → bus acknowledged
//	sb_edge_delivery_latency_seconds                histogram: origin edge receive → fanout
//
// A construction error (not expected) yields a handler that answers 500 with it.
func MetricsHandler(src StatsSource) http.Handler {
	h, err := NewMetricsHandler(src)
	if err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		})
	}
	return h
}

// NewMetricsHandler is MetricsHandler returning its construction error.
func NewMetricsHandler(src StatsSource) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newHistCollector(src))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	if err := registerEdge(mp.Meter("github.com/switchboard-io/switchboard/edge"), src); err != nil {
		return nil, err
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}), nil
}

func registerEdge(m metric.Meter, src StatsSource) error {
	edgeAttr := attribute.String("edge", src.ID())
	var errs []error
	gauge := func(name, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	counter := func(name, desc, unit string) metric.Int64ObservableCounter {
		opts := []metric.Int64ObservableCounterOption{metric.WithDescription(desc)}
		if unit != "" {
			opts = append(opts, metric.WithUnit(unit))
		}
		c, err := m.Int64ObservableCounter(name, opts...)
		errs = append(errs, err)
		return c
	}
	conns := gauge("sb.edge.connections", "Connections held by the edge: tcp = accepted (any state), open = upgraded WebSocket")
	framesIn := counter("sb.edge.frames.in", "Client frames decoded and accepted", "")
	published := counter("sb.edge.frames.published", "Client frames handed to the bus", "")
	framesOut := counter("sb.edge.frames.out", "Frames written by fanout, counted per connection", "")
	bytesIn := counter("sb.edge.bytes.in", "Payload bytes of accepted client frames", "By")
	bytesOut := counter("sb.edge.bytes.out", "Bytes written to connections", "By")
	closes := counter("sb.edge.closes", "WebSocket close codes sent by the edge", "")
	shed := counter("sb.edge.shed", "Sheddable deliveries skipped for backlogged connections, by priority class", "")
	downstream := counter("sb.edge.downstream", "Downstream envelopes handled", "")
	acks := counter("sb.edge.acks", "Acks sent to clients", "")
	pubErrs := counter("sb.edge.publish.errors", "Bus publishes that failed", "")
	rejects := counter("sb.edge.handshake.rejections", "Handshakes answered with an HTTP error, by status", "")
	hsTimeouts := counter("sb.edge.handshake.timeouts", "Connections dropped by the handshake timeout", "")
	upgrades := counter("sb.edge.handshakes", "Handshakes accepted (WebSocket connections opened)", "")
	evRetried := counter("sb.edge.events.retried", "Connect/disconnect envelopes published again after the bus refused them", "")
	evDropped := counter("sb.edge.events.dropped", "Connect/disconnect envelopes given up on (logic never saw them)", "")
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("telemetry: instrument: %w", err)
		}
	}
	tcp := metric.WithAttributes(edgeAttr, attribute.String("state", "tcp"))
	open := metric.WithAttributes(edgeAttr, attribute.String("state", "open"))
	normal := metric.WithAttributes(edgeAttr, attribute.String("priority", "normal"))
	only := metric.WithAttributes(edgeAttr)
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := src.Stats()
		o.ObserveInt64(conns, st.Conns, tcp)
		o.ObserveInt64(conns, st.Open, open)
		o.ObserveInt64(framesIn, int64(st.Frames), only)
		o.ObserveInt64(published, int64(st.Upstream), only)
		o.ObserveInt64(framesOut, int64(st.Written), only)
		o.ObserveInt64(bytesIn, int64(st.BytesIn), only)
		o.ObserveInt64(bytesOut, int64(st.BytesOut), only)
		for code, n := range st.Closes {
			o.ObserveInt64(closes, int64(n), metric.WithAttributes(edgeAttr, attribute.String("code", strconv.Itoa(int(code)))))
		}
		o.ObserveInt64(shed, int64(st.Shed), normal) // only PriorityNormal is ever shed
		o.ObserveInt64(downstream, int64(st.Downstream), only)
		o.ObserveInt64(acks, int64(st.Acks), only)
		o.ObserveInt64(pubErrs, int64(st.PubErrors), only)
		for status, n := range st.Rejects {
			o.ObserveInt64(rejects, int64(n), metric.WithAttributes(edgeAttr, attribute.String("status", strconv.Itoa(status))))
		}
		o.ObserveInt64(hsTimeouts, int64(st.HSTimeouts), only)
		o.ObserveInt64(upgrades, int64(st.Upgrades), only)
		o.ObserveInt64(evRetried, int64(st.EventsRetried), only)
		o.ObserveInt64(evDropped, int64(st.EventsDropped), only)
		return nil
	}, conns, framesIn, published, framesOut, bytesIn, bytesOut, closes, shed, downstream, acks, pubErrs, rejects, hsTimeouts, upgrades,
		evRetried, evDropped)
	if err != nil {
		return fmt.Errorf("telemetry: callback: %w", err)
	}
	return nil
}

// histCollector exports the edge's latency histograms (edge.Stats) as Prometheus histograms:
// OpenTelemetry has no asynchronous histogram, and the edge keeps its own atomic buckets so
// that its hot paths never call a metrics SDK.
type histCollector struct {
	src          StatsSource
	pub, deliver *prometheus.Desc
}

func newHistCollector(src StatsSource) *histCollector {
	labels := prometheus.Labels{"edge": src.ID()}
	return &histCollector{src: src,
		pub: prometheus.NewDesc("sb_edge_publish_latency_seconds",
			"Time from handing a client frame to the bus to its acknowledgement", nil, labels),
		deliver: prometheus.NewDesc("sb_edge_delivery_latency_seconds",
			"Time from the originating edge's receive of a client frame to this edge's fanout of its delivery", nil, labels),
	}
}

func (c *histCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.pub; ch <- c.deliver }

func (c *histCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	for _, x := range []struct {
		d *prometheus.Desc
		h edge.Histogram
	}{{c.pub, st.PublishLatency}, {c.deliver, st.DeliveryLatency}} {
		buckets := make(map[float64]uint64, len(x.h.Bounds))
		var cum uint64
		for i, b := range x.h.Bounds {
			cum += x.h.Counts[i]
			buckets[b.Seconds()] = cum
		}
		m, err := prometheus.NewConstHistogram(x.d, x.h.Count, x.h.Sum.Seconds(), buckets)
		if err != nil {
			m = prometheus.NewInvalidMetric(x.d, err)
		}
		ch <- m
	}
}
