// Package bustest is the contract every bus.Bus implementation passes: the in-memory bus in the
// hermetic tests and Pulsar in the integration tests run the same suite, so the embedded mode and
// the cluster have the same delivery and ordering semantics.
//
// Topic names are unique per subtest ("persistent://public/default/bustest-<random>-<n>"), so
// the suite may run against a shared broker concurrently with other runs.
package bustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-io/switchboard/logic/bus"
)

// Options tunes Run. The zero value suits an in-process bus.
type Options struct {
	// Namespace is the Pulsar tenant/namespace of the test topics. Zero means "public/default".
	Namespace string
	// Wait bounds each wait for a delivery or a callback. Zero means 20s.
	Wait time.Duration
}

// Run runs the contract suite. newBus returns a fresh bus for one subtest; the suite closes it.
func Run(t *testing.T, newBus func(t *testing.T) bus.Bus) { RunWith(t, Options{}, newBus) }

// RunWith is Run with options.
func RunWith(t *testing.T, o Options, newBus func(t *testing.T) bus.Bus) {
	if o.Namespace == "" {
		o.Namespace = "public/default"
	}
	if o.Wait == 0 {
		o.Wait = 20 * time.Second
	}
	s := &suite{o: o, newBus: newBus, run: randHex(4)}
	tests := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"PublishSubscribe", s.publishSubscribe},
		{"DoneNotInline", s.doneNotInline},
		{"PublishCancelledContext", s.publishCancelled},
		{"PayloadReusableAfterDone", s.payloadReuse},
		{"TraceContext", s.traceContext},
		{"EarliestSeesEarlierMessages", s.earliest},
		{"FromLatest", s.fromLatest},
		{"DurableResumes", s.durableResumes},
		{"Ephemeral", s.ephemeral},
		{"NonPersistentLive", s.nonPersistent},
		{"KeySharedOrderAndLoad", s.keyShared},
		{"KeySharedJoinKeepsOrder", s.keySharedJoin},
		{"ConcurrencyKeepsKeyOrder", s.concurrency},
		{"NackRedelivers", s.nackRedelivers},
		{"ClosedConsumerRedelivers", s.closedConsumerRedelivers},
		{"KilledMidStreamKeepsKeyOrder", s.killedMidStream},
		{"ExclusiveRefusesSecond", s.exclusive},
		{"Failover", s.failover},
		{"SubscribeContextStops", s.subscribeCtx},
		{"Close", s.close},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.f)
	}
}

type suite struct {
	o      Options
	newBus func(t *testing.T) bus.Bus
	run    string
	n      atomic.Int64
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// topic returns a fresh persistent topic name.
func (s *suite) topic() string {
	return fmt.Sprintf("persistent://%s/bustest-%s-%d", s.o.Namespace, s.run, s.n.Add(1))
}

func (s *suite) bus(t *testing.T) bus.Bus {
	t.Helper()
	b := s.newBus(t)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// publish publishes m and waits for its done callback, failing the test on an error.
func (s *suite) publish(t *testing.T, b bus.Bus, topic string, m bus.Message) {
	t.Helper()
	errc := make(chan error, 1)
	b.Publish(context.Background(), topic, m, func(err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("publish to %s: %v", topic, err)
		}
	case <-time.After(s.o.Wait):
		t.Fatalf("publish to %s: done not called within %v", topic, s.o.Wait)
	}
}

// publishAll publishes ms in order without waiting in between, then waits for every done.
func (s *suite) publishAll(t *testing.T, b bus.Bus, topic string, ms []bus.Message) {
	t.Helper()
	errc := make(chan error, len(ms))
	for _, m := range ms {
		b.Publish(context.Background(), topic, m, func(err error) { errc <- err })
	}
	for range ms {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("publish to %s: %v", topic, err)
			}
		case <-time.After(s.o.Wait):
			t.Fatalf("publish to %s: done not called within %v", topic, s.o.Wait)
		}
	}
}

func (s *suite) subscribe(t *testing.T, b bus.Bus, topic, sub string, opts bus.SubOptions, h bus.Handler) bus.Subscription {
	t.Helper()
	sb, err := b.Subscribe(context.Background(), topic, sub, opts, h)
	if err != nil {
		t.Fatalf("subscribe %s/%s: %v", topic, sub, err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb
}

// recorder is a handler that records deliveries and acknowledges them.
type recorder struct {
	mu sync.Mutex
	ds []*bus.Delivery
	ch chan struct{} // capacity 1: "something was recorded"
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1)} }

func (r *recorder) handle(_ context.Context, d *bus.Delivery) error {
	r.mu.Lock()
	r.ds = append(r.ds, d)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) snapshot() []*bus.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*bus.Delivery(nil), r.ds...)
}

func (r *recorder) payloads() []string {
	var out []string
	for _, d := range r.snapshot() {
		out = append(out, string(d.Payload))
	}
	return out
}

// waitFor polls cond until it holds or the suite's wait bound passes.
func (s *suite) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(s.o.Wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", s.o.Wait, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitN waits until r recorded at least n deliveries.
func (s *suite) waitN(t *testing.T, r *recorder, n int) []*bus.Delivery {
	t.Helper()
	s.waitFor(t, fmt.Sprintf("%d deliveries", n), func() bool { return len(r.snapshot()) >= n })
	return r.snapshot()
}

func msg(key, payload string) bus.Message { return bus.Message{Key: key, Payload: []byte(payload)} }

func (s *suite) publishSubscribe(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	r := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{Mode: bus.Exclusive}, r.handle)
	const n = 20
	var ms []bus.Message
	for i := range n {
		m := msg("k"+strconv.Itoa(i%3), "m"+strconv.Itoa(i))
		m.Props = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "i": strconv.Itoa(i)}
		ms = append(ms, m)
	}
	start := time.Now().Add(-time.Minute) // broker clocks may differ slightly
	s.publishAll(t, b, topic, ms)
	ds := s.waitN(t, r, n)
	if len(ds) != n {
		t.Fatalf("got %d deliveries, want %d", len(ds), n)
	}
	ids := map[string]bool{}
	last := map[string]int{} // key -> index of its last delivered message
	for _, d := range ds {
		i, err := strconv.Atoi(strings.TrimPrefix(string(d.Payload), "m"))
		if err != nil || i < 0 || i >= n {
			t.Fatalf("unexpected payload %q", d.Payload)
		}
		want := ms[i]
		if d.Key != want.Key {
			t.Fatalf("%s has key %q, want %q", d.Payload, d.Key, want.Key)
		}
		// Order holds per key; across keys it may differ (key-based batching).
		if l, ok := last[d.Key]; ok && l >= i {
			t.Fatalf("key %s: m%d delivered after m%d", d.Key, i, l)
		}
		last[d.Key] = i
		if d.Props["traceparent"] != want.Props["traceparent"] || d.Props["i"] != strconv.Itoa(i) {
			t.Fatalf("delivery %d props = %v, want %v", i, d.Props, want.Props)
		}
		if d.Topic != topic {
			t.Fatalf("delivery %d topic = %q, want %q", i, d.Topic, topic)
		}
		if d.Redeliveries != 0 {
			t.Fatalf("delivery %d redeliveries = %d, want 0", i, d.Redeliveries)
		}
		if d.PublishTime.Before(start) {
			t.Fatalf("delivery %d publish time %v is not set", i, d.PublishTime)
		}
		if d.ID == "" || ids[d.ID] {
			t.Fatalf("delivery %d id %q empty or repeated", i, d.ID)
		}
		ids[d.ID] = true
	}
}

// doneNotInline: done is never called on the caller's goroutine inside Publish, on success or
// on failure, so a caller may hold a lock that done takes.
func (s *suite) doneNotInline(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	var mu sync.Mutex
	var returned [3]bool
	var calls [3]atomic.Int32
	errs := make(chan error, 3)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for i, c := range []struct {
		ctx   context.Context
		topic string
	}{{context.Background(), topic}, {cancelled, topic}, {context.Background(), ""}} {
		mu.Lock()
		b.Publish(c.ctx, c.topic, msg("k", "x"), func(err error) {
			mu.Lock() // deadlocks if called inside Publish
			ok := returned[i]
			mu.Unlock()
			calls[i].Add(1)
			if !ok {
				err = fmt.Errorf("done %d called before Publish returned", i)
			} else if err == nil && i > 0 {
				err = errors.New("nil error")
			} else if i > 0 {
				err = nil // failure expected (cancelled ctx, empty topic)
			}
			errs <- err
		})
		returned[i] = true
		mu.Unlock()
	}
	for range 3 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(s.o.Wait):
			t.Fatal("done not called")
		}
	}
	for i := range calls {
		if n := calls[i].Load(); n != 1 {
			t.Fatalf("done %d called %d times", i, n)
		}
	}
}

func (s *suite) publishCancelled(t *testing.T) {
	b := s.bus(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errc := make(chan error, 1)
	b.Publish(ctx, s.topic(), msg("k", "x"), func(err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("done(%v), want context.Canceled", err)
		}
	case <-time.After(s.o.Wait):
		t.Fatal("done not called")
	}
}

// payloadReuse: once done ran, the caller may overwrite the payload; deliveries keep the
// published bytes.
func (s *suite) payloadReuse(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	r := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{}, r.handle)
	buf := []byte("original")
	s.publish(t, b, topic, bus.Message{Key: "k", Payload: buf})
	copy(buf, "XXXXXXXX")
	ds := s.waitN(t, r, 1)
	if string(ds[0].Payload) != "original" {
		t.Fatalf("payload = %q, want %q", ds[0].Payload, "original")
	}
}

// traceContext: the publisher's span context travels as a W3C traceparent property and
// comes back as the remote span context of the handler's ctx; an explicit traceparent
// property is kept as is.
func (s *suite) traceContext(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	type got struct {
		sc    trace.SpanContext
		props map[string]string
	}
	gotc := make(chan got, 2)
	s.subscribe(t, b, topic, "sub", bus.SubOptions{}, func(ctx context.Context, d *bus.Delivery) error {
		gotc <- got{trace.SpanContextFromContext(ctx), d.Props}
		return nil
	})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	errc := make(chan error, 1)
	b.Publish(ctx, topic, bus.Message{Key: "k", Payload: []byte("x"), Props: map[string]string{"a": "b"}}, func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatalf("publish: %v", err)
	}
	const explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	s.publish(t, b, topic, bus.Message{Key: "k", Payload: []byte("y"), Props: map[string]string{"traceparent": explicit}})
	for i, want := range []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", explicit} {
		var g got
		select {
		case g = <-gotc:
		case <-time.After(s.o.Wait):
			t.Fatal("no delivery")
		}
		if g.props["traceparent"] != want {
			t.Fatalf("delivery %d traceparent = %q, want %q", i, g.props["traceparent"], want)
		}
		if i == 0 && (g.props["a"] != "b" || g.sc.TraceID() != sc.TraceID() || g.sc.SpanID() != sc.SpanID() || !g.sc.IsRemote()) {
			t.Fatalf("delivery 0: props %v, handler span context %v", g.props, g.sc)
		}
	}
}

// earliest: a new subscription that does not ask for FromLatest sees messages published before
// it was created (persistent topic).
func (s *suite) earliest(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	s.publishAll(t, b, topic, []bus.Message{msg("k", "m0"), msg("k", "m1")})
	r := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{}, r.handle)
	s.publish(t, b, topic, msg("k", "m2"))
	s.waitN(t, r, 3)
	if got := strings.Join(r.payloads(), ","); got != "m0,m1,m2" {
		t.Fatalf("got %s, want m0,m1,m2", got)
	}
}

// fromLatest: a new FromLatest subscription skips what was published before it.
func (s *suite) fromLatest(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	s.publish(t, b, topic, msg("k", "before"))
	r := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{FromLatest: true}, r.handle)
	s.publish(t, b, topic, msg("k", "after"))
	ds := s.waitN(t, r, 1)
	if string(ds[0].Payload) != "after" {
		t.Fatalf("first delivery %q, want %q", ds[0].Payload, "after")
	}
}

// durableResumes: a durable subscription collects messages while it has no consumer; the next
// consumer gets them, FromLatest notwithstanding (it applies to a new subscription only).
func (s *suite) durableResumes(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	r1 := newRecorder()
	sub1 := s.subscribe(t, b, topic, "sub", bus.SubOptions{FromLatest: true}, r1.handle)
	s.publish(t, b, topic, msg("k", "m1"))
	s.waitN(t, r1, 1)
	if err := sub1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s.publish(t, b, topic, msg("k", "m2"))
	r2 := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{FromLatest: true}, r2.handle)
	ds := s.waitN(t, r2, 1)
	if string(ds[0].Payload) != "m2" {
		t.Fatalf("resumed subscription got %q first, want m2", ds[0].Payload)
	}
}

// ephemeral: an ephemeral subscription dies with its last consumer; what was published in
// between is not delivered to the next one.
func (s *suite) ephemeral(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	opts := bus.SubOptions{Ephemeral: true, FromLatest: true}
	r1 := newRecorder()
	sub1 := s.subscribe(t, b, topic, "eph", opts, r1.handle)
	s.publish(t, b, topic, msg("k", "m1"))
	if ds := s.waitN(t, r1, 1); string(ds[0].Payload) != "m1" {
		t.Fatalf("got %q, want m1", ds[0].Payload)
	}
	if err := sub1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s.publish(t, b, topic, msg("k", "m2"))
	r2 := newRecorder()
	s.subscribe(t, b, topic, "eph", opts, r2.handle)
	s.publish(t, b, topic, msg("k", "m3"))
	if ds := s.waitN(t, r2, 1); string(ds[0].Payload) != "m3" {
		t.Fatalf("new ephemeral consumer got %q first, want m3 (m2 must not accumulate)", ds[0].Payload)
	}
}

// nonPersistent: a non-persistent topic (the broadcast topic) delivers to live consumers, best
// effort (Pulsar drops what arrives while a consumer has no permits yet, e.g. right after it
// subscribed), in per-key order, and keeps nothing for a subscription created later.
func (s *suite) nonPersistent(t *testing.T) {
	b := s.bus(t)
	topic := strings.Replace(s.topic(), "persistent://", "non-persistent://", 1)
	opts := bus.SubOptions{Mode: bus.Exclusive, FromLatest: true, Ephemeral: true}
	// publishUntil publishes prefix0, prefix1, … one at a time until r has n deliveries.
	publishUntil := func(r *recorder, prefix string, n int) {
		t.Helper()
		deadline := time.Now().Add(s.o.Wait)
		for i := 0; len(r.snapshot()) < n; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("%d deliveries within %v, want %d", len(r.snapshot()), s.o.Wait, n)
			}
			s.publish(t, b, topic, msg("everyone", prefix+strconv.Itoa(i)))
		}
	}
	r := newRecorder()
	s.subscribe(t, b, topic, "edge-1", opts, r.handle)
	publishUntil(r, "", 10)
	prev := -1
	for _, p := range r.payloads() {
		i, err := strconv.Atoi(p)
		if err != nil || i <= prev {
			t.Fatalf("deliveries out of order: %v", r.payloads())
		}
		prev = i
	}
	r2 := newRecorder()
	s.subscribe(t, b, topic, "edge-2", bus.SubOptions{Mode: bus.Exclusive, Ephemeral: true}, r2.handle)
	publishUntil(r2, "late", 1)
	if p := r2.payloads()[0]; !strings.HasPrefix(p, "late") {
		t.Fatalf("late subscriber got %q first, want a late message (nothing retained)", p)
	}
}

// keyLog checks per-key order under at-least-once delivery: a message of a key may be handled
// (acknowledged) only after every earlier message of that key was; duplicates are allowed.
type keyLog struct {
	mu      sync.Mutex
	next    map[string]int // key -> lowest seq not yet acknowledged
	total   int            // distinct (key, seq) acknowledged
	handled map[string]int // consumer -> acknowledged deliveries
	err     error
}

func newKeyLog() *keyLog { return &keyLog{next: map[string]int{}, handled: map[string]int{}} }

// ack records consumer c acknowledging seq of key; it reports an order violation.
func (l *keyLog) ack(c, key string, seq int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.next[key]
	switch {
	case seq > n:
		if l.err == nil {
			l.err = fmt.Errorf("consumer %s handled %s#%d before %s#%d", c, key, seq, key, n)
		}
	case seq == n:
		l.next[key] = n + 1
		l.total++
	}
	l.handled[c]++
}

func (l *keyLog) state() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.err
}

func keyed(keys, per int) []bus.Message {
	var ms []bus.Message
	for i := range per {
		for k := range keys {
			ms = append(ms, msg("user-"+strconv.Itoa(k), strconv.Itoa(i)))
		}
	}
	return ms
}

func seqOf(t *testing.T, d *bus.Delivery) int {
	n, err := strconv.Atoi(string(d.Payload))
	if err != nil {
		t.Errorf("bad payload %q", d.Payload)
	}
	return n
}

// keyShared: two consumers share a Key_Shared subscription's load; each key's messages are
// handled in publish order.
func (s *suite) keyShared(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	log := newKeyLog()
	for _, c := range []string{"a", "b"} {
		s.subscribe(t, b, topic, "logic", bus.SubOptions{Mode: bus.KeyShared}, func(_ context.Context, d *bus.Delivery) error {
			log.ack(c, d.Key, seqOf(t, d))
			return nil
		})
	}
	const keys, per = 32, 20
	s.publishAll(t, b, topic, keyed(keys, per))
	s.waitHandled(t, log, keys*per)
	log.mu.Lock()
	defer log.mu.Unlock()
	if log.handled["a"] == 0 || log.handled["b"] == 0 {
		t.Fatalf("load not shared: %v", log.handled)
	}
}

// concurrency: one Key_Shared consumer with SubOptions.Concurrency runs handlers of different
// keys at the same time (the first handler waits for another to start), and still handles each
// key's messages one at a time, in publish order.
func (s *suite) concurrency(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	log := newKeyLog()
	var running, first atomic.Int32
	var perKey sync.Map // key -> *atomic.Int32: handlers of the key running now
	overlap := make(chan struct{})
	var once sync.Once
	s.subscribe(t, b, topic, "logic", bus.SubOptions{Mode: bus.KeyShared, Concurrency: 8}, func(_ context.Context, d *bus.Delivery) error {
		k, _ := perKey.LoadOrStore(d.Key, new(atomic.Int32))
		if k.(*atomic.Int32).Add(1) > 1 {
			t.Errorf("two handlers of key %s at once", d.Key)
		}
		defer k.(*atomic.Int32).Add(-1)
		if running.Add(1) > 1 {
			once.Do(func() { close(overlap) })
		}
		defer running.Add(-1)
		if first.Add(1) == 1 {
			select {
			case <-overlap:
			case <-time.After(s.o.Wait):
				t.Error("no other key's handler ran while the first one waited: Concurrency not honoured")
			}
		}
		log.ack("a", d.Key, seqOf(t, d))
		return nil
	})
	const keys, per = 16, 20
	s.publishAll(t, b, topic, keyed(keys, per))
	s.waitHandled(t, log, keys*per)
}

// keySharedJoin: a consumer that joins a Key_Shared subscription mid-stream takes over keys
// without any key's messages being handled out of order.
func (s *suite) keySharedJoin(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	log := newKeyLog()
	opts := bus.SubOptions{Mode: bus.KeyShared}
	var aHandled atomic.Int32
	handler := func(c string) bus.Handler {
		return func(_ context.Context, d *bus.Delivery) error {
			if c == "a" {
				aHandled.Add(1)
			}
			log.ack(c, d.Key, seqOf(t, d))
			return nil
		}
	}
	s.subscribe(t, b, topic, "logic", opts, handler("a"))
	const keys, per = 16, 40
	ms := keyed(keys, per)
	errc := make(chan error, len(ms))
	for _, m := range ms {
		b.Publish(context.Background(), topic, m, func(err error) { errc <- err })
	}
	s.waitFor(t, "a to handle 50", func() bool { return aHandled.Load() >= 50 })
	s.subscribe(t, b, topic, "logic", opts, handler("b"))
	for range ms {
		if err := <-errc; err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	s.waitHandled(t, log, keys*per)
}

// nackRedelivers: a handler error negatively acknowledges; the message comes back (counted in
// Redeliveries) after the NackDelay.
func (s *suite) nackRedelivers(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	var mu sync.Mutex
	var seen []string
	failed := false
	got := make(chan *bus.Delivery, 10)
	s.subscribe(t, b, topic, "sub", bus.SubOptions{Mode: bus.KeyShared, NackDelay: 100 * time.Millisecond}, func(_ context.Context, d *bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(d.Payload))
		if string(d.Payload) == "bad" && !failed {
			failed = true
			return errors.New("handler failed")
		}
		got <- d
		return nil
	})
	s.publishAll(t, b, topic, []bus.Message{msg("k1", "bad"), msg("k2", "good")})
	acked := map[string]*bus.Delivery{}
	for len(acked) < 2 {
		select {
		case d := <-got:
			acked[string(d.Payload)] = d
		case <-time.After(s.o.Wait):
			t.Fatalf("acked %v; seen %v", acked, seen)
		}
	}
	if d := acked["bad"]; d.Redeliveries < 1 {
		t.Fatalf("redelivered message has Redeliveries = %d, want ≥ 1", d.Redeliveries)
	}
	if d := acked["good"]; d.Redeliveries != 0 {
		t.Fatalf("good message Redeliveries = %d", d.Redeliveries)
	}
}

// closedConsumerRedelivers: a consumer closed with unacknowledged messages (its handler was
// still busy) has them redelivered to the subscription's next consumer.
func (s *suite) closedConsumerRedelivers(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	started := make(chan struct{}, 1)
	sub1 := s.subscribe(t, b, topic, "sub", bus.SubOptions{Mode: bus.Failover}, func(ctx context.Context, d *bus.Delivery) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done() // stuck until closed
		return ctx.Err()
	})
	s.publishAll(t, b, topic, []bus.Message{msg("k", "m0"), msg("k", "m1"), msg("k", "m2")})
	select {
	case <-started:
	case <-time.After(s.o.Wait):
		t.Fatal("first consumer got nothing")
	}
	if err := sub1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	r := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{Mode: bus.Failover}, r.handle)
	s.waitN(t, r, 3)
	if got := strings.Join(r.payloads(), ","); got != "m0,m1,m2" {
		t.Fatalf("redelivered %s, want m0,m1,m2", got)
	}
}

// killedMidStream: of two Key_Shared consumers, one stops acknowledging mid-stream and is
// closed; its messages are redelivered to the other, and every key's messages are still
// handled in order (at-least-once: an acknowledged message is never handled out of order).
func (s *suite) killedMidStream(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	log := newKeyLog()
	var aHandled atomic.Int32
	stuck := make(chan struct{})
	var stuckOnce sync.Once
	opts := bus.SubOptions{Mode: bus.KeyShared}
	a := s.subscribe(t, b, topic, "logic", opts, func(ctx context.Context, d *bus.Delivery) error {
		if aHandled.Add(1) > 5 { // the replica "dies": it stops acknowledging
			stuckOnce.Do(func() { close(stuck) })
			<-ctx.Done()
			return ctx.Err()
		}
		log.ack("a", d.Key, seqOf(t, d))
		return nil
	})
	s.subscribe(t, b, topic, "logic", opts, func(_ context.Context, d *bus.Delivery) error {
		log.ack("b", d.Key, seqOf(t, d))
		return nil
	})
	const keys, per = 16, 25
	s.publishAll(t, b, topic, keyed(keys, per))
	select {
	case <-stuck:
	case <-time.After(s.o.Wait):
		n, _ := log.state()
		t.Fatalf("consumer a never got its 6th message (handled %d in total)", n)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close a: %v", err)
	}
	s.waitFor(t, "every message handled after a's death", func() bool {
		n, err := log.state()
		if err != nil {
			t.Fatal(err)
		}
		return n == keys*per
	})
	log.mu.Lock()
	defer log.mu.Unlock()
	if log.handled["a"] != 5 {
		t.Fatalf("a acknowledged %d, want 5", log.handled["a"])
	}
}

func (s *suite) exclusive(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	r := newRecorder()
	s.subscribe(t, b, topic, "sub", bus.SubOptions{Mode: bus.Exclusive}, r.handle)
	sb, err := b.Subscribe(context.Background(), topic, "sub", bus.SubOptions{Mode: bus.Exclusive}, r.handle)
	if err == nil {
		_ = sb.Close()
		t.Fatal("second consumer of an exclusive subscription accepted")
	}
	if !errors.Is(err, bus.ErrBusy) || errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("second exclusive consumer: %v, want ErrBusy", err)
	}
}

// failover: one active consumer gets everything; when it closes, the standby takes over.
func (s *suite) failover(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	opts := bus.SubOptions{Mode: bus.Failover}
	r1, r2 := newRecorder(), newRecorder()
	sub1 := s.subscribe(t, b, topic, "fo", opts, r1.handle)
	sub2 := s.subscribe(t, b, topic, "fo", opts, r2.handle)
	var ms []bus.Message
	for i := range 10 {
		ms = append(ms, msg("k"+strconv.Itoa(i), "m"+strconv.Itoa(i)))
	}
	s.publishAll(t, b, topic, ms)
	s.waitFor(t, "10 deliveries", func() bool { return len(r1.snapshot())+len(r2.snapshot()) >= 10 })
	active, standby, activeSub := r1, r2, sub1
	if len(r2.snapshot()) > 0 {
		active, standby, activeSub = r2, r1, sub2
	}
	if n := len(standby.snapshot()); n != 0 {
		t.Fatalf("both consumers got messages (%d and %d)", len(active.snapshot()), n)
	}
	if err := activeSub.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s.publish(t, b, topic, msg("k", "after"))
	ds := s.waitN(t, standby, 1)
	if string(ds[0].Payload) != "after" {
		t.Fatalf("standby got %q, want after", ds[0].Payload)
	}
}

// subscribeCtx: ending the Subscribe ctx stops the consumer; its handler's ctx ends.
func (s *suite) subscribeCtx(t *testing.T) {
	b := s.bus(t)
	topic := s.topic()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hctx := make(chan context.Context, 1)
	sb, err := b.Subscribe(ctx, topic, "sub", bus.SubOptions{}, func(c context.Context, d *bus.Delivery) error {
		select {
		case hctx <- c:
		default:
		}
		return nil
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sb.Close()
	s.publish(t, b, topic, msg("k", "m"))
	var c context.Context
	select {
	case c = <-hctx:
	case <-time.After(s.o.Wait):
		t.Fatal("no delivery")
	}
	cancel()
	select {
	case <-c.Done():
	case <-time.After(s.o.Wait):
		t.Fatal("handler ctx not done after the Subscribe ctx ended")
	}
	if err := sb.Close(); err != nil {
		t.Fatalf("close after ctx end: %v", err)
	}
}

// close: Close settles every accepted publish (done called exactly once, by the time Close
// returns), later calls fail with ErrClosed, and closing twice is fine.
func (s *suite) close(t *testing.T) {
	b := s.newBus(t)
	topic := s.topic()
	r := newRecorder()
	sb, err := b.Subscribe(context.Background(), topic, "sub", bus.SubOptions{}, r.handle)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	const n = 200
	var calls [n]atomic.Int32
	var ok atomic.Int32
	for i := range n {
		b.Publish(context.Background(), topic, msg("k", strconv.Itoa(i)), func(err error) {
			calls[i].Add(1)
			if err == nil {
				ok.Add(1)
			}
		})
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Fatalf("done of publish %d called %d times by the time Close returned", i, c)
		}
	}
	if ok.Load() != n {
		t.Fatalf("%d of %d publishes accepted before Close; Close must flush", ok.Load(), n)
	}
	errc := make(chan error, 1)
	b.Publish(context.Background(), topic, msg("k", "late"), func(err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("publish after Close: %v, want ErrClosed", err)
		}
	case <-time.After(s.o.Wait):
		t.Fatal("done not called after Close")
	}
	if _, err := b.Subscribe(context.Background(), topic, "sub2", bus.SubOptions{}, r.handle); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("subscribe after Close: %v, want ErrClosed", err)
	}
	if err := sb.Close(); err != nil {
		t.Fatalf("subscription Close after bus Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// waitHandled waits until log holds n handled messages, failing on an order violation.
func (s *suite) waitHandled(t *testing.T, log *keyLog, n int) {
	t.Helper()
	s.waitFor(t, "all messages handled", func() bool {
		got, err := log.state()
		if err != nil {
			t.Fatal(err)
		}
		return got == n
	})
}
