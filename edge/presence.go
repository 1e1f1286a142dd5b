package edge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-io/switchboard/router/presence"
)

// reporter sends the edge's presence to Config.Presence from one goroutine (and renews the
// lease from a second, so that slow Applies cannot make it lapse). Loops push ops into a
// bounded queue (never blocking); the reporter batches them into Apply calls, and re-sends the
// full state with Sync after registering, after ErrLeaseLost, after a failed Apply (the store
// was unavailable), when the queue overflowed, or when asked. It acks, by sequence number, the
// ops the store has: the loops hold new connections' hellos until then (hello.go).
type reporter struct {
	s *Server
	p Presence

	mu       sync.Mutex
	q        []presence.Op
	qs       []uint64 // q's sequence numbers
	pushed   uint64   // sequence number of the last op pushed
	overflow bool     // ops were dropped: a full Sync is needed
	wake     chan struct{}

	// acked is the sequence number up to which every op is in the store (applied, or part of
	// a Sync's snapshot): a connection whose connect op is at or below it is reachable.
	acked atomic.Uint64

	epoch     atomic.Uint64 // registered epoch; 0 = not registered
	stopped   atomic.Bool
	syncs     atomic.Uint64
	applied   atomic.Uint64
	snapFails atomic.Uint64 // Syncs not sent: a loop did not answer the snapshot
}

func newReporter(s *Server) *reporter {
	return &reporter{s: s, p: s.cfg.Presence, wake: make(chan struct{}, 1)}
}

// presenceOp queues op for the reporter and returns its sequence number (0 without presence).
// Safe from any goroutine; never blocks.
func (s *Server) presenceOp(op presence.Op) uint64 {
	if s.pres != nil {
		return s.pres.push(op)
	}
	return 0
}

// ResyncPresence asks the reporter to re-send the edge's full presence state (anti-entropy).
func (s *Server) ResyncPresence() {
	if s.pres != nil {
		s.pres.mu.Lock()
		s.pres.overflow = true
		s.pres.mu.Unlock()
		s.pres.signal()
	}
}

func (r *reporter) push(op presence.Op) uint64 {
	r.mu.Lock()
	r.pushed++
	seq := r.pushed
	if len(r.q) >= r.s.cfg.PresenceQueue {
		r.overflow = true // the Sync that follows covers the dropped ops
		r.q, r.qs = r.q[:0], r.qs[:0]
	} else {
		r.q = append(r.q, op)
		r.qs = append(r.qs, seq)
	}
	r.mu.Unlock()
	r.signal()
	return seq
}

// ack records that every op up to seq is in the store and lets the loops send the hellos
// that waited for it.
func (r *reporter) ack(seq uint64) {
	for {
		cur := r.acked.Load()
		if seq <= cur {
			return
		}
		if r.acked.CompareAndSwap(cur, seq) {
			break
		}
	}
	r.s.hellosAcked()
}

func (r *reporter) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take removes up to n queued ops and returns the sequence number of the last; sync reports
// whether a full Sync is due instead.
func (r *reporter) take(dst []presence.Op, n int) (ops []presence.Op, last uint64, sync bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.overflow {
		r.overflow = false
		r.q, r.qs = r.q[:0], r.qs[:0]
		return dst[:0], 0, true
	}
	k := min(n, len(r.q))
	dst = append(dst[:0], r.q[:k]...)
	if k > 0 {
		last = r.qs[k-1]
	}
	rest := copy(r.q, r.q[k:])
	clear(r.q[rest:])
	r.q = r.q[:rest]
	r.qs = r.qs[:copy(r.qs, r.qs[k:])]
	return dst, last, false
}

// clearQueue drops the queued ops (a Sync's snapshot follows) and returns the sequence number
// of the last op pushed: the snapshot covers every op up to it.
func (r *reporter) clearQueue() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.q)
	r.q, r.qs = r.q[:0], r.qs[:0]
	r.overflow = false
	return r.pushed
}

func (r *reporter) pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.q) > 0 || r.overflow
}

func (r *reporter) run(ctx context.Context) {
	cfg := &r.s.cfg
	log := r.s.log
	backoff := 50 * time.Millisecond
	needSync := true
	var batch []presence.Op
	// The lease is renewed on a goroutine of its own, so that slow Applies (a storm of
	// connects against a loaded router) cannot make it lapse.
	var renewWG sync.WaitGroup
	renewWG.Add(1)
	go func() { defer renewWG.Done(); r.renew(ctx) }()
	defer renewWG.Wait()
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	fail := func(what string, err error) bool {
		log.Warn("edge: presence "+what, "err", err)
		ok := sleep(backoff)
		backoff = min(2*backoff, time.Second)
		return ok
	}
	for ctx.Err() == nil && !r.stopped.Load() {
		epoch := r.epoch.Load()
		if epoch == 0 {
			c, cancel := context.WithTimeout(ctx, cfg.PresenceLease)
			e, err := r.p.Register(c, cfg.ID, cfg.PresenceLease)
			cancel()
			if err != nil {
				if !fail("register", err) {
					return
				}
				continue
			}
			r.epoch.Store(e)
			r.s.addEpoch(e)
			needSync = true
			continue
		}
		if !needSync {
			var ops []presence.Op
			var last uint64
			ops, last, needSync = r.take(batch, cfg.PresenceBatch)
			batch = ops
			if len(ops) > 0 {
				c, cancel := context.WithTimeout(ctx, cfg.PresenceLease)
				err := r.p.Apply(c, cfg.ID, epoch, ops)
				cancel()
				clear(batch)
				switch {
				case errors.Is(err, presence.ErrLeaseLost):
					r.leaseLost(epoch, "apply")
					continue
				case err != nil:
					needSync = true // the store may have missed the batch: re-send everything
					if !fail("apply", err) {
						return
					}
					continue
				}
				r.applied.Add(uint64(len(ops)))
				r.ack(last)
				backoff = 50 * time.Millisecond
			}
		}
		if needSync {
			covered := r.clearQueue() // ops queued so far are part of the snapshot
			conns, rooms, err := r.s.snapshotAll(ctx, epoch)
			if err != nil { // a partial snapshot would tell the store those connections are gone
				r.snapFails.Add(1)
				if !fail("sync", err) {
					return
				}
				continue
			}
			c, cancel := context.WithTimeout(ctx, 2*cfg.PresenceLease)
			err = r.p.Sync(c, cfg.ID, epoch, conns, rooms)
			cancel()
			switch {
			case errors.Is(err, presence.ErrLeaseLost):
				r.leaseLost(epoch, "sync")
				continue
			case err != nil:
				if !fail("sync", err) {
					return
				}
				continue
			}
			r.syncs.Add(1)
			r.ack(covered)
			needSync = false
			backoff = 50 * time.Millisecond
		}
		if r.pending() {
			// Let a batch build up for PresenceFlush, unless it is already full.
			r.mu.Lock()
			full := len(r.q) >= cfg.PresenceBatch || r.overflow
			r.mu.Unlock()
			// No batching delay while hellos wait for these ops.
			if !full && r.s.hellosWaiting.Load() == 0 && !sleep(cfg.PresenceFlush) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
	}
}

// renew renews the registered lease every PresenceLease/3 until ctx ends or the reporter
// stops. A lost lease makes run register again.
func (r *reporter) renew(ctx context.Context) {
	cfg := &r.s.cfg
	t := time.NewTicker(max(cfg.PresenceLease/3, time.Millisecond))
	defer t.Stop()
	var lastWarn time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		epoch := r.epoch.Load()
		if epoch == 0 || r.stopped.Load() {
			continue
		}
		c, cancel := context.WithTimeout(ctx, cfg.PresenceLease)
		err := r.p.Renew(c, cfg.ID, epoch)
		cancel()
		switch {
		case errors.Is(err, presence.ErrLeaseLost):
			r.leaseLost(epoch, "renew")
			r.signal()
		case err != nil && ctx.Err() == nil && time.Since(lastWarn) > 10*time.Second:
			lastWarn = time.Now()
			r.s.log.Warn("edge: presence renew", "err", err)
		}
	}
}

// deregister ends the lease (graceful shutdown) and stops the reporter.
func (r *reporter) deregister(ctx context.Context) {
	r.stopped.Store(true)
	if e := r.epoch.Swap(0); e != 0 {
		if err := r.p.Deregister(ctx, r.s.cfg.ID, e); err != nil {
			r.s.log.Warn("edge: presence deregister", "err", err)
		}
	}
}

// errSnapshotTimeout: a loop did not answer a snapshot request in time.
var errSnapshotTimeout = errors.New("edge: a loop did not answer the presence snapshot in time")

// snapshotAll collects every loop's connections and rooms (bounded wait per loop). It fails
// when a loop does not answer in time: a Sync without that loop's connections would report
// them gone (their users offline) until the next Sync.
func (s *Server) snapshotAll(ctx context.Context, epoch uint64) ([]presence.Conn, map[string][]uint64, error) {
	var conns []presence.Conn
	rooms := make(map[string][]uint64)
	for _, l := range *s.loops.Load() {
		ch := make(chan snapshot, 1)
		if !l.enqueue(task{kind: tSnapshot, snap: ch}) {
			continue
		}
		t := time.NewTimer(s.snapWait)
		select {
		case sn := <-ch:
			conns = append(conns, sn.conns...)
			for name, ids := range sn.rooms {
				rooms[name] = append(rooms[name], ids...)
			}
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
			return nil, nil, errSnapshotTimeout
		}
		t.Stop()
	}
	for i := range conns {
		conns[i].Edge = s.cfg.ID
		conns[i].Epoch = epoch
	}
	return conns, rooms, nil
}

// leaseLost forgets epoch after the store refused it (the lease lapsed and the edge was reaped,
// or Redis lost its data): the edge registers again and re-sends its state; until then its
// users look offline to the cluster.
func (r *reporter) leaseLost(epoch uint64, during string) {
	if r.epoch.CompareAndSwap(epoch, 0) {
		r.s.log.Warn("edge: presence lease lost; registering again", "epoch", epoch, "during", during)
	}
}
