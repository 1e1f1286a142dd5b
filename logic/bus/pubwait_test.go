package bus

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
)

// stuckProducer is a producer whose connection loop is busy reconnecting: SendAsync queues the
// message and answers only when told to (answer), if ever.
type stuckProducer struct {
	pulsar.Producer
	msg *pulsar.ProducerMessage
	cb  func(pulsar.MessageID, *pulsar.ProducerMessage, error)
}

func (p *stuckProducer) SendAsync(_ context.Context, m *pulsar.ProducerMessage, cb func(pulsar.MessageID, *pulsar.ProducerMessage, error)) {
	p.msg, p.cb = m, cb
}

// TestSendHeldByReconnectTimesOut: with HeldTimeout, a message the producer holds without a
// deadline (it is reconnecting) is failed by the bus with ErrTimeout once HeldTimeout passed;
// the producer's late answer is dropped: done runs exactly once.
func TestSendHeldByReconnectTimesOut(t *testing.T) {
	b := &Pulsar{cfg: PulsarConfig{SendTimeout: 100 * time.Millisecond, HeldTimeout: 300 * time.Millisecond}, notes: newNotifier()}
	p := &stuckProducer{}
	var calls atomic.Int32
	errc := make(chan error, 2)
	start := time.Now()
	payload := []byte("x")
	b.send(context.Background(), "t", &pulsarTopic{}, p, Message{Key: "k", Payload: payload}, func(err error) {
		calls.Add(1)
		errc <- err
	})
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("done not called within 10s of a publish the producer holds")
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("done(%v), want ErrTimeout", err)
	}
	if took := time.Since(start); took < b.cfg.HeldTimeout {
		t.Errorf("failed after %v, before HeldTimeout (%v)", took, b.cfg.HeldTimeout)
	}
	payload[0] = 'y' // the caller reuses its buffer once done ran
	if got := string(p.msg.Payload); got != "x" {
		t.Errorf("the producer's message changed to %q when the caller reused its buffer after done", got)
	}
	p.cb(nil, nil, nil) // the broker's answer, too late
	b.notes.wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("done called %d times, want 1", n)
	}
}

// TestSendAnsweredStopsTheTimer: an answered publish is reported once and its timer stopped.
func TestSendAnsweredStopsTheTimer(t *testing.T) {
	b := &Pulsar{cfg: PulsarConfig{SendTimeout: time.Second, HeldTimeout: time.Hour}, notes: newNotifier()}
	p := &stuckProducer{}
	var calls atomic.Int32
	b.send(context.Background(), "t", &pulsarTopic{}, p, Message{Key: "k"}, func(err error) {
		if err != nil {
			t.Errorf("done(%v), want nil", err)
		}
		calls.Add(1)
	})
	p.cb(nil, nil, nil)
	b.notes.wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("done called %d times, want 1", n)
	}
}

// TestSendWithoutHeldTimeoutWaits: without HeldTimeout a held message waits for the broker's
// answer, however late (a consumer's frames stay in order).
func TestSendWithoutHeldTimeoutWaits(t *testing.T) {
	b := &Pulsar{cfg: PulsarConfig{SendTimeout: 10 * time.Millisecond}, notes: newNotifier()}
	p := &stuckProducer{}
	errc := make(chan error, 1)
	b.send(context.Background(), "t", &pulsarTopic{}, p, Message{Key: "k"}, func(err error) { errc <- err })
	select {
	case err := <-errc:
		t.Fatalf("done(%v) before the broker answered", err)
	case <-time.After(200 * time.Millisecond): // 20× SendTimeout: the bus must not have given up
	}
	p.cb(nil, nil, nil)
	if err := <-errc; err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
}
