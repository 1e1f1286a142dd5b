package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsar/backoff"
	plog "github.com/apache/pulsar-client-go/pulsar/log"
)

// PulsarConfig configures NewPulsar. Only URL is required.
type PulsarConfig struct {
	// URL is the broker service URL, e.g. "pulsar://127.0.0.1:6650". Required.
	URL string
	// BatchingDelay is the producers' BatchingMaxPublishDelay: how long a message may wait for
	// others of its key to share a batch. Zero means 1ms; negative disables batching.
	//
	// Measured with cmd/buslat (publish→consume through a Key_Shared subscription, 64 keys,
	// 200 B) against Pulsar 4.0.8 standalone on the 2-core dev box shared with other work
	// (load average ~9, so p99 is noise; the range of p50 over 3 sweeps):
	//
	//	rate     batching  publish→consume p50  publish→broker-ack p50
	//	200/s    off       8.0–11.4 ms          2.1–2.7 ms
	//	200/s    1ms       9.5–11.2 ms          3.0–3.4 ms
	//	200/s    10ms      12.3–16.0 ms         7.8–10.0 ms
	//	500/s    off       9.5–9.9 ms           2.0–2.1 ms
	//	500/s    1ms       9.9–12.2 ms          3.0–4.0 ms
	//	500/s    10ms      13.6–15.7 ms         8.3–9.5 ms
	//
	// The client default of 10ms costs ~5–6ms per hop at chat rates (a batch waits for its
	// flush tick), and a chat round trip crosses the bus twice. 1ms stays within ~1ms of
	// batching off while still coalescing a key's bursts (a hot room's danmaku on an edge's
	// topic) into one broker entry. With many keys at high rates key-based batching rarely
	// fills a batch (4000/s over 64 keys: off beat 1ms on p50); set a negative delay there.
	// Saturated (BenchmarkPulsarPublish, 1000 in flight over 64 keys, same box) 1ms was also
	// the slowest: 180–220µs/op against 70–300µs off and 75–155µs at 10ms, with ~6KB/op of
	// per-batch allocations against ~3.5KB; a bulk producer wants 10ms.
	// Most of the ~7ms between broker ack and delivery is likely the broker's
	// managedLedgerNewEntriesCheckDelayInMillis (10 in the standalone.conf in use; 0 is the
	// low-latency setting, apache/pulsar#10660), not the client.
	BatchingDelay time.Duration
	// MaxPendingMessages bounds each producer's queue of messages sent and not yet confirmed by
	// the broker; a Publish beyond it fails with ErrFull instead of blocking. Zero means 4096.
	MaxPendingMessages int
	// SendTimeout is how long a message may wait for the broker's confirmation before it fails
	// with ErrTimeout (outcome unknown: the broker may still store it). The client applies it
	// only to messages its connection loop has taken: while a producer reconnects to a broker
	// that is down or restarting, newer messages wait in its queue (at most
	// MaxPendingMessages) until it is back, however long that takes; see HeldTimeout.
	// Zero means 5s.
	SendTimeout time.Duration
	// HeldTimeout, when positive, bounds every publish's wait for the broker's answer,
	// reconnects included: past it, done gets ErrTimeout (outcome unknown: the message stays
	// queued and may still be stored; a later answer is dropped). For an edge, whose clients
	// should hear within seconds that a frame's fate is unknown. Zero leaves held messages
	// waiting for the broker, which keeps a consumer's frames in order: logic must not
	// answer a frame (and let the key's next frame overtake it) while its deliveries may still
	// be stored. A positive value below SendTimeout is raised to SendTimeout+1s. It costs a
	// copy of every payload (done may run while the producer still holds the message).
	HeldTimeout time.Duration
	// OperationTimeout bounds producer/consumer creation and lookups. Zero means 5s.
	OperationTimeout time.Duration
	// ConnectionTimeout bounds establishing a TCP connection to a broker. Zero means 3s.
	ConnectionTimeout time.Duration
	// MaxReconnectDelay caps the delay between a producer's or consumer's attempts to reconnect
	// to the broker (doubling from 100ms, +20% jitter). Zero means 2s. The client's own cap is
	// 60s: after a broker restart of a minute its producers and consumers waited up to another
	// minute once the broker was back (edge/cmd/faults TestPulsarRestart: chat flowed again
	// 48–54s after the broker was ready).
	MaxReconnectDelay time.Duration
	// ReceiverQueue is how many messages a consumer prefetches. Zero means 1000.
	ReceiverQueue int
	// CloseTimeout bounds how long Close waits for pending publishes to be confirmed.
	// Zero means 10s.
	CloseTimeout time.Duration
	// Logger receives the Pulsar client's log at Warn level and above, a message at most once
	// a second (the repeats counted in suppressed=N on its next line). Nil means silent.
	Logger *slog.Logger
}

// Pulsar is the Bus on Apache Pulsar. Producers are created per topic on first use (in the
// background: Publish never blocks on the network) and cached until Close; they use key-based
// batching so that a batch holds one key's messages and Key_Shared consumers get whole batches
// for their keys. Consumers acknowledge a message only after the Handler returned nil.
type Pulsar struct {
	cfg    PulsarConfig
	client pulsar.Client
	notes  *notifier

	closeMu  sync.RWMutex // held for reading by Publish and Subscribe, for writing to set closed
	closed   atomic.Bool  // set under closeMu.Lock
	creators sync.WaitGroup

	mu        sync.Mutex
	producers map[string]*pulsarTopic      // guarded by mu
	subs      map[*pulsarConsumer]struct{} // guarded by mu
}

var _ Bus = (*Pulsar)(nil)

// pulsarTopic is a topic's producer, or the messages waiting for it to be created.
type pulsarTopic struct {
	mu      sync.RWMutex
	p       pulsar.Producer // nil while being created; guarded by mu
	pending []pubReq        // published while p is being created; guarded by mu
	err     error           // the creation failed (t is no longer cached); guarded by mu
}

// NewPulsar connects a client (lazily: connections are made by the first producer or
// consumer) and returns the bus.
func NewPulsar(cfg PulsarConfig) (*Pulsar, error) {
	if cfg.URL == "" {
		return nil, errors.New("bus: pulsar: empty URL")
	}
	if cfg.MaxPendingMessages < 0 || cfg.ReceiverQueue < 0 {
		return nil, errors.New("bus: pulsar: negative MaxPendingMessages or ReceiverQueue")
	}
	if cfg.BatchingDelay == 0 {
		cfg.BatchingDelay = time.Millisecond
	}
	if cfg.MaxPendingMessages == 0 {
		cfg.MaxPendingMessages = 4096
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 5 * time.Second
	}
	if cfg.HeldTimeout > 0 && cfg.HeldTimeout < cfg.SendTimeout {
		cfg.HeldTimeout = cfg.SendTimeout + time.Second
	}
	if cfg.OperationTimeout <= 0 {
		cfg.OperationTimeout = 5 * time.Second
	}
	if cfg.ConnectionTimeout <= 0 {
		cfg.ConnectionTimeout = 3 * time.Second
	}
	if cfg.MaxReconnectDelay <= 0 {
		cfg.MaxReconnectDelay = 2 * time.Second
	}
	if cfg.ReceiverQueue == 0 {
		cfg.ReceiverQueue = 1000
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 10 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lg = slog.New(newQuietLog(lg.Handler(), slog.LevelWarn))
	client, err := pulsar.NewClient(pulsar.ClientOptions{
		URL:               cfg.URL,
		OperationTimeout:  cfg.OperationTimeout,
		ConnectionTimeout: cfg.ConnectionTimeout,
		Logger:            plog.NewLoggerWithSlog(lg),
	})
	if err != nil {
		return nil, fmt.Errorf("bus: pulsar: %w", err)
	}
	return &Pulsar{cfg: cfg, client: client, notes: newNotifier(),
		producers: make(map[string]*pulsarTopic), subs: make(map[*pulsarConsumer]struct{})}, nil
}

// reconnectBackoff is the reconnection policy of every producer and consumer: the client's
// (doubling from 100ms, up to 20% jitter) capped at MaxReconnectDelay.
func (b *Pulsar) reconnectBackoff() backoff.Policy {
	return &cappedBackoff{max: b.cfg.MaxReconnectDelay}
}

type cappedBackoff struct{ d, max time.Duration }

func (c *cappedBackoff) Next() time.Duration {
	c.d = min(max(2*c.d, 100*time.Millisecond), c.max)
	return c.d + rand.N(c.d/5+1)
}
func (c *cappedBackoff) IsMaxBackoffReached() bool { return c.d >= c.max }
func (c *cappedBackoff) Reset()                    { c.d = 0 }

// Publish implements Bus. done is called from a Pulsar client goroutine or the bus's notifier
// goroutine, never inside Publish. The trace context of ctx is added to the properties when
// m.Props has no traceparent.
func (b *Pulsar) Publish(ctx context.Context, topic string, m Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if topic == "" {
		b.notes.post(done, errors.New("bus: publish: empty topic"))
		return
	}
	if err := ctx.Err(); err != nil {
		b.notes.post(done, fmt.Errorf("bus: publish: %w", err))
		return
	}
	m.Props = injectTrace(ctx, m.Props)
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed.Load() {
		b.notes.post(done, ErrClosed)
		return
	}
	t := b.topic(topic)
	t.mu.RLock()
	if p := t.p; p != nil {
		b.send(ctx, topic, t, p, m, done)
		t.mu.RUnlock()
		return
	}
	t.mu.RUnlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.p; p != nil {
		b.send(ctx, topic, t, p, m, done)
		return
	}
	if t.err != nil { // the creation failed between b.topic and here; the next Publish retries
		b.notes.post(done, t.err)
		return
	}
	if len(t.pending) >= b.cfg.MaxPendingMessages {
		b.notes.post(done, ErrFull)
		return
	}
	t.pending = append(t.pending, pubReq{ctx, topic, m, done})
}

// topic returns topic's entry, starting its producer's creation on first use. Called with
// closeMu read-locked (so Close waits for the creator).
func (b *Pulsar) topic(name string) *pulsarTopic {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.producers[name]
	if t == nil {
		t = &pulsarTopic{}
		b.producers[name] = t
		b.creators.Add(1)
		go b.create(name, t)
	}
	return t
}

// create makes topic's producer and sends what was published meanwhile; on failure it fails
// those messages with ErrUnavailable and forgets the entry, so the next Publish tries again.
func (b *Pulsar) create(name string, t *pulsarTopic) {
	defer b.creators.Done()
	opts := pulsar.ProducerOptions{
		Topic:                   name,
		SendTimeout:             b.cfg.SendTimeout,
		MaxPendingMessages:      b.cfg.MaxPendingMessages,
		DisableBlockIfQueueFull: true,
		BackOffPolicyFunc:       b.reconnectBackoff,
	}
	if b.cfg.BatchingDelay < 0 {
		opts.DisableBatching = true
	} else {
		opts.BatchingMaxPublishDelay = b.cfg.BatchingDelay
		opts.BatcherBuilderType = pulsar.KeyBasedBatchBuilder
	}
	p, err := b.client.CreateProducer(opts)
	t.mu.Lock()
	defer t.mu.Unlock()
	pending := t.pending
	t.pending = nil
	if err != nil {
		b.forget(name, t)
		err = fmt.Errorf("%w: create producer for %s: %w", ErrUnavailable, name, err)
		t.err = err
		for _, r := range pending {
			b.notes.post(r.done, err)
		}
		return
	}
	t.p = p
	for _, r := range pending {
		b.send(r.ctx, name, t, p, r.m, r.done)
	}
}

// forget drops t from the producer cache, so that the next Publish to name creates a new
// producer. Lock order: t.mu (if held) before b.mu.
func (b *Pulsar) forget(name string, t *pulsarTopic) {
	b.mu.Lock()
	if b.producers[name] == t {
		delete(b.producers, name)
	}
	b.mu.Unlock()
}

// pubWait is one message handed to a producer: done runs exactly once, with the broker's
// answer, or with ErrTimeout once HeldTimeout passed without one (a later answer is then
// dropped: the message may still be stored, which is what ErrTimeout says).
type pubWait struct {
	b        *Pulsar
	name     string
	t        *pulsarTopic
	ctx      context.Context
	done     func(error)
	answered atomic.Bool
	returned atomic.Bool // SendAsync returned: done may be called on the client's goroutine
	timer    *time.Timer // nil without HeldTimeout
}

// expire is the timer's function: the broker did not answer in time.
func (w *pubWait) expire() {
	if w.answered.CompareAndSwap(false, true) {
		w.b.notes.post(w.done, fmt.Errorf("%w: no confirmation from the broker within %v (held while the producer reconnects)",
			ErrTimeout, w.b.cfg.HeldTimeout))
	}
}

// answer is the producer's callback.
func (w *pubWait) answer(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
	if !w.answered.CompareAndSwap(false, true) {
		return // already failed by expire
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	b := w.b
	if err != nil {
		if errors.Is(err, pulsar.ErrProducerClosed) && !b.closed.Load() {
			b.forget(w.name, w.t) // closed by the broker side (topic deleted, fenced): recreate on next use
		}
		err = b.mapErr(w.ctx, err)
	}
	if !w.returned.Load() {
		b.notes.post(w.done, err)
		return
	}
	w.done(err)
}

// send hands m to t's producer p. The callback may run inside SendAsync (refusals); such calls
// are redirected to the notifier so that done never runs on the publisher's goroutine. Either
// way done runs once (within HeldTimeout if set).
func (b *Pulsar) send(ctx context.Context, name string, t *pulsarTopic, p pulsar.Producer, m Message, done func(error)) {
	w := &pubWait{b: b, name: name, t: t, ctx: ctx, done: done}
	if b.cfg.HeldTimeout > 0 {
		// done may run while the producer still holds the message, and the caller may then
		// reuse its buffers: the producer gets copies.
		m.Payload = bytes.Clone(m.Payload)
		m.Props = maps.Clone(m.Props)
		w.timer = time.AfterFunc(b.cfg.HeldTimeout, w.expire)
	}
	p.SendAsync(ctx, &pulsar.ProducerMessage{Payload: m.Payload, Key: m.Key, Properties: m.Props}, w.answer)
	w.returned.Store(true)
}

func (b *Pulsar) mapErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, pulsar.ErrSendQueueIsFull), errors.Is(err, pulsar.ErrMemoryBufferIsFull):
		return fmt.Errorf("%w: %w", ErrFull, err)
	case ctx.Err() != nil:
		return fmt.Errorf("bus: publish: %w", ctx.Err())
	case errors.Is(err, pulsar.ErrMessageTooLarge), errors.Is(err, pulsar.ErrInvalidMessage):
		return fmt.Errorf("bus: publish: %w", err)
	case errors.Is(err, pulsar.ErrSendTimeout):
		// The bytes may already be in the broker's socket: it can still store the message.
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, pulsar.ErrProducerClosed):
		if b.closed.Load() { // not closeMu: this may run inside Publish, which holds it
			return ErrClosed
		}
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Subscribe implements Bus. It blocks until the broker created the consumer (bounded by
// OperationTimeout). Handlers run on one goroutine per Subscription, in delivery order, or with
// SubOptions.Concurrency on that many, a key's messages on one of them in delivery order.
func (b *Pulsar) Subscribe(ctx context.Context, topic, sub string, opts SubOptions, h Handler) (Subscription, error) {
	if topic == "" || sub == "" || h == nil {
		return nil, errors.New("bus: subscribe: empty topic, subscription or nil handler")
	}
	var typ pulsar.SubscriptionType
	switch opts.Mode {
	case Exclusive:
		typ = pulsar.Exclusive
	case KeyShared:
		typ = pulsar.KeyShared
	case Failover:
		typ = pulsar.Failover
	default:
		return nil, fmt.Errorf("bus: subscribe %s: unknown mode %d", topic, opts.Mode)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", topic, err)
	}
	nack := opts.NackDelay
	if nack <= 0 {
		nack = time.Second
	}
	co := pulsar.ConsumerOptions{
		Topic:                       topic,
		SubscriptionName:            sub,
		Type:                        typ,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
		NackRedeliveryDelay:         nack,
		ReceiverQueueSize:           b.cfg.ReceiverQueue,
		BackOffPolicyFunc:           b.reconnectBackoff,
	}
	if opts.FromLatest {
		co.SubscriptionInitialPosition = pulsar.SubscriptionPositionLatest
	}
	if opts.Ephemeral {
		co.SubscriptionMode = pulsar.NonDurable
	}
	// Hold closeMu for reading while subscribing, so Close cannot miss this consumer.
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	pc, err := b.client.Subscribe(co)
	if err != nil {
		if strings.Contains(err.Error(), "ConsumerBusy") { // the client has no typed error for it
			return nil, fmt.Errorf("bus: subscribe %s/%s: %w: %w", topic, sub, ErrBusy, err)
		}
		return nil, fmt.Errorf("%w: subscribe %s/%s: %w", ErrUnavailable, topic, sub, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &pulsarConsumer{b: b, c: pc, topic: topic, h: h, ctx: cctx, cancel: cancel, exited: make(chan struct{}),
		concurrency: opts.Concurrency}
	b.mu.Lock()
	b.subs[c] = struct{}{}
	c.stopAfter = context.AfterFunc(ctx, c.close)
	b.mu.Unlock()
	go c.run()
	return c, nil
}

// Close flushes every producer (waiting at most CloseTimeout for the broker's confirmations;
// messages still unconfirmed then fail with ErrUnavailable), closes the consumers (waiting for
// running handlers) and the client. Later calls return nil.
func (b *Pulsar) Close() error {
	b.closeMu.Lock()
	if b.closed.Load() {
		b.closeMu.Unlock()
		return nil
	}
	b.closed.Store(true)
	b.closeMu.Unlock()
	b.creators.Wait() // every producer being created is created (or failed) and sent its pending messages

	b.mu.Lock()
	producers := b.producers
	b.producers = make(map[string]*pulsarTopic)
	subs := make([]*pulsarConsumer, 0, len(b.subs))
	for c := range b.subs {
		subs = append(subs, c)
	}
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.CloseTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range producers {
		t.mu.RLock()
		p := t.p
		t.mu.RUnlock()
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.FlushWithCtx(ctx) // an error leaves messages pending: Close fails them
			p.Close()
		}()
	}
	wg.Wait()
	for _, c := range subs {
		c.close()
	}
	b.client.Close()
	b.notes.wait()
	return nil
}

type pulsarConsumer struct {
	b      *Pulsar
	c      pulsar.Consumer
	topic  string
	h      Handler
	ctx    context.Context
	cancel context.CancelFunc
	exited chan struct{}

	concurrency int // SubOptions.Concurrency

	stopAfter func() bool // stops the AfterFunc watching the Subscribe ctx; guarded by b.mu
	closeOnce sync.Once
}

func (c *pulsarConsumer) run() {
	defer close(c.exited)
	var pool *keyedPool
	if c.concurrency > 1 {
		pool = newKeyedPool(c.concurrency, poolDepth(c.b.cfg.ReceiverQueue, c.concurrency))
		defer pool.stop() // workers skip what is still queued: it stays unacked, the broker redelivers it
	}
	for {
		msg, err := c.c.Receive(c.ctx)
		if err != nil {
			return // ctx ended, or the consumer was closed under us
		}
		if pool == nil {
			if !c.handle(msg) {
				return
			}
			continue
		}
		if !pool.submit(c.ctx, msg.Key(), func() { c.handle(msg) }) {
			return
		}
	}
}

// handle runs the handler on msg and acks or nacks it. It returns false when the consumer is
// closing (msg is then left unacknowledged: the broker redelivers it at once).
func (c *pulsarConsumer) handle(msg pulsar.Message) bool {
	if c.ctx.Err() != nil {
		return false
	}
	d := &Delivery{
		Message:      Message{Key: msg.Key(), Payload: msg.Payload(), Props: msg.Properties()},
		Topic:        c.topic,
		ID:           msgID(msg.ID()),
		Redeliveries: int(msg.RedeliveryCount()),
		PublishTime:  msg.PublishTime(),
	}
	herr := c.h(extractTrace(c.ctx, d.Props), d)
	switch {
	case herr == nil:
		_ = c.c.Ack(msg) // fails only if the consumer is closed: the broker redelivers
	case c.ctx.Err() != nil:
		return false // closing: leave it unacknowledged, the broker redelivers it at once
	default:
		c.c.Nack(msg)
	}
	return true
}

// close stops the handler goroutine, then closes the consumer: the broker redelivers its
// unacknowledged messages to the subscription's other consumers.
func (c *pulsarConsumer) close() {
	c.closeOnce.Do(func() {
		c.b.mu.Lock()
		stop := c.stopAfter
		c.b.mu.Unlock()
		stop()
		c.cancel()
		<-c.exited
		c.c.Close()
		c.b.mu.Lock()
		delete(c.b.subs, c)
		c.b.mu.Unlock()
	})
}

// Close implements Subscription.
func (c *pulsarConsumer) Close() error {
	c.close()
	return nil
}

// msgID formats id as ledger:entry:partition:batch-index (MessageID.String omits the batch index,
// so messages of one batch would share it).
// One allocation (the string) per consumed message, instead of one per number and concatenation.
func msgID(id pulsar.MessageID) string {
	var buf [80]byte
	b := strconv.AppendInt(buf[:0], id.LedgerID(), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, id.EntryID(), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(id.PartitionIdx()), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(id.BatchIdx()), 10)
	return string(b)
}
