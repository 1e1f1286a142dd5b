package bus

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-io/switchboard/protocol"
)

// traceContext is the W3C Trace Context propagator: traceparent / tracestate travel as message
// properties (protocol.PropTraceparent, protocol.PropTracestate) from the client frame to the
// socket write.
var traceContext propagation.TraceContext

// injectTrace returns props with ctx's span context added, unless props already carry a
// traceparent or ctx has none. props itself is never modified.
func injectTrace(ctx context.Context, props map[string]string) map[string]string {
	if _, ok := props[protocol.PropTraceparent]; ok {
		return props
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return props
	}
	out := make(map[string]string, len(props)+2)
	for k, v := range props {
		out[k] = v
	}
	traceContext.Inject(ctx, propagation.MapCarrier(out))
	return out
}

// extractTrace returns ctx carrying the remote span context found in props, if any.
func extractTrace(ctx context.Context, props map[string]string) context.Context {
	if _, ok := props[protocol.PropTraceparent]; !ok {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier(props))
}
