package bus_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
)

// deadAddr returns an address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("done not called")
		return nil
	}
}

// TestPulsarUnreachable: with no broker, Publish fails with ErrUnavailable (never blocks, never
// drops silently), Subscribe fails with ErrUnavailable, Close returns.
func TestPulsarUnreachable(t *testing.T) {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: "pulsar://" + deadAddr(t),
		OperationTimeout: 500 * time.Millisecond, ConnectionTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	b.Publish(context.Background(), "persistent://public/default/x", bus.Message{Key: "k", Payload: []byte("p")}, func(err error) { errc <- err })
	if err := waitErr(t, errc); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("publish: %v, want ErrUnavailable", err)
	}
	if _, err := b.Subscribe(context.Background(), "persistent://public/default/x", "s", bus.SubOptions{}, func(context.Context, *bus.Delivery) error { return nil }); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("subscribe: %v, want ErrUnavailable", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPulsarFull: messages published while the topic's producer cannot be created are bounded
// by MaxPendingMessages; beyond it Publish fails with ErrFull at once.
func TestPulsarFull(t *testing.T) {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: "pulsar://" + deadAddr(t), MaxPendingMessages: 2,
		OperationTimeout: time.Second, ConnectionTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 3)
	for range 3 {
		b.Publish(context.Background(), "persistent://public/default/x", bus.Message{Key: "k"}, func(err error) { errc <- err })
	}
	var full, unavailable int
	for range 3 {
		switch err := waitErr(t, errc); {
		case errors.Is(err, bus.ErrFull):
			full++
		case errors.Is(err, bus.ErrUnavailable):
			unavailable++
		default:
			t.Fatalf("publish: %v", err)
		}
	}
	if full != 1 || unavailable != 2 {
		t.Fatalf("%d ErrFull, %d ErrUnavailable; want 1 and 2", full, unavailable)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewPulsarValidates(t *testing.T) {
	if _, err := bus.NewPulsar(bus.PulsarConfig{}); err == nil {
		t.Fatal("empty URL accepted")
	}
}

// TestPulsarUnreachableEveryDoneCalled: publishers racing with failing producer creations
// (each retried by the next Publish) all get their done called, with ErrUnavailable or ErrFull.
func TestPulsarUnreachableEveryDoneCalled(t *testing.T) {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: "pulsar://" + deadAddr(t), MaxPendingMessages: 64,
		OperationTimeout: 100 * time.Millisecond, ConnectionTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var published, called atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				published.Add(1)
				b.Publish(context.Background(), "persistent://public/default/x", bus.Message{Key: "k"}, func(err error) {
					if !errors.Is(err, bus.ErrUnavailable) && !errors.Is(err, bus.ErrFull) {
						t.Errorf("publish: %v", err)
					}
					called.Add(1)
				})
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if p, c := published.Load(), called.Load(); p != c {
		t.Fatalf("%d published, %d done calls after Close", p, c)
	}
}
