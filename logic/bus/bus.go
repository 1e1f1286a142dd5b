// Package bus is the message bus between edges and logic: one small interface with two
// implementations that pass the same contract tests (bustest): Pulsar (pulsar-client-go) for the
// cluster and Memory for the embedded single-process mode, with the same ordering semantics.
//
// Ordering: messages with the same Key published to one topic are delivered in publish order to
// one consumer at a time (Key_Shared spreads keys across a subscription's consumers; Exclusive
// and Failover give all keys to one consumer).
//
// Delivery: a Handler's nil return acknowledges the message; an error negatively acknowledges
// it, and it is redelivered (to any consumer of the subscription) after the NackDelay. A
// consumer that goes away with unacknowledged messages has them redelivered to another
// consumer of the subscription, ahead of its key's later messages. A nack does break its key's
// order: later messages of the key may be handled while the nacked one waits for its
// NackDelay (as in Pulsar), so a handler that needs strict per-key order retries in place
// rather than returning an error for a transient failure.
//
// Delivery is at least once: an acknowledged message is not redelivered, but a consumer that
// dies before its acknowledgement reached the broker (Pulsar groups acks for up to 100ms, and
// acknowledges a batch once all of its messages are) gets its messages handled again elsewhere.
//
// # Topics: persistent or not, and why
//
// The names come from protocol/topics.go; the choice is made there and explained here.
//
//   - Upstream (persistent://…/sb-upstream, key = user id, Key_Shared subscription "logic"):
//     persistent. A client frame the bus accepted is acknowledged to the client (when it asked)
//     and must survive a logic replica's death: the broker keeps it until a replica's handler
//     returned nil, redelivers a dead replica's unacknowledged frames to another one, and keeps
//     each user's frames in order across the hand-over. Only a persistent topic with a durable
//     subscription gives that.
//   - Per edge (persistent://…/sb-edge-<id>, consumed by that edge alone): persistent, so that
//     a delivery logic published survives a broker-side hiccup or a brief reconnect of the
//     edge's consumer (chat is at-least-once; the edge acknowledges only after its local
//     fanout). The edge should subscribe Exclusive, FromLatest and Ephemeral (non-durable): deliveries
//     queued for a previous life of the edge are for connections that no longer exist there —
//     their clients reconnected elsewhere and recover chat with sync — so nothing accumulates
//     for a dead edge's topic.
//   - Broadcast (non-persistent://…/sb-broadcast, every edge its own Ephemeral subscription):
//     non-persistent. "Everyone" messages (announcements, online counts) are worth something
//     only live and go to every edge: no bookie write on the hot path, nothing stored for edges
//     that are down, and a slow edge drops rather than backs up the broker.
//
// Memory follows the same split: topics named "non-persistent://…" retain nothing for later
// subscriptions.
//
// # Latency
//
// Producers batch by key (pulsar.KeyBasedBatchBuilder: a batch holds one key's messages, so a
// Key_Shared consumer receives whole batches of its own keys) with PulsarConfig.BatchingDelay,
// 1ms by default instead of the client's 10ms: a batch waits for its flush tick, on average
// half the delay, so 10ms costs ~5ms per hop and a chat round trip crosses the bus twice.
// cmd/buslat measures it; its figures are in PulsarConfig.BatchingDelay's comment.
package bus

import (
	"context"
	"errors"
	"time"
)

// Errors.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("bus: closed")
	// ErrFull is returned when the bounded publish queue is full: the message was NOT accepted.
	ErrFull = errors.New("bus: publish queue full")
	// ErrUnavailable wraps failures to reach the broker: the message was NOT accepted.
	ErrUnavailable = errors.New("bus: unavailable")
	// ErrBusy is returned by Subscribe when an Exclusive subscription already has its consumer
	// (e.g. a previous life of the same edge that the broker has not yet seen go).
	ErrBusy = errors.New("bus: exclusive subscription has a consumer")
	// ErrTimeout is returned when the broker did not confirm a message in time: the outcome
	// is UNKNOWN (the broker may still store it, e.g. after a stall). Resending with the same
	// id is the caller's way out; consumers must tolerate duplicates (at-least-once). It has a
	// Timeout() bool method, so callers that do not import bus can recognise it.
	ErrTimeout error = timeoutError{}
)

type timeoutError struct{}

func (timeoutError) Error() string { return "bus: publish timed out, outcome unknown" }
func (timeoutError) Timeout() bool { return true }

// Message is what a producer publishes.
type Message struct {
	Key     string            // ordering key (the user id upstream); may be empty
	Payload []byte            // a protocol envelope. Publish: not modified by the caller until done runs. Delivery: the handler's to keep.
	Props   map[string]string // properties (trace context: protocol.PropTraceparent); Publish never modifies the caller's map
}

// Delivery is a consumed message.
type Delivery struct {
	Message
	Topic        string
	ID           string    // broker message id, for logs
	Redeliveries int       // how many times it was delivered before: nacks at least (Pulsar does not count deliveries to a consumer that closed)
	PublishTime  time.Time // when the broker accepted it
}

// SubMode is a subscription's sharing mode.
type SubMode uint8

const (
	// Exclusive: one consumer (an edge on its own topic).
	Exclusive SubMode = iota
	// KeyShared: many consumers, each key to one consumer at a time (logic replicas).
	KeyShared
	// Failover: one active consumer, others standby.
	Failover
)

// Handler handles one delivery. It is called from the subscription's goroutine(s) (several with
// SubOptions.Concurrency): for one key, never concurrently and in order. nil acknowledges; an
// error nacks (redelivery).
type Handler func(ctx context.Context, d *Delivery) error

// SubOptions configures Subscribe.
type SubOptions struct {
	Mode SubMode
	// FromLatest starts a new subscription at the latest message instead of the earliest
	// (edges: deliveries queued for a previous life of the edge are of no use).
	FromLatest bool
	// NackDelay is how long before a nacked message is redelivered. Zero means 1s.
	NackDelay time.Duration
	// Ephemeral makes the subscription live only while it has consumers (Pulsar's
	// non-durable subscription): nothing accumulates for it while nobody consumes, and a new
	// life starts at FromLatest's position. Zero (false) means durable: the subscription's
	// cursor survives its consumers, and a later Subscribe resumes where it stopped.
	Ephemeral bool
	// Concurrency is how many handlers this consumer may run at once, for different keys: a
	// key's messages still go to one handler at a time, in order (a key is pinned to one of
	// Concurrency goroutines, so keys sharing a goroutine wait for each other). A handler that
	// waits on the network (a store, the broker's confirmation of its own publishes) then no
	// longer holds up every other key of the consumer. Zero or one: one handler at a time, on
	// the consumer's goroutine.
	Concurrency int
}

// Subscription is one live consumer of a subscription; Close stops it (its unacked messages
// are redelivered to other consumers). Close waits for a running handler to return, so it must
// not be called from the handler itself.
type Subscription interface {
	Close() error
}

// Bus publishes and subscribes. Safe for concurrent use.
type Bus interface {
	// Publish sends m to topic asynchronously. done (never nil) is called exactly once, from a
	// bus goroutine, when the broker accepted the message (nil) or when it failed (ErrFull,
	// ErrUnavailable wrapping the cause, ErrClosed, ctx's error). Publish never blocks on the
	// network; it copies nothing the caller may not reuse after done is called — the caller
	// must not modify m.Payload until done runs. done is never called on the caller's
	// goroutine inside Publish (a caller may hold a lock that done takes); it must not block.
	Publish(ctx context.Context, topic string, m Message, done func(error))
	// Subscribe starts consuming topic under subscription name sub. Handlers run until the
	// Subscription is closed or ctx ends.
	Subscribe(ctx context.Context, topic, sub string, opts SubOptions, h Handler) (Subscription, error)
	// Close flushes pending publishes (within ctx-less bounded time) and closes everything.
	Close() error
}
