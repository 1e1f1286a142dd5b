package chat_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// BenchmarkSendEmbedded is one chat.send through the embedded path the way the switchboard
// binary runs it: an upstream envelope published to the in-memory bus, the runtime and the
// chat plugin with its MemoryStore, in-memory presence, and an edge consumer that decodes the
// two downstream envelopes (the sender's reply, the peer's chat.msg). `window` messages are in
// flight at once, from `pairs` pairs of users, as under load. Besides ns/op it reports the
// process CPU per message (cpu-ns/op), the figure the load test's messages per CPU-second is
// the inverse of.
func BenchmarkSendEmbedded(b *testing.B) {
	for _, window := range []int{1, 64} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) { benchSendEmbedded(b, 500, window) })
	}
}

func benchSendEmbedded(b *testing.B, pairs, window int) {
	ctx := context.Background()
	mb, err := bus.NewMemory(bus.MemoryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer mb.Close()
	pres, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer pres.Close()
	rt, err := logic.New(logic.Config{Bus: mb, Presence: pres,
		Plugins: []logic.Plugin{chat.New(chat.Config{Store: chat.NewMemoryStore(0, 0)})}})
	if err != nil {
		b.Fatal(err)
	}
	epoch, err := pres.Register(ctx, "e1", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	users := connectUsers(ctx, b, pres, epoch, 2*pairs)

	// The edge: every downstream envelope is decoded, as edge.HandleDownstream does.
	var got atomic.Int64
	tokens := make(chan struct{}, window)
	sub, err := mb.Subscribe(ctx, protocol.EdgeTopic("", "e1"), "sb-edge-e1",
		bus.SubOptions{Mode: bus.Exclusive, FromLatest: true, Ephemeral: true},
		func(_ context.Context, d *bus.Delivery) error {
			env := new(protocol.Downstream)
			if err := protocol.DecodeDownstream(d.Payload, env); err != nil {
				b.Error(err)
			}
			if env.Frame.Type == protocol.TypeError {
				b.Errorf("error frame: %s", env.Frame.Message)
			}
			if got.Add(1)%2 == 0 { // two envelopes per message
				<-tokens
			}
			return nil
		})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(context.Background()) }()
	defer func() {
		if err := rt.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		<-runErr
	}()
	<-rt.Ready()

	// Upstream envelopes, encoded up front as the edge does per frame (not measured here).
	payloads := make([][]byte, 2*pairs)
	for i := range payloads {
		peer := i ^ 1
		data := fmt.Sprintf(`{"to":%q,"text":"%064d","cmid":"c-%d-%%d"}`, users[peer], 0, i)
		payloads[i] = []byte(data)
	}
	topic := protocol.UpstreamTopic("")
	var pubMu sync.Mutex // the edge's publishes come from its loops; one here is enough
	var failed atomic.Int64
	pubDone := func(err error) {
		if err != nil {
			failed.Add(1)
		}
	}
	envs := make([][]byte, b.N)
	for i := range envs {
		u := i % len(users)
		envs[i] = protocol.AppendUpstream(nil, &protocol.Upstream{Kind: protocol.UpMessage, Edge: "e1", Epoch: epoch,
			Conn: uint64(u + 1), User: users[u], Type: chat.TypeSend, ID: strconv.Itoa(i),
			Data: fmt.Appendf(nil, string(payloads[u]), i), TimeUnixNano: 1})
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		tokens <- struct{}{}
		u := i % len(users)
		pubMu.Lock()
		mb.Publish(ctx, topic, bus.Message{Key: users[u], Payload: envs[i]}, pubDone)
		pubMu.Unlock()
	}
	for got.Load() < 2*int64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	if failed.Load() > 0 {
		b.Fatalf("%d publishes failed", failed.Load())
	}
}

// BenchmarkSendHandler is the runtime and the chat plugin alone for one chat.send: decode the
// upstream envelope, bind, store, resolve the peer, encode and publish the two deliveries. The
// bus accepts every publish at once and the handler is called directly, so no goroutine hop
// is measured (BenchmarkSendEmbedded has them).
func BenchmarkSendHandler(b *testing.B) {
	ctx := context.Background()
	pres, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer pres.Close()
	epoch, err := pres.Register(ctx, "e1", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	// 500 pairs, as in the load test: each conversation stays far below the history cap.
	users := connectUsers(ctx, b, pres, epoch, 1000)
	cb := &captureBus{subscribed: make(chan struct{})}
	rt, err := logic.New(logic.Config{Bus: cb, Presence: pres, Consumers: 1,
		Plugins: []logic.Plugin{chat.New(chat.Config{Store: chat.NewMemoryStore(0, 0)})}})
	if err != nil {
		b.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(ctx) }()
	defer func() {
		if err := rt.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		<-runErr
	}()
	<-cb.subscribed
	text := fmt.Sprintf("%064d", 0)
	d := &bus.Delivery{}
	var data []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		u := i % len(users)
		i++
		d.Key = users[u]
		data = append(append(append(append(append(data[:0], `{"to":"`...), users[u^1]...), `","text":"`...), text...), `","cmid":"c-`...)
		data = append(strconv.AppendInt(data, int64(i), 10), `"}`...)
		d.Payload = protocol.AppendUpstream(d.Payload[:0], &protocol.Upstream{Kind: protocol.UpMessage, Edge: "e1",
			Epoch: epoch, Conn: uint64(u + 1), User: users[u], Type: chat.TypeSend, ID: "7", Data: data, TimeUnixNano: 1})
		if err := cb.h(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cb.n.Load())/float64(b.N), "envelopes/op")
}

// captureBus keeps the handler the runtime subscribes with and accepts every publish at once.
// It calls done inline, which the Bus contract forbids; the runtime does not depend on it.
type captureBus struct {
	h          bus.Handler
	subscribed chan struct{}
	n          atomic.Int64
}

func (c *captureBus) Publish(_ context.Context, _ string, _ bus.Message, done func(error)) {
	c.n.Add(1)
	done(nil)
}

func (c *captureBus) Subscribe(_ context.Context, _, _ string, _ bus.SubOptions, h bus.Handler) (bus.Subscription, error) {
	c.h = h
	close(c.subscribed)
	return nopSub{}, nil
}

func (c *captureBus) Close() error { return nil }

type nopSub struct{}

func (nopSub) Close() error { return nil }

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMemoryStoreAppend appends to one conversation whose history is at its cap.
func BenchmarkMemoryStoreAppend(b *testing.B) {
	ctx := context.Background()
	s := chat.NewMemoryStore(1000, 0)
	members := []string{"alice", "bob"}
	conv := chat.DirectConv("alice", "bob")
	for i := range 1000 {
		if _, _, err := s.Append(ctx, chat.Message{Conv: conv, From: "alice", CMID: strconv.Itoa(i), Text: "hi"}, members); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, err := s.Append(ctx, chat.Message{Conv: conv, From: "alice", Text: "hi"}, members); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryStoreAppendConvs appends with a client message id to 500 direct
// conversations in turn, as the load test's pairs do.
func BenchmarkMemoryStoreAppendConvs(b *testing.B) {
	ctx := context.Background()
	s := chat.NewMemoryStore(0, 0)
	type conv struct {
		id      string
		members []string
	}
	convs := make([]conv, 500)
	for i := range convs {
		a, c := "user-"+strconv.Itoa(2*i), "user-"+strconv.Itoa(2*i+1)
		convs[i] = conv{chat.DirectConv(a, c), []string{a, c}}
	}
	cmids := make([]string, 1000)
	for i := range cmids {
		cmids[i] = "c-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		cv := &convs[i%len(convs)]
		if _, _, err := s.Append(ctx, chat.Message{Conv: cv.id, From: cv.members[0], CMID: cmids[i/len(convs)%len(cmids)], Text: "hi"}, cv.members); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkMemoryStoreAppendBusy appends with client message ids to one conversation that
// already holds more ids within the dedupe window than its sweep threshold (4 × cap).
func BenchmarkMemoryStoreAppendBusy(b *testing.B) {
	ctx := context.Background()
	s := chat.NewMemoryStore(100, 0)
	members := []string{"alice", "bob"}
	conv := chat.DirectConv("alice", "bob")
	for i := range 1000 {
		if _, _, err := s.Append(ctx, chat.Message{Conv: conv, From: "alice", CMID: "old-" + strconv.Itoa(i), Text: "hi"}, members); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, err := s.Append(ctx, chat.Message{Conv: conv, From: "alice", CMID: strconv.Itoa(i), Text: "hi"}, members); err != nil {
			b.Fatal(err)
		}
	}
}

// connectUsers connects n users ("user-0"…) on edge e1 of pres, one connection each.
func connectUsers(ctx context.Context, b *testing.B, pres presence.Store, epoch uint64, n int) []string {
	b.Helper()
	users := make([]string, n)
	ops := make([]presence.Op, n)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i)
		ops[i] = presence.Op{Kind: presence.OpConnect, ConnID: uint64(i + 1), User: users[i]}
	}
	if err := pres.Apply(ctx, "e1", epoch, ops); err != nil {
		b.Fatal(err)
	}
	return users
}
