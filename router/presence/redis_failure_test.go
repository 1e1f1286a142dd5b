//go:build integration

package presence_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
)

// fakeEdge plays the edge side of the lease protocol: it renews every ttl/3 and, on
// ErrLeaseLost, registers again and Syncs its full state (what the real edge does).
type fakeEdge struct {
	s     presence.Store
	id    string
	ttl   time.Duration
	conns []presence.Conn
	rooms map[string][]uint64

	mu       sync.Mutex
	epoch    uint64
	resyncs  int
	lastSync time.Time
	renewing bool
}

func (e *fakeEdge) start(ctx context.Context, t *testing.T) (stop func()) {
	t.Helper()
	if err := e.resync(ctx); err != nil {
		t.Fatalf("edge %s start: %v", e.id, err)
	}
	e.renewing = true
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(e.ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			e.mu.Lock()
			ep := e.epoch
			e.mu.Unlock()
			err := e.s.Renew(ctx, e.id, ep)
			if errors.Is(err, presence.ErrLeaseLost) {
				_ = e.resyncFrom(ctx, ep) // retried at the next tick on failure
			}
		}
	}()
	return func() { cancel(); <-done }
}

// resyncFrom re-registers and Syncs unless the edge already left epoch from. resync and
// resyncFrom hold e.mu throughout, so a test can keep the edge from re-syncing while it makes
// Redis lose data (see flushAll).
func (e *fakeEdge) resyncFrom(ctx context.Context, from uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.epoch != from {
		return nil
	}
	return e.resyncLocked(ctx)
}

func (e *fakeEdge) resync(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resyncLocked(ctx)
}

func (e *fakeEdge) resyncLocked(ctx context.Context) error {
	ep, err := e.s.Register(ctx, e.id, e.ttl)
	if err != nil {
		return err
	}
	if err := e.s.Sync(ctx, e.id, ep, e.conns, e.rooms); err != nil {
		return err
	}
	e.epoch = ep
	e.resyncs++
	e.lastSync = time.Now()
	return nil
}

func edgeState(prefix string, n int) ([]presence.Conn, map[string][]uint64) {
	conns := make([]presence.Conn, n)
	rooms := map[string][]uint64{}
	for i := range conns {
		conns[i] = presence.Conn{ConnID: uint64(i + 1), User: fmt.Sprintf("%s-user-%d", prefix, i), Meta: map[string]string{"d": "web"}}
		r := fmt.Sprintf("room-%d", i%10)
		rooms[r] = append(rooms[r], uint64(i+1))
	}
	return conns, rooms
}

func users(conns []presence.Conn) []string {
	out := make([]string, len(conns))
	for i, c := range conns {
		out[i] = c.User
	}
	return out
}

// flushAll makes Redis lose the store's data. By default it deletes every key under the
// store's prefix on every master (for this store exactly what FLUSHALL does: the script cache
// survives both) so that tests running at the same time against the same Redis keep their
// keys; with SB_ROUTER_REAL_FLUSHALL=1 it runs a real FLUSHALL on every master.
func flushAll(t *testing.T, c redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	real := os.Getenv("SB_ROUTER_REAL_FLUSHALL") == "1"
	if !real {
		// The registration set first: the reaper only acts on registrations listed there, so
		// it cannot act on a half-deleted state, which an atomic FLUSHALL never shows it.
		if err := c.Unlink(ctx, prefix+"{g}:edges").Err(); err != nil {
			t.Fatalf("wipe: %v", err)
		}
	}
	del := func(ctx context.Context, n *redis.Client) error {
		if real {
			return n.FlushAll(ctx).Err()
		}
		var keys []string
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		_, err := n.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Unlink(ctx, k)
			}
			return nil
		})
		return err
	}
	var err error
	switch cc := c.(type) {
	case *redis.ClusterClient:
		err = cc.ForEachMaster(ctx, del)
	case *redis.Client:
		err = del(ctx, cc)
	}
	if err != nil {
		t.Fatalf("FLUSHALL (real=%v): %v", real, err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaseLapse (default 3s lease, two router replicas): an edge stops renewing; a query on
// the OTHER replica stops returning its users within the lease time, and the offline events
// fire within lease + RefreshInterval + reap time.
func TestLeaseLapseStandalone(t *testing.T) { testLeaseLapseDefault(t, "SB_REDIS_ADDR") }
func TestLeaseLapseCluster(t *testing.T)    { testLeaseLapseDefault(t, "SB_REDIS_CLUSTER_ADDRS") }

func testLeaseLapseDefault(t *testing.T, env string) {
	c := newRedisClient(t, env)
	prefix := testPrefix()
	t.Cleanup(func() { cleanupPrefix(c, prefix) })
	mk := func() *presence.RedisStore {
		s, err := presence.NewRedisStore(presence.RedisConfig{Client: c, Prefix: prefix}) // defaults: 3s lease, 200ms refresh
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	r1, r2 := mk(), mk()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, err := r2.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conns, rooms := edgeState("lapse", 200)
	edge := &fakeEdge{s: r1, id: "edge-dying", ttl: presence.DefaultLeaseTTL, conns: conns, rooms: rooms}
	stop := edge.start(ctx, t)
	live := &fakeEdge{s: r1, id: "edge-live", ttl: 30 * time.Second, // the control: a long lease, so load cannot lapse it
		conns: conns[:1], rooms: nil}
	stopLive := live.start(ctx, t)
	defer stopLive()
	if m, err := r2.ResolveUsers(ctx, users(conns)); err != nil || len(m) != len(conns) {
		t.Fatalf("before lapse: %d users, err %v", len(m), err)
	}
	// Drain the online events.
	online := 0
	for online < len(conns) {
		select {
		case ev := <-evs:
			if ev.Kind == presence.EventUserOnline {
				online++
			}
		case <-ctx.Done():
			t.Fatalf("online events: %d of %d", online, len(conns))
		}
	}
	stop() // the edge dies: no more renewals
	edge.mu.Lock()
	epoch := edge.epoch
	edge.mu.Unlock()
	if err := r1.Renew(ctx, edge.id, epoch); err != nil { // last renewal: the lease runs from here
		t.Fatal(err)
	}
	lastRenew := time.Now()
	offline := map[string]bool{}
	var offlineAt time.Duration
	hidden := waitUntil(t, presence.DefaultLeaseTTL+time.Second, "users hidden", func() error {
		m, err := r2.ResolveUsers(ctx, users(conns))
		if err != nil {
			return err
		}
		if len(m) != 1 || m[conns[0].User][0].Edge != "edge-live" {
			return fmt.Errorf("%d users still resolve", len(m))
		}
		rc, err := r2.RoomCounts(ctx, []string{"room-0", "room-1"})
		if err != nil {
			return err
		}
		if len(rc) != 0 {
			return fmt.Errorf("room counts %v", rc)
		}
		return nil
	})
	for len(offline) < len(conns)-1 {
		select {
		case ev := <-evs:
			if ev.Kind == presence.EventUserOffline {
				offline[ev.User] = true
				offlineAt = time.Since(lastRenew)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("offline events: %d of %d", len(offline), len(conns)-1)
		}
	}
	if offline[conns[0].User] {
		t.Fatalf("user with a live connection got an offline event")
	}
	t.Logf("lease %v: queries hid the dead edge %v after its last renewal; all %d offline events by %v",
		presence.DefaultLeaseTTL, hidden, len(offline), offlineAt)
}

// TestFlushAll: Redis loses everything under running edges. The edges see ErrLeaseLost at
// their next renewal, register again and Sync: presence is whole again within one renewal
// interval (lease/3) plus the Sync time, and no client reconnects.
func TestFlushAllStandalone(t *testing.T) { testFlushAll(t, "SB_REDIS_ADDR") }
func TestFlushAllCluster(t *testing.T)    { testFlushAll(t, "SB_REDIS_CLUSTER_ADDRS") }

func testFlushAll(t *testing.T, env string) {
	c := newRedisClient(t, env)
	prefix := testPrefix()
	t.Cleanup(func() { cleanupPrefix(c, prefix) })
	s := newRedisStore(t, c, prefix)
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ttl = presence.DefaultLeaseTTL
	var edges []*fakeEdge
	var all []string
	for i := 0; i < 3; i++ {
		conns, rooms := edgeState(fmt.Sprintf("e%d", i), 1000)
		e := &fakeEdge{s: s, id: fmt.Sprintf("edge-%d", i), ttl: ttl, conns: conns, rooms: rooms}
		stop := e.start(ctx, t)
		defer stop()
		edges = append(edges, e)
		all = append(all, users(conns)...)
	}
	whole := func() error {
		m, err := s.ResolveUsers(ctx, all)
		if err != nil {
			return err
		}
		if len(m) != len(all) {
			return fmt.Errorf("%d of %d users resolve", len(m), len(all))
		}
		rc, err := s.RoomCounts(ctx, []string{"room-0"})
		if err != nil {
			return err
		}
		if rc["room-0"] != 300 {
			return fmt.Errorf("room-0 has %d members", rc["room-0"])
		}
		on, err := s.Online(ctx)
		if err != nil {
			return err
		}
		if on.Connections != 3000 || on.Users != 3000 {
			return fmt.Errorf("online: %d conns, %d users", on.Connections, on.Users)
		}
		return nil
	}
	waitUntil(t, 5*time.Second, "initial state", whole)
	// The loss is atomic for the edges, as a FLUSHALL is: none re-syncs while it happens.
	for _, e := range edges {
		e.mu.Lock()
	}
	flushAll(t, c, prefix)
	for _, e := range edges {
		e.mu.Unlock()
	}
	flushed := time.Now()
	// One renewal interval + register/sync + refresh, with slack for a loaded machine. Typical:
	// about ttl/3 (see the log line).
	bound := ttl/3 + 6*time.Second
	took := waitUntil(t, bound, "presence whole after FLUSHALL", whole)
	for _, e := range edges {
		e.mu.Lock()
		if e.resyncs != 2 {
			t.Errorf("edge %s resynced %d times, want 2 (start + flush)", e.id, e.resyncs)
		}
		t.Logf("edge %s re-synced %v after the flush", e.id, e.lastSync.Sub(flushed))
		e.mu.Unlock()
	}
	t.Logf("FLUSHALL: presence of 3 edges x 1000 conns whole again %v later (bound %v)", took, bound)
}

// TestReplicas: writes through one replica are read, evented and reaped through another.
func TestReplicasStandalone(t *testing.T) { testReplicas(t, "SB_REDIS_ADDR") }
func TestReplicasCluster(t *testing.T)    { testReplicas(t, "SB_REDIS_CLUSTER_ADDRS") }

func testReplicas(t *testing.T, env string) {
	c := newRedisClient(t, env)
	prefix := testPrefix()
	t.Cleanup(func() { cleanupPrefix(c, prefix) })
	r1 := newRedisStore(t, c, prefix)
	r2 := newRedisStore(t, c, prefix)
	t.Cleanup(func() { _ = r1.Close(); _ = r2.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	evs, err := r2.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := r1.Register(ctx, "e", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Apply(ctx, "e", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "alice"}}); err != nil {
		t.Fatal(err)
	}
	m, err := r2.ResolveUsers(ctx, []string{"alice"})
	if err != nil || len(m["alice"]) != 1 {
		t.Fatalf("resolve on replica 2: %v %v", m, err)
	}
	if ev := <-evs; ev.Kind != presence.EventUserOnline || ev.User != "alice" {
		t.Fatalf("event %+v", ev)
	}
	// A restart registered through replica 2 hides the old epoch on replica 1 within its
	// refresh interval.
	ep2, err := r2.Register(ctx, "e", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Apply(ctx, "e", ep2, []presence.Op{{Kind: presence.OpConnect, ConnID: 9, User: "alice"}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "old epoch hidden on replica 1", func() error {
		m, err := r1.ResolveUsers(ctx, []string{"alice"})
		if err != nil {
			return err
		}
		if len(m["alice"]) != 1 || m["alice"][0].Epoch != ep2 {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	// The old epoch is reaped (by either replica) without an offline event: alice stayed online.
	waitUntil(t, 3*time.Second, "old epoch reaped", func() error {
		n, err := c.Exists(ctx, prefix+"{e.e}:"+fmt.Sprint(ep)+":c").Result()
		if err != nil || n != 0 {
			return fmt.Errorf("old conns key exists=%d err=%v", n, err)
		}
		return nil
	})
	select {
	case ev := <-evs:
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

// TestScriptCacheLost: SCRIPT FLUSH (what a Redis restart does to the script cache) does not
// break pipelined EVALSHA calls.
func TestScriptCacheLost(t *testing.T) {
	c := newRedisClient(t, "SB_REDIS_ADDR")
	prefix := testPrefix()
	t.Cleanup(func() { cleanupPrefix(c, prefix) })
	s := newRedisStore(t, c, prefix)
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	ep, err := s.Register(ctx, "e", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ops := []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "a"}, {Kind: presence.OpConnect, ConnID: 2, User: "b"},
		{Kind: presence.OpJoin, ConnID: 1, Room: "r"}}
	if err := s.Apply(ctx, "e", ep, ops); err != nil {
		t.Fatalf("Apply after SCRIPT FLUSH: %v", err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, "e", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 3, User: "c"}, {Kind: presence.OpJoin, ConnID: 2, Room: "r"}}); err != nil {
		t.Fatalf("Apply after second SCRIPT FLUSH: %v", err)
	}
	m, err := s.ResolveUsers(ctx, []string{"a", "b", "c"})
	if err != nil || len(m) != 3 {
		t.Fatalf("resolve: %v %v", m, err)
	}
	rc, err := s.RoomCounts(ctx, []string{"r"})
	if err != nil || rc["r"] != 2 {
		t.Fatalf("room counts %v %v", rc, err)
	}
}
