package bus

import (
	"context"
	"sync"
)

// keyedPool runs a subscription's handlers on n goroutines: a key always goes to the same one,
// which runs its work in submission order, so one key's messages are still handled one at a
// time and in order while different keys are handled in parallel (SubOptions.Concurrency).
type keyedPool struct {
	queues []chan func()
	wg     sync.WaitGroup
}

// newKeyedPool starts n workers, each with a queue of depth tasks.
func newKeyedPool(n, depth int) *keyedPool {
	p := &keyedPool{queues: make([]chan func(), n)}
	for i := range p.queues {
		q := make(chan func(), depth)
		p.queues[i] = q
		p.wg.Go(func() {
			for fn := range q {
				fn()
			}
		})
	}
	return p
}

// submit queues fn on key's worker, blocking while that worker's queue is full (back pressure
// on the consumer, so it stops taking messages from the broker). It returns false, without
// queueing fn, when ctx ends first.
func (p *keyedPool) submit(ctx context.Context, key string, fn func()) bool {
	q := p.queues[hashKey(key)%uint32(len(p.queues))]
	select {
	case q <- fn:
		return true
	default:
	}
	select {
	case q <- fn:
		return true
	case <-ctx.Done():
		return false
	}
}

// stop lets every worker finish its queue (each task checks for itself whether the consumer is
// closing) and waits for them. No submit may follow.
func (p *keyedPool) stop() {
	for _, q := range p.queues {
		close(q)
	}
	p.wg.Wait()
}

// poolDepth is the per-worker queue depth for a consumer prefetching receiverQueue messages
// over n workers.
func poolDepth(receiverQueue, n int) int {
	return max(4, receiverQueue/n)
}
