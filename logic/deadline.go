package logic

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is a frame's ctx: context.WithDeadline on a never-ending parent, without
// a runtime timer until something waits on Done (or registers an AfterFunc). Most frames end
// long before their deadline and nothing waits on them (the in-memory stores and bus only ask
// Err); a timer armed and stopped per frame, with the timerCtx around it, cost 3% of the
// embedded binary's CPU. Err checks the clock, so the deadline holds either way.
type deadlineCtx struct {
	context.Context // the parent, without cancellation (context.WithoutCancel): values only
	deadline        time.Time
	ended           atomic.Bool // err is set

	mu    sync.Mutex
	done  chan struct{} // made by the first Done; guarded by mu
	err   error         // context.DeadlineExceeded or context.Canceled, set once; guarded by mu
	timer *time.Timer   // ends c at the deadline, armed by the first Done or AfterFunc; guarded by mu
	funcs []*func()     // AfterFunc callbacks not yet run or stopped; guarded by mu
}

// withDeadline returns a ctx with parent's values ending at deadline, and its cancel
// function. parent must never end (context.WithoutCancel): c watches only its own deadline.
func withDeadline(parent context.Context, deadline time.Time) (*deadlineCtx, context.CancelFunc) {
	c := &deadlineCtx{Context: parent, deadline: deadline}
	return c, func() { c.end(context.Canceled) }
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		} else {
			c.arm()
		}
	}
	return c.done
}

func (c *deadlineCtx) Err() error {
	if !c.ended.Load() {
		if time.Now().Before(c.deadline) {
			return nil
		}
		c.end(context.DeadlineExceeded)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// AfterFunc implements the interface context.AfterFunc and context.WithCancel look for on a
// parent, so that children of c need no goroutine to watch it.
func (c *deadlineCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	c.arm()
	p := &f
	c.funcs = append(c.funcs, p)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.funcs, p)
		if i < 0 {
			return false
		}
		c.funcs = slices.Delete(c.funcs, i, i+1)
		return true
	}
}

func (c *deadlineCtx) String() string { return "logic.frameContext" }

// arm starts the deadline timer once. Called with c.mu held and c.err nil.
func (c *deadlineCtx) arm() {
	if c.timer == nil {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
	}
}

// end ends c with err unless it already ended.
func (c *deadlineCtx) end(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.ended.Store(true)
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	fs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, f := range fs {
		go (*f)()
	}
}
