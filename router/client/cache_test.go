package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
	"github.com/switchboard-io/switchboard/router/server"
)

func nconns(t *testing.T, c *client.Client, user string) int {
	t.Helper()
	m, err := c.ResolveUsers(context.Background(), []string{user})
	if err != nil {
		t.Fatal(err)
	}
	return len(m[user])
}

// TestCacheInvalidation: with cache TTLs far longer than the test, every change of a user's
// connections (online, a second device, a device leaving, offline) reaches the cache through
// its event long before the TTL; an Apply through the reading client invalidates what it
// touched; a room change, which has no event, stays cached (bounded by CacheTTL, shown with a
// short-TTL client).
func TestCacheInvalidation(t *testing.T) {
	ctx := context.Background()
	mem := newMemory(t)
	edge, srv := serve(t, mem, client.Config{CacheTTL: -1})
	logic := newClient(t, srv, client.Config{CacheTTL: time.Minute, UserCacheTTL: time.Minute})
	short := newClient(t, srv, client.Config{CacheTTL: 300 * time.Millisecond, UserCacheTTL: time.Minute})

	ep, err := edge.Register(ctx, "edge-a", time.Minute) // no renewals needed during the test
	if err != nil {
		t.Fatal(err)
	}
	members := func(c *client.Client, room string) int {
		t.Helper()
		re, err := c.RoomEdges(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range re {
			n += e.Members
		}
		return n
	}
	// Wait until both caches are live (their event watch is connected): a cached room answer
	// then survives a change without an event.
	id := uint64(100)
	for _, c := range []*client.Client{logic, short} {
		presencetest.WaitUntil(t, 5*time.Second, "cache live", func() error {
			// A fresh probe room per attempt: one member, then a second one (no event). A live
			// cache keeps answering 1.
			id += 2
			room := fmt.Sprintf("probe-%d", id)
			if err := edge.Apply(ctx, "edge-a", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: id, User: "p"},
				{Kind: presence.OpJoin, ConnID: id, Room: room}}); err != nil {
				t.Fatal(err)
			}
			if n := members(c, room); n != 1 {
				return fmt.Errorf("%s has %d members", room, n)
			}
			if err := edge.Apply(ctx, "edge-a", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: id + 1, User: "q"},
				{Kind: presence.OpJoin, ConnID: id + 1, Room: room}}); err != nil {
				t.Fatal(err)
			}
			if n := members(c, room); n != 1 {
				return fmt.Errorf("cache not live yet (%d members)", n)
			}
			return nil
		})
	}
	// A room change without an event: the 1-minute cache keeps the old answer, the 300ms cache
	// sees it within its TTL.
	const room = "lobby"
	if err := edge.Apply(ctx, "edge-a", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "r"},
		{Kind: presence.OpJoin, ConnID: 1, Room: room}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{logic, short} {
		if n := members(c, room); n != 1 {
			t.Fatalf("%s %d members", room, n)
		}
	}
	if err := edge.Apply(ctx, "edge-a", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 2, User: "s"},
		{Kind: presence.OpJoin, ConnID: 2, Room: room}}); err != nil {
		t.Fatal(err)
	}
	if n := members(logic, room); n != 1 {
		t.Fatalf("long-TTL cache: %s %d members, want the cached 1", room, n)
	}
	took := presencetest.WaitUntil(t, 2*time.Second, "TTL bound", func() error {
		if n := members(short, room); n != 2 {
			return fmt.Errorf("%s %d members", room, n)
		}
		return nil
	})
	t.Logf("room change without event seen by the 300ms cache after %v", took)

	// Users: each change reaches the 1-minute cache through its event.
	steps := []struct {
		what string
		op   presence.Op
		want int
	}{
		{"online (carol's first device)", presence.Op{Kind: presence.OpConnect, ConnID: 3, User: "carol"}, 1},
		{"changed (a second device)", presence.Op{Kind: presence.OpConnect, ConnID: 4, User: "carol"}, 2},
		{"changed (a device left)", presence.Op{Kind: presence.OpDisconnect, ConnID: 3, User: "carol"}, 1},
		{"offline (the last device left)", presence.Op{Kind: presence.OpDisconnect, ConnID: 4, User: "carol"}, 0},
	}
	for _, st := range steps {
		before := nconns(t, logic, "carol") // cached now
		if err := edge.Apply(ctx, "edge-a", ep, []presence.Op{st.op}); err != nil {
			t.Fatal(err)
		}
		took := presencetest.WaitUntil(t, 5*time.Second, st.what, func() error {
			if n := nconns(t, logic, "carol"); n != st.want {
				return fmt.Errorf("carol %d conns (was %d), want %d", n, before, st.want)
			}
			return nil
		})
		t.Logf("%s: the cached answer was replaced after %v (TTL 1m)", st.what, took)
	}

	// An Apply through the reading client invalidates at once.
	if n := nconns(t, logic, "alice"); n != 0 {
		t.Fatalf("alice %d conns", n)
	}
	if err := logic.Apply(ctx, "edge-a", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 5, User: "alice"}, {Kind: presence.OpJoin, ConnID: 5, Room: "r"}}); err != nil {
		t.Fatal(err)
	}
	if n := nconns(t, logic, "alice"); n != 1 {
		t.Fatalf("after own Apply: alice %d conns, want 1", n)
	}
	re, err := logic.RoomEdges(ctx, "r")
	if err != nil || len(re) != 1 || re[0].Members != 1 {
		t.Fatalf("room edges %v %v", re, err)
	}
	if err := logic.Apply(ctx, "edge-a", ep, []presence.Op{{Kind: presence.OpLeave, ConnID: 5, Room: "r"}}); err != nil {
		t.Fatal(err)
	}
	if re, err := logic.RoomEdges(ctx, "r"); err != nil || len(re) != 0 {
		t.Fatalf("room edges after own leave %v %v", re, err)
	}
}

func newClient(t testing.TB, srv *server.Server, cfg client.Config) *client.Client {
	cfg.Addr = srv.Addr()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRouterRestart: the router goes away and comes back on the same address (a new
// process, empty memory store). The client's Events channel stays open and delivers events
// of the new router; the cache is dropped while the watch is down, so no answer of the old
// router is served afterwards.
func TestRouterRestart(t *testing.T) {
	ctx := context.Background()
	start := func(addr string) (*server.Server, func()) {
		mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var srv *server.Server
		presencetest.WaitUntil(t, 5*time.Second, "listen", func() error {
			srv, err = server.New(server.Config{Addr: addr, Store: mem})
			return err
		})
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Run(rctx) }()
		return srv, func() { cancel(); <-done; _ = mem.Close() }
	}
	srv1, stop1 := start("127.0.0.1:0")
	addr := srv1.Addr()
	c, err := client.New(client.Config{Addr: addr, CacheTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	evCtx, evCancel := context.WithCancel(ctx)
	defer evCancel()
	evs, err := c.Events(evCtx)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.Register(ctx, "e", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, "e", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "alice"}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-evs; ev.User != "alice" || ev.Kind != presence.EventUserOnline {
		t.Fatalf("event %+v", ev)
	}
	presencetest.WaitUntil(t, 5*time.Second, "alice cached", func() error {
		if n := nconns(t, c, "alice"); n != 1 {
			return fmt.Errorf("alice %d", n)
		}
		return nil
	})
	stop1()
	if _, err := c.ResolveUsers(ctx, []string{"bob"}); !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("resolve while the router is down: %v, want ErrUnavailable", err)
	}
	_, stop2 := start(addr)
	defer stop2()
	// The new router knows nothing: alice must not come from the old router's cached answer.
	presencetest.WaitUntil(t, 5*time.Second, "cache dropped after restart", func() error {
		m, err := c.ResolveUsers(ctx, []string{"alice"})
		if err != nil {
			return err
		}
		if len(m) != 0 {
			return fmt.Errorf("alice still resolves: %v", m)
		}
		return nil
	})
	// The Events channel delivers the new router's events once re-subscribed. Events are
	// at-most-once across the gap, so keep producing until one arrives.
	ep2, err := c.Register(ctx, "e", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id := uint64(10)
	presencetest.WaitUntil(t, 5*time.Second, "event after restart", func() error {
		id++
		u := fmt.Sprintf("u%d", id)
		if err := c.Apply(ctx, "e", ep2, []presence.Op{{Kind: presence.OpConnect, ConnID: id, User: u}}); err != nil {
			return err
		}
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatal("Events channel closed by the restart")
			}
			if ev.Kind != presence.EventUserOnline {
				return fmt.Errorf("event %+v", ev)
			}
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("no event yet")
		}
	})
}
