package admin

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchboard-io/switchboard/logic/bus"
)

// InstrumentBus returns b with its publishes timed and counted on the Metrics' registry:
//
//	sb_logic_bus_publish_duration_seconds{result}  histogram, Publish → done
//	                                               (result: ok, full, unavailable, closed, canceled, error)
//
// Subscribe and Close pass through. It costs one closure per publish.
func (x *Metrics) InstrumentBus(b bus.Bus) bus.Bus { return &meteredBus{Bus: b, x: x} }

type meteredBus struct {
	bus.Bus
	x *Metrics
}

func (m *meteredBus) Publish(ctx context.Context, topic string, msg bus.Message, done func(error)) {
	start := time.Now()
	m.Bus.Publish(ctx, topic, msg, func(err error) {
		m.x.publish.Record(context.Background(), time.Since(start).Seconds(), m.x.publishAttrs(err))
		done(err)
	})
}

func publishResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, bus.ErrFull):
		return "full"
	case errors.Is(err, bus.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, bus.ErrClosed):
		return "closed"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	default:
		return "error"
	}
}

func (x *Metrics) publishAttrs(err error) metric.RecordOption {
	if err == nil {
		return x.publishOK
	}
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("result", publishResult(err))))
}
