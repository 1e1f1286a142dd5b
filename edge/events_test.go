package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/protocol"
)

// flakyPub refuses every connect / disconnect envelope while refuse says so (and the first
// failFirst attempts in any case), and records, in order, the attempts and the accepted ones.
// While hold is set, accepted events' done calls wait until release (held counts them).
type flakyPub struct {
	mu        sync.Mutex
	failFirst int
	refuse    bool
	attempts  int
	accepted  []protocol.Upstream
	hold      chan struct{} // closed by release; nil: done runs at once
	held      int
	wg        sync.WaitGroup
}

var errQueueFull = errors.New("bus: producer queue is full")

func (p *flakyPub) Publish(_ context.Context, _ string, payload []byte, _ map[string]string, done func(error)) {
	var u protocol.Upstream
	if err := protocol.DecodeUpstream(payload, &u); err != nil {
		panic(err)
	}
	p.mu.Lock()
	var err error
	if u.Kind == protocol.UpConnect || u.Kind == protocol.UpDisconnect {
		p.attempts++
		if p.attempts <= p.failFirst || p.refuse {
			err = errQueueFull
		}
	}
	hold := p.hold
	if err == nil {
		p.accepted = append(p.accepted, u)
		if hold != nil {
			p.held++
		}
	} else {
		hold = nil
	}
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if hold != nil {
			<-hold
		}
		done(err)
	}()
}

// holdAccepted makes the next accepted events wait for release before their done runs.
func (p *flakyPub) holdAccepted() (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = make(chan struct{})
	ch := p.hold
	return func() {
		p.mu.Lock()
		p.hold = nil
		p.mu.Unlock()
		close(ch)
	}
}

func (p *flakyPub) heldCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

func (p *flakyPub) setRefuse(v bool) {
	p.mu.Lock()
	p.refuse = v
	p.mu.Unlock()
}

// events returns the accepted connect / disconnect envelopes for conn, in order.
func (p *flakyPub) events(conn uint64) []protocol.UpKind {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []protocol.UpKind
	for _, u := range p.accepted {
		if u.Conn == conn && (u.Kind == protocol.UpConnect || u.Kind == protocol.UpDisconnect) {
			out = append(out, u.Kind)
		}
	}
	return out
}

func wantEvents(p *flakyPub, conn uint64, want ...protocol.UpKind) func() error {
	return func() error {
		got := p.events(conn)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("accepted events %v, want %v", got, want)
		}
		return nil
	}
}

// TestEventRetry: a connect and a disconnect the bus refuses a few times reach it in the end,
// once each, in order; nothing is counted as dropped.
func TestEventRetry(t *testing.T) {
	pub := &flakyPub{failFirst: 3}
	cfg := testConfig()
	cfg.Publisher = pub
	s := startEdge(t, cfg)
	defer pub.wg.Wait()

	c, w := dialGorilla(t, s, "alice")
	id := connID(t, w)
	checkFor(t, 5*time.Second, wantEvents(pub, id, protocol.UpConnect))
	if st := s.Stats(); st.EventsRetried != 3 || st.EventsDropped != 0 || st.PubErrors != 3 {
		t.Fatalf("retried %d dropped %d publish errors %d, want 3 0 3", st.EventsRetried, st.EventsDropped, st.PubErrors)
	}
	pub.mu.Lock()
	pub.failFirst = pub.attempts + 2 // the disconnect is refused twice
	pub.mu.Unlock()
	c.Close()
	checkFor(t, 5*time.Second, wantEvents(pub, id, protocol.UpConnect, protocol.UpDisconnect))
	if st := s.Stats(); st.EventsRetried != 5 || st.EventsDropped != 0 {
		t.Fatalf("retried %d dropped %d, want 5 0", st.EventsRetried, st.EventsDropped)
	}
}

// TestEventRetryOrder: a client that leaves while its connect is still being retried has its
// disconnect held back until the connect got through: logic never sees them reversed.
func TestEventRetryOrder(t *testing.T) {
	pub := &flakyPub{refuse: true}
	cfg := testConfig()
	cfg.Publisher = pub
	s := startEdge(t, cfg)
	defer pub.wg.Wait()

	c, w := dialGorilla(t, s, "bob")
	id := connID(t, w)
	checkFor(t, 5*time.Second, func() error {
		if n := s.Stats().EventsRetried; n < 2 {
			return fmt.Errorf("%d retries", n)
		}
		return nil
	})
	// The next attempt is accepted but its outcome held: the connect is still "being retried"
	// when the client leaves, whenever that attempt comes.
	release := pub.holdAccepted()
	pub.setRefuse(false)
	checkFor(t, 5*time.Second, func() error {
		if n := pub.heldCount(); n != 1 {
			return fmt.Errorf("%d attempts held", n)
		}
		return nil
	})
	c.Close()
	checkFor(t, 5*time.Second, func() error {
		if n := s.Stats().Open; n != 0 {
			return fmt.Errorf("%d open", n)
		}
		return nil
	})
	if got := pub.events(id); fmt.Sprint(got) != fmt.Sprint([]protocol.UpKind{protocol.UpConnect}) {
		t.Fatalf("before the connect's outcome: accepted %v, want only the connect", got)
	}
	release()
	checkFor(t, 5*time.Second, wantEvents(pub, id, protocol.UpConnect, protocol.UpDisconnect))
	if n := s.Stats().EventsDropped; n != 0 {
		t.Fatalf("%d dropped, want 0", n)
	}
}

// TestEventRetryGivesUp: events the bus keeps refusing are dropped after EventRetry and
// counted; a connect given up on while its client is gone takes the held disconnect with it.
func TestEventRetryGivesUp(t *testing.T) {
	pub := &flakyPub{refuse: true}
	cfg := testConfig()
	cfg.Publisher = pub
	cfg.EventRetry = 300 * time.Millisecond
	s := startEdge(t, cfg)
	defer pub.wg.Wait()

	// Connected throughout: the connect is dropped; later the disconnect too.
	c, w := dialGorilla(t, s, "carol")
	id := connID(t, w)
	checkFor(t, 5*time.Second, func() error {
		if n := s.Stats().EventsDropped; n != 1 {
			return fmt.Errorf("%d dropped, want 1", n)
		}
		return nil
	})
	c.Close()
	checkFor(t, 5*time.Second, func() error {
		if n := s.Stats().EventsDropped; n != 2 {
			return fmt.Errorf("%d dropped, want 2", n)
		}
		return nil
	})
	// Gone while its connect is retried: connect and held disconnect are dropped together.
	c2, w2 := dialGorilla(t, s, "dave")
	id2 := connID(t, w2)
	c2.Close()
	checkFor(t, 5*time.Second, func() error {
		if n := s.Stats().EventsDropped; n != 4 {
			return fmt.Errorf("%d dropped, want 4", n)
		}
		return nil
	})
	if ev := append(pub.events(id), pub.events(id2)...); len(ev) != 0 {
		t.Fatalf("accepted %v, want none", ev)
	}
	if st := s.Stats(); st.EventsRetried == 0 {
		t.Fatal("no retries before giving up")
	}
}

// TestEventRetryOff: a negative EventRetry drops a refused event at once.
func TestEventRetryOff(t *testing.T) {
	pub := &flakyPub{failFirst: 1}
	cfg := testConfig()
	cfg.Publisher = pub
	cfg.EventRetry = -1
	s := startEdge(t, cfg)
	defer pub.wg.Wait()
	_, w := dialGorilla(t, s, "erin")
	_ = connID(t, w)
	checkFor(t, 5*time.Second, func() error {
		if st := s.Stats(); st.EventsDropped != 1 || st.EventsRetried != 0 {
			return fmt.Errorf("dropped %d retried %d, want 1 0", st.EventsDropped, st.EventsRetried)
		}
		return nil
	})
}
