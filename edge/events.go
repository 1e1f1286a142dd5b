package edge

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Upstream connect / disconnect events. A client frame refused by the bus is answered with an
// error frame and the client resends it; nobody resends a connect or a disconnect, so the edge
// does: a refused event is published again with capped exponential backoff (eventBackoffMin
// doubling to eventBackoffMax, jittered) until Config.EventRetry has passed since the first
// attempt, then it is dropped and counted (Stats.EventsDropped). The envelope bytes are the
// request's own buffer, untouched until the request is released. Retries are published from
// one retrier goroutine, never from an event loop.
//
// Order: logic must not see a connection's disconnect before its connect. While a
// connection's connect is being retried (flagConnRetry), its disconnect is held by the loop
// (loop.deferred) and published once the connect got through; if the connect is finally
// dropped, the held disconnect is dropped with it (logic saw neither). A connect whose failure
// comes back after its connection ended is not retried (its disconnect is already out).

const (
	evConnect = iota + 1
	evDisconnect

	eventBackoffMin = 50 * time.Millisecond
	eventBackoffMax = 2 * time.Second
)

// eventDone completes a connect or disconnect publish. Any goroutine.
func (s *Server) eventDone(r *pubReq, err error) {
	if err != nil {
		s.pubErrors.Add(1)
	}
	if r.ev == evDisconnect {
		if err == nil {
			putReq(r)
			return
		}
		if !s.retryEvent(r) {
			s.eventsDropped.Add(1)
			putReq(r)
		}
		return
	}
	// Connect: the common case (accepted at the first attempt) needs no loop.
	if err == nil && r.tries == 0 {
		putReq(r)
		return
	}
	r.err = err
	if !r.l.enqueue(task{kind: tEvent, req: r}) {
		if err != nil {
			s.eventsDropped.Add(1)
		}
		putReq(r)
	}
}

// connectDone handles a connect's failure or late success on its loop.
func (l *loop) connectDone(r *pubReq) {
	s := l.s
	wc := l.conns[r.conn]
	if r.err == nil { // a retried connect got through
		if wc != nil {
			wc.flags &^= flagConnRetry
		} else if d := l.deferred[r.conn]; d != nil {
			delete(l.deferred, r.conn)
			s.cfg.Publisher.Publish(s.ctx, d.key, d.buf, nil, d.doneFn)
		}
		putReq(r)
		return
	}
	if wc == nil {
		// The connection ended before logic saw its connect.
		s.eventsDropped.Add(1)
		if d := l.deferred[r.conn]; d != nil {
			delete(l.deferred, r.conn)
			s.eventsDropped.Add(1) // its disconnect goes nowhere either: logic saw neither
			putReq(d)
		}
		putReq(r)
		return
	}
	if !s.retryEvent(r) {
		s.eventsDropped.Add(1)
		wc.flags &^= flagConnRetry
		putReq(r)
		return
	}
	wc.flags |= flagConnRetry
}

// deferDisconnect holds a disconnect while the connection's connect is being retried.
func (l *loop) deferDisconnect(r *pubReq) {
	if l.deferred == nil {
		l.deferred = make(map[uint64]*pubReq)
	}
	l.deferred[r.conn] = r
}

// retryEvent schedules r's next attempt. It reports false when r must be dropped: its retry
// time is spent, retries are off, or the edge is stopping.
func (s *Server) retryEvent(r *pubReq) bool {
	if s.cfg.EventRetry <= 0 || s.ctx.Err() != nil {
		return false
	}
	now := time.Now().UnixNano()
	if time.Duration(now-r.first) >= s.cfg.EventRetry {
		return false
	}
	d := eventBackoffMin << min(r.tries, 8)
	d = min(d, eventBackoffMax)
	d = d/2 + rand.N(d/2+1)
	if r.tries < 255 {
		r.tries++
	}
	r.due = now + int64(d)
	return s.retrier.add(r)
}

// retrier publishes events again when they are due. One goroutine, started by Run.
type retrier struct {
	mu      sync.Mutex
	q       reqHeap
	running bool
	wake    chan struct{}
}

func (rt *retrier) add(r *pubReq) bool {
	rt.mu.Lock()
	if !rt.running {
		rt.mu.Unlock()
		return false
	}
	heap.Push(&rt.q, r)
	first := rt.q[0] == r
	rt.mu.Unlock()
	if first {
		select {
		case rt.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (rt *retrier) start() {
	rt.mu.Lock()
	rt.running = true
	rt.wake = make(chan struct{}, 1)
	rt.mu.Unlock()
}

// run publishes due events until ctx ends; then every waiting event is dropped.
func (s *Server) runRetrier(ctx context.Context) {
	rt := &s.retrier
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		rt.mu.Lock()
		now := time.Now().UnixNano()
		var due []*pubReq
		for len(rt.q) > 0 && rt.q[0].due <= now {
			due = append(due, heap.Pop(&rt.q).(*pubReq))
		}
		wait := time.Hour
		if len(rt.q) > 0 {
			wait = time.Duration(rt.q[0].due - now)
		}
		rt.mu.Unlock()
		for _, r := range due {
			s.eventsRetried.Add(1)
			s.cfg.Publisher.Publish(s.ctx, r.key, r.buf, nil, r.doneFn)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			rt.mu.Lock()
			rt.running = false
			left := rt.q
			rt.q = nil
			rt.mu.Unlock()
			for _, r := range left {
				s.eventsDropped.Add(1)
				putReq(r)
			}
			return
		case <-rt.wake:
		case <-t.C:
		}
	}
}

// reqHeap orders waiting events by due time.
type reqHeap []*pubReq

func (h reqHeap) Len() int           { return len(h) }
func (h reqHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h reqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *reqHeap) Push(x any)        { *h = append(*h, x.(*pubReq)) }
func (h *reqHeap) Pop() any {
	old := *h
	n := len(old)
	r := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return r
}
