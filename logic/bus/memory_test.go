package bus_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"testing"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/bustest"
)

func TestMemoryContract(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus {
		b, err := bus.NewMemory(bus.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestMemoryBacklogBound: a durable subscription without a consumer holds at most MaxBacklog
// messages; beyond it Publish fails with ErrFull instead of growing memory.
func TestMemoryBacklogBound(t *testing.T) {
	b, err := bus.NewMemory(bus.MemoryConfig{MaxBacklog: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.Subscribe(context.Background(), "t", "s", bus.SubOptions{}, func(context.Context, *bus.Delivery) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // durable: the subscription keeps collecting
	errc := make(chan error, 3)
	for range 3 {
		b.Publish(context.Background(), "t", bus.Message{Key: "k"}, func(err error) { errc <- err })
	}
	var errs []error
	for range 3 {
		errs = append(errs, <-errc)
	}
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], bus.ErrFull) {
		t.Fatalf("publish results %v, want nil, nil, ErrFull", errs)
	}
}

// TestMemoryReceiverQueue: with a tiny ReceiverQueue and consumers joining and leaving
// mid-stream, every key's messages are still handled exactly once and in order.
func TestMemoryReceiverQueue(t *testing.T) {
	b, err := bus.NewMemory(bus.MemoryConfig{ReceiverQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h, handled := inKeyOrder(t)
	opts := bus.SubOptions{Mode: bus.KeyShared}
	s1, err := b.Subscribe(context.Background(), "t", "s", opts, h)
	if err != nil {
		t.Fatal(err)
	}
	const keys, per = 8, 100
	var subs []bus.Subscription
	for i := range per {
		for k := range keys {
			b.Publish(context.Background(), "t", bus.Message{Key: "k" + strconv.Itoa(k), Payload: []byte(strconv.Itoa(i))}, func(err error) {
				if err != nil {
					t.Error(err)
				}
			})
		}
		if i%25 == 10 {
			s, err := b.Subscribe(context.Background(), "t", "s", opts, h)
			if err != nil {
				t.Fatal(err)
			}
			subs = append(subs, s)
		}
		if i == 60 {
			s1.Close() // graceful: its handled messages were acked, the rest move on
		}
	}
	waitHandled(t, handled, keys*per)
	for _, s := range subs {
		s.Close()
	}
}

// TestMemoryPublishNow: PublishNow accepts on the caller's goroutine; its messages reach
// Concurrency workers in key order, also while consumers with a tiny ReceiverQueue join and
// leave; it refuses a done ctx, an empty topic and a closed bus.
func TestMemoryPublishNow(t *testing.T) {
	b, err := bus.NewMemory(bus.MemoryConfig{ReceiverQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h, handled := inKeyOrder(t)
	ctx := context.Background()
	opts := bus.SubOptions{Mode: bus.KeyShared, Concurrency: 4}
	s1, err := b.Subscribe(ctx, "t", "s", opts, h)
	if err != nil {
		t.Fatal(err)
	}
	const keys, per = 8, 100
	var subs []bus.Subscription
	for i := range per {
		for k := range keys {
			if err := b.PublishNow(ctx, "t", bus.Message{Key: "k" + strconv.Itoa(k), Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
		}
		if i%25 == 10 {
			s, err := b.Subscribe(ctx, "t", "s", opts, h)
			if err != nil {
				t.Fatal(err)
			}
			subs = append(subs, s)
		}
		if i == 60 {
			s1.Close()
		}
	}
	waitHandled(t, handled, keys*per)
	for _, s := range subs {
		s.Close()
	}

	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.PublishNow(done, "t", bus.Message{}); !errors.Is(err, context.Canceled) {
		t.Errorf("done ctx: %v, want context.Canceled", err)
	}
	if err := b.PublishNow(ctx, "", bus.Message{}); err == nil {
		t.Error("empty topic accepted")
	}
	b.Close()
	if err := b.PublishNow(ctx, "t", bus.Message{}); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// inKeyOrder returns a handler that expects each key's payloads to count up from 0 (reporting
// a gap or a repeat) and a function returning how many it handled.
func inKeyOrder(t *testing.T) (bus.Handler, func() int) {
	var mu sync.Mutex
	next := map[string]int{}
	total := 0
	h := func(_ context.Context, d *bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		n, _ := strconv.Atoi(string(d.Payload))
		if n != next[d.Key] {
			t.Errorf("key %s: got %d, want %d", d.Key, n, next[d.Key])
		}
		next[d.Key] = n + 1
		total++
		return nil
	}
	return h, func() int { mu.Lock(); defer mu.Unlock(); return total }
}

// waitHandled polls handled until it reports want, failing t after 10 s.
func waitHandled(t *testing.T, handled func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n := handled(); n != want; n = handled() {
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}
