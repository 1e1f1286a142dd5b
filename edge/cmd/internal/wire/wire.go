// Package wire connects an edge to the bus, for the binaries in edge/cmd: client frames go up
// to the upstream topic (key = user), and deliveries come down from the edge's own topic and
// the broadcast topic into the edge's local fanout. The same adapters serve the embedded
// all-in-one binary (bus.Memory) and the production edge (Pulsar).
package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
)

// Publisher publishes an edge's upstream envelopes to the upstream topic. It satisfies
// edge.Publisher.
type Publisher struct {
	Bus   bus.Bus
	Topic string // protocol.UpstreamTopic(namespace)
}

// NewPublisher returns a Publisher to the upstream topic of namespace ("" = default).
func NewPublisher(b bus.Bus, namespace string) *Publisher {
	return &Publisher{Bus: b, Topic: protocol.UpstreamTopic(namespace)}
}

// Publish sends payload keyed by the user id; done reports whether the bus accepted it.
func (p *Publisher) Publish(ctx context.Context, key string, payload []byte, props map[string]string, done func(error)) {
	p.Bus.Publish(ctx, p.Topic, bus.Message{Key: key, Payload: payload, Props: props}, done)
}

// Sink takes a downstream envelope; edge.(*Server).HandleDownstream is one.
type Sink func(payload []byte) error

// Downstream is the edge's pair of subscriptions: its own topic and the broadcast topic.
type Downstream struct {
	subs []bus.Subscription
}

// Config configures Subscribe.
type Config struct {
	// Edge is the edge id: its topic is protocol.EdgeTopic(Namespace, Edge). Required.
	Edge string
	// Namespace is the bus namespace. Zero means protocol.DefaultNamespace.
	Namespace string
	// Retryable reports whether a sink error is worth a redelivery (for example the edge is not
	// running yet). Other errors (a malformed envelope) are logged and the message acknowledged:
	// redelivering it would fail the same way forever. Nil means no error is retried.
	Retryable func(error) bool
	// Logger receives sink errors, at most a few per second. Nil means silent.
	Logger *slog.Logger
}

// Subscribe starts consuming the edge's topic (exclusive: only this edge reads it) and the
// broadcast topic, handing every envelope to sink. Both subscriptions start at the latest
// message and are ephemeral: deliveries queued for a previous life of this edge address
// connections that no longer exist.
func Subscribe(ctx context.Context, b bus.Bus, cfg Config, sink Sink) (*Downstream, error) {
	if !protocol.ValidEdgeID(cfg.Edge) {
		return nil, fmt.Errorf("wire: invalid edge id %q", cfg.Edge)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	warn := rate.NewLimiter(rate.Every(time.Second), 3)
	h := func(_ context.Context, d *bus.Delivery) error {
		err := sink(d.Payload)
		if err == nil {
			return nil
		}
		if cfg.Retryable != nil && cfg.Retryable(err) {
			return err
		}
		if warn.Allow() {
			log.Warn("wire: downstream envelope dropped", "topic", d.Topic, "err", err)
		}
		return nil
	}
	ds := &Downstream{}
	for _, t := range []struct{ topic, sub string }{
		{protocol.EdgeTopic(cfg.Namespace, cfg.Edge), "sb-edge-" + cfg.Edge},
		{protocol.BroadcastTopic(cfg.Namespace), "sb-broadcast-" + cfg.Edge},
	} {
		s, err := b.Subscribe(ctx, t.topic, t.sub, bus.SubOptions{Mode: bus.Exclusive, FromLatest: true, Ephemeral: true}, h)
		if err != nil {
			_ = ds.Close()
			return nil, fmt.Errorf("wire: subscribe %s: %w", t.topic, err)
		}
		ds.subs = append(ds.subs, s)
	}
	return ds, nil
}

// Close stops both subscriptions.
func (d *Downstream) Close() error {
	var errs []error
	for _, s := range d.subs {
		errs = append(errs, s.Close())
	}
	d.subs = nil
	return errors.Join(errs...)
}
