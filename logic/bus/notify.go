package bus

import "sync"

// notifier calls publish callbacks for messages refused before they reached a bus goroutine
// (ErrFull, ErrClosed, a done ctx), so that done is never called inside Publish — a caller may
// hold a lock that done takes. Its goroutine is started on demand and exits when the queue is
// empty: nothing idles, and nothing is left behind after Close.
type notifier struct {
	mu      sync.Mutex
	idle    *sync.Cond // signalled when running becomes false; guarded by mu
	q       []note     // guarded by mu
	running bool       // a drain goroutine exists; guarded by mu
}

type note struct {
	done func(error)
	err  error
}

func newNotifier() *notifier {
	n := &notifier{}
	n.idle = sync.NewCond(&n.mu)
	return n
}

// post queues done(err) to be called from the notifier goroutine, in post order.
func (n *notifier) post(done func(error), err error) {
	n.mu.Lock()
	n.q = append(n.q, note{done, err})
	if !n.running {
		n.running = true
		go n.drain()
	}
	n.mu.Unlock()
}

func (n *notifier) drain() {
	for {
		n.mu.Lock()
		q := n.q
		n.q = nil
		if len(q) == 0 {
			n.running = false
			n.idle.Broadcast()
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		for i := range q {
			q[i].done(q[i].err)
			q[i] = note{}
		}
	}
}

// wait returns once every posted callback has been called.
func (n *notifier) wait() {
	n.mu.Lock()
	for n.running {
		n.idle.Wait()
	}
	n.mu.Unlock()
}
