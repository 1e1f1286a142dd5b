//go:build integration

package presence_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// flushAll makes Redis lose the store's data. By default it deletes every key under the
// store's prefix on every master (for this store exactly what FLUSHALL does: the script cache
// survives both) so that tests running at the same time against the same Redis keep their
// keys; with SB_ROUTER_REAL_FLUSHALL=1 it runs a real FLUSHALL on every master.
func flushAll(t *testing.T, c redis.UniversalClient, prefix string) {
	t.Helper()
	if os.Getenv("SB_ROUTER_REAL_FLUSHALL") != "1" {
		presencetest.WipePrefix(t, c, prefix)
		return
	}
	err := presencetest.ForEachMaster(context.Background(), c, func(ctx context.Context, n *redis.Client) error {
		return n.FlushAll(ctx).Err()
	})
	if err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
}

// TestLeaseLapse (default 3s lease, two router replicas): an edge stops renewing; a query on
// the OTHER replica stops returning its users within the lease time, and the offline events
// fire within lease + RefreshInterval + reap time.
func TestLeaseLapseStandalone(t *testing.T) { testLeaseLapseDefault(t, "SB_REDIS_ADDR") }
func TestLeaseLapseCluster(t *testing.T)    { testLeaseLapseDefault(t, "SB_REDIS_CLUSTER_ADDRS") }

func testLeaseLapseDefault(t *testing.T, env string) {
	c := presencetest.RedisClient(t, env)
	prefix := presencetest.RedisPrefix()
	t.Cleanup(func() { presencetest.WipePrefix(nil, c, prefix) })
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
	conns, rooms := presencetest.EdgeState("lapse", 200)
	edge := &presencetest.SimEdge{P: r1, ID: "edge-dying", TTL: presence.DefaultLeaseTTL, Conns: conns, Rooms: rooms}
	stop := edge.Start(ctx, t)
	live := &presencetest.SimEdge{P: r1, ID: "edge-live", TTL: 30 * time.Second, // the control: a long lease, so load cannot lapse it
		Conns: conns[:1], Rooms: nil}
	stopLive := live.Start(ctx, t)
	defer stopLive()
	if m, err := r2.ResolveUsers(ctx, presencetest.Users(conns)); err != nil || len(m) != len(conns) {
		t.Fatalf("before lapse: %d users, err %v", len(m), err)
	}
	presencetest.AwaitOnline(ctx, t, evs, len(conns))
	stop() // the edge dies: no more renewals
	// The last renewal: the lease runs from here.
	if err := r1.Renew(ctx, edge.ID, edge.Current()); err != nil {
		t.Fatal(err)
	}
	lastRenew := time.Now()
	hidden := presencetest.WaitUntil(t, presence.DefaultLeaseTTL+time.Second, "users hidden", func() error {
		m, err := r2.ResolveUsers(ctx, presencetest.Users(conns))
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
	offline, offlineAt := presencetest.AwaitOffline(t, evs, len(conns)-1, "edge-dying", lastRenew)
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
	c := presencetest.RedisClient(t, env)
	prefix := presencetest.RedisPrefix()
	t.Cleanup(func() { presencetest.WipePrefix(nil, c, prefix) })
	s := newRedisStore(t, c, prefix)
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ttl = presence.DefaultLeaseTTL
	fleet := presencetest.StartFleet(ctx, t, s, 3, 1000, ttl)
	whole := func() error { return fleet.Whole(ctx, s) }
	presencetest.WaitUntil(t, 5*time.Second, "initial state", whole)
	flushed := fleet.Lose(func() { flushAll(t, c, prefix) })
	// One renewal interval + register/sync + refresh, with slack for a loaded machine. Typical:
	// about ttl/3 (see the log line).
	bound := ttl/3 + 6*time.Second
	took := presencetest.WaitUntil(t, bound, "presence whole after FLUSHALL", whole)
	fleet.CheckResynced(t, flushed)
	t.Logf("FLUSHALL: presence of 3 edges x 1000 conns whole again %v later (bound %v)", took, bound)
}

// TestReplicas: writes through one replica are read, evented and reaped through another.
func TestReplicasStandalone(t *testing.T) { testReplicas(t, "SB_REDIS_ADDR") }
func TestReplicasCluster(t *testing.T)    { testReplicas(t, "SB_REDIS_CLUSTER_ADDRS") }

func testReplicas(t *testing.T, env string) {
	c := presencetest.RedisClient(t, env)
	prefix := presencetest.RedisPrefix()
	t.Cleanup(func() { presencetest.WipePrefix(nil, c, prefix) })
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
	presencetest.WaitUntil(t, time.Second, "old epoch hidden on replica 1", func() error {
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
	// Her set of connections changed twice (the new epoch's connection, the old one reaped).
	presencetest.WaitUntil(t, 3*time.Second, "old epoch reaped", func() error {
		n, err := c.Exists(ctx, prefix+"{e.e}:"+fmt.Sprint(ep)+":c").Result()
		if err != nil || n != 0 {
			return fmt.Errorf("old conns key exists=%d err=%v", n, err)
		}
		return nil
	})
	for changed := 0; changed < 2; {
		select {
		case ev := <-evs:
			if ev.Kind != presence.EventUserChanged || ev.User != "alice" {
				t.Fatalf("unexpected event %+v", ev)
			}
			changed++
		case <-time.After(3 * time.Second):
			t.Fatalf("changed events: %d of 2", changed)
		}
	}
	select {
	case ev := <-evs:
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

// TestScriptCacheLost: SCRIPT FLUSH (what a Redis restart does to the script cache) does not
// break pipelined EVALSHA calls.
func TestScriptCacheLost(t *testing.T) {
	c := presencetest.RedisClient(t, "SB_REDIS_ADDR")
	prefix := presencetest.RedisPrefix()
	t.Cleanup(func() { presencetest.WipePrefix(nil, c, prefix) })
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

// TestEventsKilledConnection: Redis drops the store's pub/sub connection (CLIENT KILL, as on a
// Redis restart or a cut connection). go-redis re-subscribes by itself and says nothing, so
// whatever was published in between is lost: the store must end the subscription (its
// receiver, e.g. a router client's cache, learns that it missed events), and a new
// subscription receives events again.
func TestEventsKilledConnectionStandalone(t *testing.T) { testEventsKilled(t, "SB_REDIS_ADDR") }
func TestEventsKilledConnectionCluster(t *testing.T)    { testEventsKilled(t, "SB_REDIS_CLUSTER_ADDRS") }

func testEventsKilled(t *testing.T, env string) {
	name := "sbtest-" + strings.TrimSuffix(presencetest.RedisPrefix(), ":")
	admin := presencetest.RedisClient(t, env)
	c := presencetest.RedisClient(t, env, func(o *redis.UniversalOptions) { o.ClientName = name }) // only the store's connections carry it
	prefix := presencetest.RedisPrefix()
	t.Cleanup(func() { presencetest.WipePrefix(nil, admin, prefix) })
	s := newRedisStore(t, c, prefix)
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	evs, err := s.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := s.Register(ctx, "e", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(id uint64, user string) {
		t.Helper()
		if err := s.Apply(ctx, "e", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: id, User: user}}); err != nil {
			t.Fatal(err)
		}
	}
	connect(1, "before")
	presencetest.AwaitOnline(ctx, t, evs, 1)

	killed := 0
	err = presencetest.ForEachMaster(ctx, admin, func(ctx context.Context, n *redis.Client) error {
		list, err := n.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " cmd=subscribe") {
				id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
				if err := n.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
					return err
				}
				killed++
			}
		}
		return nil
	})
	if err != nil || killed == 0 {
		t.Fatalf("killing the store's pub/sub connection: killed %d, err %v", killed, err)
	}
	end := time.After(5 * time.Second)
	for ended := false; !ended; { // ended, not silently short of events
		select {
		case _, ok := <-evs:
			ended = !ok
		case <-end:
			t.Fatal("the subscription went on after its connection was killed: what was published meanwhile is lost without a word")
		}
	}

	// A new subscription gets events again (one that joined before the re-subscription was
	// confirmed is ended too: subscribe again).
	n := 0
	presencetest.WaitUntil(t, 10*time.Second, "events on a new subscription", func() error {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		evs, err := s.Events(sctx)
		if err != nil {
			return err
		}
		n++
		user := fmt.Sprintf("after-%d", n)
		connect(uint64(100+n), user)
		for ev := range evs {
			if ev.Kind == presence.EventUserOnline && ev.User == user {
				return nil
			}
		}
		return fmt.Errorf("subscription %d ended without %s's online event", n, user)
	})
}
