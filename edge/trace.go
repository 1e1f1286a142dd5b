package edge

import (
	"context"
	"reflect"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-io/switchboard/protocol"
)

// tracerName is the instrumentation scope of the edge's spans.
const tracerName = "github.com/switchboard-io/switchboard/edge"

// Span names, one per hop the edge owns.
const (
	SpanReceive = "edge.receive" // a client frame decoded (child of the frame's own traceparent)
	SpanPublish = "edge.publish" // the upstream envelope handed to the bus, until it is acknowledged
	SpanFanout  = "edge.fanout"  // a delivery queued and written to every local recipient
)

// initialGlobal is otel's delegating global provider before anyone installed one: while
// otel.GetTracerProvider still returns it, tracing is off and costs nothing.
var initialGlobal = otel.GetTracerProvider()

var traceContext propagation.TraceContext

// Span start options, built once: per-call options would allocate on every frame.
var (
	receiveOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	publishOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	fanoutOpts  = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
)

// tracing resolves the tracer to use. With Config.TracerProvider nil it follows otel's global
// provider, which a binary may install after New; a no-op provider yields a nil tracer, and
// every hot path checks for nil before it does any tracing work (no allocation when off).
type tracing struct {
	fixed trace.Tracer // from Config.TracerProvider; nil when it is a no-op
	glob  bool         // follow otel's global provider
	cache atomic.Pointer[tracerEntry]
}

type tracerEntry struct {
	tp trace.TracerProvider
	tr trace.Tracer
}

func newTracing(tp trace.TracerProvider) *tracing {
	t := &tracing{}
	if tp == nil {
		t.glob = true
		return t
	}
	if !isNoop(tp) {
		t.fixed = tp.Tracer(tracerName)
	}
	return t
}

func isNoop(tp trace.TracerProvider) bool {
	if tp == initialGlobal {
		return true
	}
	_, ok := tp.(noop.TracerProvider)
	return ok
}

// tracer returns the tracer, or nil when tracing is off. Safe from any goroutine.
func (t *tracing) tracer() trace.Tracer {
	if !t.glob {
		return t.fixed
	}
	tp := otel.GetTracerProvider()
	if isNoop(tp) {
		return nil
	}
	if e := t.cache.Load(); e != nil && reflect.TypeOf(e.tp) == reflect.TypeOf(tp) && e.tp == tp {
		return e.tr
	}
	e := &tracerEntry{tp: tp, tr: tp.Tracer(tracerName)}
	if reflect.TypeOf(tp).Comparable() {
		t.cache.Store(e)
	}
	return e.tr
}

// traceparentOf returns sc as a W3C traceparent (version 00), or "" when it is invalid. One
// allocation, unlike a propagator's Inject into a map.
func traceparentOf(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	const hexd = "0123456789abcdef"
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	for i, x := range tid {
		b[3+2*i], b[4+2*i] = hexd[x>>4], hexd[x&15]
	}
	b[35] = '-'
	for i, x := range sid {
		b[36+2*i], b[37+2*i] = hexd[x>>4], hexd[x&15]
	}
	b[52], b[53], b[54] = '-', '0', '0'
	if sc.IsSampled() {
		b[54] = '1'
	}
	return string(b[:])
}

// withRemoteParent returns ctx carrying the remote span context of a W3C traceparent.
func withRemoteParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{protocol.PropTraceparent: tp})
}

// traceUpstream starts the receive and publish spans of a client frame. It returns the
// publish span (ended by the Publisher's completion) and the traceparent the upstream
// envelope carries; receive must be ended by the caller once the frame is handed off. publish
// is nil when the frame is not sampled.
func (s *Server) traceUpstream(tr trace.Tracer, f *protocol.Frame, user string, conn uint64) (ctx context.Context, receive, publish trace.Span, tp string) {
	ctx = s.ctx
	if len(f.Traceparent) > 0 {
		// A client that sends its own trace context wants this frame traced: it is marked
		// sampled, whatever its flags say, so that a parent-based sampler keeps it (and every
		// later hop follows). The per-connection rate limit bounds what a client can force.
		ctx = withRemoteParent(ctx, string(f.Traceparent))
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !sc.IsSampled() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc.WithTraceFlags(sc.TraceFlags()|trace.FlagsSampled))
		}
	}
	ctx, receive = tr.Start(ctx, SpanReceive, receiveOpts...)
	if receive.IsRecording() {
		receive.SetAttributes(attribute.String("sb.type", string(f.Type)), attribute.String("sb.user", user),
			attribute.String("sb.edge", s.cfg.ID), attribute.Int64("sb.conn", int64(conn)))
	}
	if receive.SpanContext().IsSampled() {
		ctx, publish = tr.Start(ctx, SpanPublish, publishOpts...)
	}
	// An unsampled frame still passes its trace id and flag on, so that the later hops'
	// parent-based samplers agree with this one.
	tp = traceparentOf(trace.SpanContextFromContext(ctx))
	if tp == "" && len(f.Traceparent) > 0 {
		tp = string(f.Traceparent)
	}
	return ctx, receive, publish, tp
}

// fanoutTrace is the one span of a delivery across all loops: each loop that was handed the
// delivery adds its recipients after its socket writes, the last one ends the span.
type fanoutTrace struct {
	span       trace.Span
	pending    atomic.Int32
	recipients atomic.Int64
	loops      atomic.Int32
}

func (s *Server) startFanout(tr trace.Tracer, d *protocol.Downstream) *fanoutTrace {
	ctx := withRemoteParent(context.Background(), d.Traceparent)
	_, span := tr.Start(ctx, SpanFanout, fanoutOpts...)
	if !span.IsRecording() {
		span.End()
		return nil
	}
	span.SetAttributes(attribute.String("sb.edge", s.cfg.ID), attribute.Int("sb.target", int(d.Target)))
	if d.Room != "" {
		span.SetAttributes(attribute.String("sb.room", d.Room))
	}
	ft := &fanoutTrace{span: span}
	ft.pending.Store(1) // the dispatcher's own reference
	return ft
}

// done drops one reference, after a loop wrote its n recipients' frames (or never ran).
func (ft *fanoutTrace) done(n int, ran bool) {
	if n > 0 {
		ft.recipients.Add(int64(n))
	}
	if ran {
		ft.loops.Add(1)
	}
	if ft.pending.Add(-1) == 0 {
		ft.span.SetAttributes(attribute.Int64("sb.recipients", ft.recipients.Load()),
			attribute.Int("sb.loops", int(ft.loops.Load())))
		ft.span.End()
	}
}

// endPublish ends a frame's publish span with the Publisher's result.
func endPublish(sp trace.Span, err error) {
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}
