package wire

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type sink struct {
	mu   sync.Mutex
	got  []string
	fail func(p []byte) error
}

func (s *sink) handle(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(p); err != nil {
			return err
		}
	}
	s.got = append(s.got, string(p))
	return nil
}

func (s *sink) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func newBus(t *testing.T) *bus.Memory {
	t.Helper()
	b, err := bus.NewMemory(bus.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestPublisherKeysByUserOnUpstream(t *testing.T) {
	b := newBus(t)
	ctx := t.Context()
	got := make(chan *bus.Delivery, 1)
	sub, err := b.Subscribe(ctx, protocol.UpstreamTopic(""), "test", bus.SubOptions{Mode: bus.KeyShared},
		func(_ context.Context, d *bus.Delivery) error { got <- d; return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	done := make(chan error, 1)
	NewPublisher(b, "").Publish(ctx, "alice", []byte("env"), map[string]string{protocol.PropTraceparent: "tp"}, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("publish: %v", err)
	}
	d := <-got
	if d.Key != "alice" || string(d.Payload) != "env" || d.Props[protocol.PropTraceparent] != "tp" {
		t.Fatalf("delivery %+v", d.Message)
	}
}

func TestDownstreamDeliversEdgeAndBroadcastTopicsOnly(t *testing.T) {
	b := newBus(t)
	ctx := t.Context()
	var s sink
	ds, err := Subscribe(ctx, b, Config{Edge: "e1"}, s.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	pub := func(topic, payload string) {
		done := make(chan error, 1)
		b.Publish(ctx, topic, bus.Message{Payload: []byte(payload)}, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	pub(protocol.EdgeTopic("", "e2"), "other edge")
	pub(protocol.EdgeTopic("", "e1"), "mine")
	pub(protocol.BroadcastTopic(""), "everyone")
	eventually(t, "two deliveries", func() bool { return len(s.list()) == 2 })
	got := s.list()
	if !(got[0] == "mine" && got[1] == "everyone" || got[0] == "everyone" && got[1] == "mine") {
		t.Fatalf("got %q", got)
	}
}

func TestDownstreamRetriesOnlyRetryableErrors(t *testing.T) {
	b := newBus(t)
	ctx := t.Context()
	errNotReady := errors.New("not ready")
	var mu sync.Mutex
	attempts := map[string]int{}
	s := sink{fail: func(p []byte) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[string(p)]++
		switch {
		case string(p) == "bad":
			return errors.New("malformed")
		case string(p) == "later" && attempts["later"] < 3:
			return errNotReady
		}
		return nil
	}}
	ds, err := Subscribe(ctx, b, Config{Edge: "e1", Retryable: func(err error) bool { return errors.Is(err, errNotReady) }}, s.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	for _, p := range []string{"bad", "later", "ok"} {
		b.Publish(ctx, protocol.EdgeTopic("", "e1"), bus.Message{Payload: []byte(p)}, func(error) {})
	}
	eventually(t, "later and ok delivered", func() bool { return len(s.list()) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if attempts["bad"] != 1 {
		t.Errorf("a malformed envelope was tried %d times, want 1 (no redelivery loop)", attempts["bad"])
	}
	if attempts["later"] != 3 {
		t.Errorf("a retryable failure was tried %d times, want 3", attempts["later"])
	}
}

func TestSubscribeRejectsBadEdgeID(t *testing.T) {
	if _, err := Subscribe(t.Context(), newBus(t), Config{Edge: "bad/id"}, func([]byte) error { return nil }); err == nil {
		t.Fatal("no error for an invalid edge id")
	}
}
