package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MemoryConfig configures NewMemory. The zero value is ready to use.
type MemoryConfig struct {
	// QueueSize bounds the publish queue: messages accepted by Publish and not yet appended to
	// their topic. A Publish that finds it full fails with ErrFull. Zero means 4096.
	QueueSize int
	// MaxBacklog bounds each subscription's backlog (messages not yet acknowledged, including
	// those waiting for a nack redelivery). A message published to a topic with a subscription
	// at the bound fails with ErrFull. Zero means 100000.
	MaxBacklog int
	// Retain is how many of a persistent topic's latest messages are kept for subscriptions
	// created later from the earliest position (Pulsar keeps them in its ledger until they are
	// trimmed). Non-persistent topics retain nothing. Zero means 1024; negative keeps none.
	Retain int
	// ReceiverQueue is how many messages one consumer may hold unacknowledged (being handled
	// or waiting for its handler) before the subscription gives it no more. Zero means 1000,
	// Pulsar's default receiver queue.
	ReceiverQueue int
}

// Memory is the in-process Bus for the embedded single-process mode, with Pulsar's semantics:
// per-key order, Key_Shared / Exclusive / Failover subscriptions, ack / nack with redelivery
// after the NackDelay, redelivery of a closed consumer's unacknowledged messages, durable
// subscriptions (a subscription keeps collecting messages while it has no consumer, unless it
// is Ephemeral) and a bounded publish queue.
//
// Publish copies the message, so the caller may reuse m.Payload as soon as Publish returns.
// Each Delivery has its own copy of the payload and properties.
type Memory struct {
	cfg   MemoryConfig
	notes *notifier

	closeMu sync.RWMutex
	closed  bool        // guarded by closeMu
	pubq    chan pubReq // sent to under closeMu.RLock, closed under closeMu.Lock
	flushed chan struct{}

	mu     sync.Mutex
	topics map[string]*memTopic // guarded by mu
}

var _ Bus = (*Memory)(nil)

type pubReq struct {
	ctx   context.Context
	topic string
	m     Message
	done  func(error)
}

// NewMemory returns a running in-memory bus. Close stops it.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	if cfg.QueueSize < 0 || cfg.MaxBacklog < 0 || cfg.ReceiverQueue < 0 {
		return nil, errors.New("bus: memory: negative QueueSize, MaxBacklog or ReceiverQueue")
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 4096
	}
	if cfg.MaxBacklog == 0 {
		cfg.MaxBacklog = 100000
	}
	if cfg.Retain == 0 {
		cfg.Retain = 1024
	} else if cfg.Retain < 0 {
		cfg.Retain = 0
	}
	if cfg.ReceiverQueue == 0 {
		cfg.ReceiverQueue = 1000
	}
	b := &Memory{
		cfg:     cfg,
		notes:   newNotifier(),
		pubq:    make(chan pubReq, cfg.QueueSize),
		flushed: make(chan struct{}),
		topics:  make(map[string]*memTopic),
	}
	go b.appendLoop()
	return b, nil
}

// Publish implements Bus. done is called from the bus's append goroutine (accepted, or the
// ctx ended while queued) or its notifier goroutine (refused: ErrFull, ErrClosed); it must
// not block.
func (b *Memory) Publish(ctx context.Context, topic string, m Message, done func(error)) {
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
	m = copyMessage(m)
	m.Props = injectTrace(ctx, m.Props)
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		b.notes.post(done, ErrClosed)
		return
	}
	select {
	case b.pubq <- pubReq{ctx, topic, m, done}:
		b.closeMu.RUnlock()
	default:
		b.closeMu.RUnlock()
		b.notes.post(done, ErrFull)
	}
}

// PublishNow appends m to topic on the caller's goroutine and returns the outcome Publish's
// done would get (nil: accepted), saving the hops to the bus's goroutine and back. It takes m:
// the caller must not modify m.Payload or m.Props afterwards (Publish copies them). It never
// waits for anything but the topic's locks. A message published with PublishNow may overtake
// one the same caller queued with Publish just before: a caller that needs the order of its
// messages to one topic uses one of the two.
func (b *Memory) PublishNow(ctx context.Context, topic string, m Message) error {
	if topic == "" {
		return errors.New("bus: publish: empty topic")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bus: publish: %w", err)
	}
	m.Props = injectTrace(ctx, m.Props)
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	return b.topic(topic).append(m)
}

func copyMessage(m Message) Message {
	if m.Payload != nil {
		m.Payload = slices.Clone(m.Payload)
	}
	if m.Props != nil {
		p := make(map[string]string, len(m.Props))
		for k, v := range m.Props {
			p[k] = v
		}
		m.Props = p
	}
	return m
}

// appendLoop owns the publish queue: it appends each message to its topic, in publish
// order, and reports the outcome. It exits when Close closes the queue, once it is drained.
func (b *Memory) appendLoop() {
	defer close(b.flushed)
	for r := range b.pubq {
		if err := r.ctx.Err(); err != nil {
			r.done(fmt.Errorf("bus: publish: %w", err))
			continue
		}
		r.done(b.topic(r.topic).append(r.m))
	}
}

func (b *Memory) topic(name string) *memTopic {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[name]
	if t == nil {
		retain := b.cfg.Retain
		if strings.HasPrefix(name, "non-persistent://") {
			retain = 0
		}
		t = &memTopic{b: b, name: name, retain: retain, subs: make(map[string]*memSub)}
		b.topics[name] = t
	}
	return t
}

// Subscribe implements Bus. Calling it several times with the same sub adds consumers to one
// subscription (KeyShared spreads keys across them; Failover keeps the others standby;
// Exclusive refuses a second consumer). The handler runs on the consumer's own goroutine, or
// with SubOptions.Concurrency on that many, a key's entries on one of them in order.
func (b *Memory) Subscribe(ctx context.Context, topic, sub string, opts SubOptions, h Handler) (Subscription, error) {
	if topic == "" || sub == "" || h == nil {
		return nil, errors.New("bus: subscribe: empty topic, subscription or nil handler")
	}
	if opts.Mode > Failover {
		return nil, fmt.Errorf("bus: subscribe %s: unknown mode %d", topic, opts.Mode)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", topic, err)
	}
	nack := opts.NackDelay
	if nack <= 0 {
		nack = time.Second
	}
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	t := b.topic(topic)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.subs[sub]
	if s == nil {
		s = &memSub{t: t, name: sub, mode: opts.Mode, ephemeral: opts.Ephemeral, nackDelay: nack,
			owners: make(map[string]keyOwner), timers: make(map[*time.Timer]struct{})}
		if !opts.FromLatest {
			for _, m := range t.retainedView() {
				s.unassigned = append(s.unassigned, &entry{msg: m})
			}
			s.held = len(s.unassigned)
		}
		t.subs[sub] = s
	} else if s.mode != opts.Mode {
		return nil, fmt.Errorf("bus: subscribe %s/%s: subscription exists with another mode", topic, sub)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == Exclusive && len(s.consumers) > 0 {
		return nil, fmt.Errorf("bus: subscribe %s/%s: %w", topic, sub, ErrBusy)
	}
	if s.nackDelay != nack {
		s.nackDelay = nack // the latest consumer's setting wins, as the options of one sub should agree
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &memConsumer{s: s, h: h, ctx: cctx, cancel: cancel, unacked: make(map[*entry]struct{}),
		wake: make(chan struct{}, 1), exited: make(chan struct{}), concurrency: opts.Concurrency}
	if c.concurrency > 1 {
		c.workers = make([]*memWorker, c.concurrency)
		for i := range c.workers {
			c.workers[i] = &memWorker{c: c, wake: make(chan struct{}, 1)}
		}
	}
	s.consumers = append(s.consumers, c)
	go c.run()
	if len(s.consumers) == 1 {
		es := s.unassigned
		s.unassigned = nil
		for _, e := range es {
			s.assign(e)
		}
	}
	c.stopAfter = context.AfterFunc(ctx, c.close)
	return (*memSubscription)(c), nil
}

// Close flushes the publish queue (every accepted message reaches its topic and its done is
// called), stops every consumer (waiting for running handlers to return) and drops the
// topics. Later calls return nil.
func (b *Memory) Close() error {
	b.closeMu.Lock()
	if b.closed {
		b.closeMu.Unlock()
		return nil
	}
	b.closed = true
	close(b.pubq)
	b.closeMu.Unlock()
	<-b.flushed

	b.mu.Lock()
	topics := b.topics
	b.topics = make(map[string]*memTopic)
	b.mu.Unlock()
	var cs []*memConsumer
	for _, t := range topics {
		t.mu.Lock()
		for _, s := range t.subs {
			s.mu.Lock()
			s.closed = true
			for tm := range s.timers {
				tm.Stop()
			}
			clear(s.timers)
			cs = append(cs, s.consumers...)
			s.mu.Unlock()
		}
		t.mu.Unlock()
	}
	for _, c := range cs {
		c.close()
	}
	b.notes.wait()
	return nil
}

type memTopic struct {
	b      *Memory
	name   string
	retain int

	mu       sync.Mutex // taken before any memSub.mu
	seq      uint64
	retained []*memMsg          // the latest messages, at most retain; guarded by mu
	subs     map[string]*memSub // guarded by mu
}

type memMsg struct {
	seq uint64
	m   Message
	at  time.Time
}

func (t *memTopic) append(m Message) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.subs {
		s.mu.Lock()
		full := s.held >= t.b.cfg.MaxBacklog
		s.mu.Unlock()
		if full {
			return fmt.Errorf("%w: subscription %s of %s has %d unacknowledged messages", ErrFull, s.name, t.name, t.b.cfg.MaxBacklog)
		}
	}
	t.seq++
	// The message and its first subscription's entry share one allocation (one subscription
	// is the common case: an edge's topic, the upstream topic).
	me := &msgEntry{m: memMsg{seq: t.seq, m: m, at: time.Now()}}
	msg := &me.m
	if t.retain > 0 {
		if len(t.retained) >= 2*t.retain {
			n := copy(t.retained, t.retained[len(t.retained)-t.retain+1:])
			clear(t.retained[n:])
			t.retained = t.retained[:n]
		}
		t.retained = append(t.retained, msg)
	}
	first := true
	for _, s := range t.subs {
		e := &me.e
		if !first {
			e = new(entry)
		}
		first = false
		e.msg = msg
		s.mu.Lock()
		s.held++
		s.assign(e)
		s.mu.Unlock()
	}
	return nil
}

type msgEntry struct {
	m memMsg
	e entry
}

// retainedView is t.retained limited to the latest retain messages (the slice may hold up to
// twice as many). Called with t.mu held.
func (t *memTopic) retainedView() []*memMsg {
	if len(t.retained) > t.retain {
		return t.retained[len(t.retained)-t.retain:]
	}
	return t.retained
}

type memSub struct {
	t         *memTopic
	name      string
	mode      SubMode
	ephemeral bool

	mu         sync.Mutex
	nackDelay  time.Duration       // guarded by mu
	unassigned []*entry            // waiting for a consumer (there is none), in seq order; guarded by mu
	consumers  []*memConsumer      // in join order; consumers[0] is Failover's active one; guarded by mu
	owners     map[string]keyOwner // KeyShared: the consumer a key's assigned entries went to; guarded by mu
	held       int                 // unacknowledged messages (assigned, dispatched, awaiting nack redelivery)
	timers     map[*time.Timer]struct{}
	closed     bool // the bus closed or the (ephemeral) subscription was removed
}

type entry struct {
	msg          *memMsg
	redeliveries int
}

type keyOwner struct {
	c *memConsumer
	n int // entries of the key assigned to c (pending or dispatched) and not yet acked or nacked
}

// assign gives e to a consumer, keeping per-key order: KeyShared sends it to the consumer that
// already holds entries of its key, else to the key's hash slot; Exclusive and Failover to the
// first consumer. Entries are assigned in seq order per key, and a consumer handles its
// entries in assignment order, so a key's entries are handled in publish order. With no
// consumer, e waits in unassigned. Called with s.mu held.
func (s *memSub) assign(e *entry) {
	if s.closed {
		return
	}
	if len(s.consumers) == 0 {
		s.unassigned = append(s.unassigned, e)
		return
	}
	c := s.consumers[0]
	if s.mode == KeyShared {
		key := e.msg.m.Key
		if o, ok := s.owners[key]; ok {
			c = o.c
			o.n++
			s.owners[key] = o
		} else {
			c = s.consumers[hashKey(key)%uint32(len(s.consumers))]
			s.owners[key] = keyOwner{c: c, n: 1}
		}
	}
	c.pending.push(e)
	s.fill(c)
}

// assignAll assigns es after sorting them by seq. Called with s.mu held.
func (s *memSub) assignAll(es []*entry) {
	slices.SortFunc(es, func(a, b *entry) int {
		switch {
		case a.msg.seq < b.msg.seq:
			return -1
		case a.msg.seq > b.msg.seq:
			return 1
		}
		return 0
	})
	for _, e := range es {
		s.assign(e)
	}
}

// fill moves c's pending entries to its run loop while it holds fewer than ReceiverQueue
// unacknowledged ones. Called with s.mu held.
func (s *memSub) fill(c *memConsumer) {
	limit := s.t.b.cfg.ReceiverQueue
	moved := false
	for c.pending.len() > 0 && len(c.unacked) < limit {
		e := c.pending.pop()
		c.unacked[e] = struct{}{}
		if c.workers != nil {
			// Straight to the key's worker: no hop through the consumer's goroutine.
			w := c.workers[hashKey(e.msg.m.Key)%uint32(len(c.workers))]
			w.queue.push(e)
			w.signal()
			continue
		}
		c.queue.push(e)
		moved = true
	}
	if moved {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// release drops e's hold on its key's owner c. Called with s.mu held.
func (s *memSub) release(c *memConsumer, e *entry) {
	if s.mode != KeyShared {
		return
	}
	if o, ok := s.owners[e.msg.m.Key]; ok && o.c == c {
		if o.n--; o.n <= 0 {
			delete(s.owners, e.msg.m.Key)
		} else {
			s.owners[e.msg.m.Key] = o
		}
	}
}

// settle acks (err == nil) or nacks e after c's handler returned.
func (s *memSub) settle(c *memConsumer, e *entry, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := c.unacked[e]; !ok {
		return
	}
	delete(c.unacked, e)
	s.release(c, e)
	s.fill(c)
	if err == nil {
		s.held--
		return
	}
	e.redeliveries++
	if s.closed {
		return
	}
	var tm *time.Timer
	tm = time.AfterFunc(s.nackDelay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.timers[tm]; !ok {
			return // stopped by Close
		}
		delete(s.timers, tm)
		s.assign(e)
	})
	s.timers[tm] = struct{}{}
}

// fifo is a queue of entries that reuses its array: popping the front by reslicing would
// shrink the capacity, and every push after a pop would then allocate a new array.
type fifo struct {
	buf  []*entry
	head int // buf[head:] is the queue
}

func (q *fifo) len() int { return len(q.buf) - q.head }

func (q *fifo) push(e *entry) {
	if q.head > 0 && len(q.buf) == cap(q.buf) && q.head >= len(q.buf)/2 {
		n := copy(q.buf, q.buf[q.head:]) // mostly consumed: slide down rather than grow
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, e)
}

// pop removes and returns the first entry, nil if there is none.
func (q *fifo) pop() *entry {
	if q.head == len(q.buf) {
		return nil
	}
	e := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return e
}

// items returns the queued entries (valid until the next push or pop).
func (q *fifo) items() []*entry { return q.buf[q.head:] }

func hashKey(k string) uint32 { // FNV-1a
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return h
}

type memConsumer struct {
	s      *memSub
	h      Handler
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: "queue may be non-empty"
	exited chan struct{} // closed when run returns

	concurrency int // SubOptions.Concurrency

	pending fifo                // assigned, waiting for room under ReceiverQueue; guarded by s.mu
	queue   fifo                // dispatched, not yet handed to h (no workers); guarded by s.mu
	unacked map[*entry]struct{} // dispatched and neither acked nor nacked; guarded by s.mu
	workers []*memWorker        // concurrency > 1: a key's entries go to workers[hash(key) % n]; set before run

	stopAfter func() bool // stops the AfterFunc watching the Subscribe ctx; set before Subscribe returns
	closeOnce sync.Once
}

// memWorker is one of a consumer's Concurrency handler goroutines. fill hands it the entries
// of its keys directly, in assignment order; it handles them one at a time.
type memWorker struct {
	c     *memConsumer
	queue fifo          // dispatched to this worker, not yet handled; guarded by c.s.mu
	wake  chan struct{} // capacity 1: "queue may be non-empty"
}

// signal wakes w if it waits. Called with c.s.mu held.
func (w *memWorker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run handles w's queue until the consumer closes. What is still queued then stays unacked:
// close requeues it.
func (w *memWorker) run() {
	c := w.c
	s := c.s
	for {
		s.mu.Lock()
		e := w.queue.pop()
		s.mu.Unlock()
		if e == nil {
			select {
			case <-w.wake:
				continue
			case <-c.ctx.Done():
				return
			}
		}
		if !c.handle(e) {
			return
		}
	}
}

func (c *memConsumer) run() {
	defer close(c.exited)
	s := c.s
	if c.workers != nil {
		var wg sync.WaitGroup
		for _, w := range c.workers {
			wg.Go(w.run)
		}
		<-c.ctx.Done()
		wg.Wait()
		return
	}
	for {
		s.mu.Lock()
		e := c.queue.pop()
		s.mu.Unlock()
		if e == nil {
			select {
			case <-c.wake:
				continue
			case <-c.ctx.Done():
				return
			}
		}
		if !c.handle(e) {
			return
		}
	}
}

// handle runs the handler on e and settles it. It returns false when c is closing (e then
// stays unacked: close requeues it at once, not after the NackDelay).
func (c *memConsumer) handle(e *entry) bool {
	if c.ctx.Err() != nil {
		return false
	}
	s := c.s
	m := copyMessage(e.msg.m)
	d := &Delivery{Message: m, Topic: s.t.name, ID: strconv.FormatUint(e.msg.seq, 10),
		Redeliveries: e.redeliveries, PublishTime: e.msg.at}
	err := c.h(extractTrace(c.ctx, d.Props), d)
	if err != nil && c.ctx.Err() != nil {
		return false
	}
	s.settle(c, e, err)
	return true
}

// close stops c: cancels its handler's ctx, waits for the handler to return, and hands c's
// unacknowledged entries back to the subscription for the remaining consumers.
func (c *memConsumer) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.exited
		s := c.s
		s.mu.Lock()
		if c.stopAfter != nil { // set under s.mu by Subscribe
			c.stopAfter()
		}
		if i := slices.Index(s.consumers, c); i >= 0 {
			s.consumers = slices.Delete(s.consumers, i, i+1)
		}
		es := make([]*entry, 0, len(c.unacked)+c.pending.len())
		for e := range c.unacked {
			e.redeliveries++
			es = append(es, e)
		}
		es = append(es, c.pending.items()...)
		for _, e := range es {
			s.release(c, e)
		}
		clear(c.unacked)
		c.queue, c.pending = fifo{}, fifo{}
		for _, w := range c.workers {
			w.queue = fifo{}
		}
		s.assignAll(es)
		drop := s.ephemeral && len(s.consumers) == 0 && !s.closed
		s.mu.Unlock()
		if drop {
			s.t.dropIfIdle(s)
		}
	})
}

// dropIfIdle removes an ephemeral subscription that has no consumer left.
func (t *memTopic) dropIfIdle(s *memSub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.consumers) > 0 || t.subs[s.name] != s {
		return
	}
	delete(t.subs, s.name)
	s.closed = true
	for tm := range s.timers {
		tm.Stop()
	}
	clear(s.timers)
}

type memSubscription memConsumer

// Close implements Subscription. It waits for a running handler to return, so it must not be
// called from the subscription's own handler.
func (m *memSubscription) Close() error {
	(*memConsumer)(m).close()
	return nil
}
