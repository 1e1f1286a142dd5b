package edge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// countingStore counts the calls the edge makes.
type countingStore struct {
	presence.Store
	registers, applies, syncs, renews atomic.Int64
}

func (c *countingStore) Renew(ctx context.Context, edge string, epoch uint64) error {
	c.renews.Add(1)
	return c.Store.Renew(ctx, edge, epoch)
}

func (c *countingStore) Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error) {
	c.registers.Add(1)
	return c.Store.Register(ctx, edge, ttl)
}

func (c *countingStore) Apply(ctx context.Context, edge string, epoch uint64, ops []presence.Op) error {
	c.applies.Add(1)
	return c.Store.Apply(ctx, edge, epoch, ops)
}

func (c *countingStore) Sync(ctx context.Context, edge string, epoch uint64, conns []presence.Conn, rooms map[string][]uint64) error {
	c.syncs.Add(1)
	return c.Store.Sync(ctx, edge, epoch, conns, rooms)
}

func TestPresenceReporting(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	store := &countingStore{Store: mem}
	cfg := testConfig()
	cfg.Presence = store
	cfg.PresenceLease = 600 * time.Millisecond
	cfg.PresenceFlush = 5 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	<-s.Ready()
	ctx := context.Background()

	a1, w := dialGorilla(t, s, "alice")
	ida := connID(t, w)
	dialGorilla(t, s, "alice")
	dialGorilla(t, s, "bob")
	down(t, s, &protocol.Downstream{Kind: protocol.DownJoin, Target: protocol.TargetConns, Conns: []uint64{ida}, Rooms: []string{"r"}})

	state := func(alice, bob, room int) func() error {
		return func() error {
			got, err := mem.ResolveUsers(ctx, []string{"alice", "bob"})
			if err != nil {
				return err
			}
			if len(got["alice"]) != alice || len(got["bob"]) != bob {
				return fmt.Errorf("alice %d bob %d", len(got["alice"]), len(got["bob"]))
			}
			for _, cs := range got {
				for _, c := range cs {
					if c.Edge != "edge-test" || c.Epoch != s.Epoch() {
						return fmt.Errorf("conn %+v, edge epoch %d", c, s.Epoch())
					}
				}
			}
			re, err := mem.RoomEdges(ctx, "r")
			if err != nil {
				return err
			}
			members := 0
			for _, e := range re {
				members += e.Members
			}
			if members != room {
				return fmt.Errorf("room members %d", members)
			}
			return nil
		}
	}
	checkFor(t, 5*time.Second, state(2, 1, 1))
	first := s.Epoch()

	// The lease is lost (e.g. Redis lost its data): the edge registers again, with a new epoch,
	// and re-sends its full state.
	syncs := store.syncs.Load()
	if err := mem.Deregister(ctx, "edge-test", first); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		if s.Epoch() == first || store.syncs.Load() == syncs {
			return fmt.Errorf("not re-registered")
		}
		return state(2, 1, 1)()
	})
	// Deliveries addressed with the old epoch still reach the connection.
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetConns, Epoch: first, Conns: []uint64{ida}, Frame: deliver("chat", `{}`)})
	if f := readFrame(t, a1); f.Type != "chat" {
		t.Fatalf("got %+v", f)
	}

	// A disconnect is reported.
	a1.Close()
	checkFor(t, 5*time.Second, state(1, 1, 0))

	// Asked to, the edge re-syncs.
	syncs = store.syncs.Load()
	s.ResyncPresence()
	checkFor(t, 5*time.Second, func() error {
		if store.syncs.Load() == syncs {
			return fmt.Errorf("no sync")
		}
		return nil
	})

	// Shutdown deregisters: the edge's presence disappears at once.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	edges, err := mem.Edges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 0 {
		t.Fatalf("edges after shutdown: %v", edges)
	}
	if store.applies.Load() == 0 {
		t.Fatal("no Apply batches")
	}
}

// stallingPub is a Publisher that holds the loop publishing a connect of user stall until
// release is closed (a loop busy for longer than a presence snapshot waits).
type stallingPub struct {
	stall   string
	once    sync.Once
	stalled chan struct{} // closed when the loop is held
	release chan struct{}
}

func (p *stallingPub) Publish(_ context.Context, key string, _ []byte, _ map[string]string, done func(error)) {
	if key == p.stall {
		p.once.Do(func() { // the connect; not the disconnect
			close(p.stalled)
			<-p.release
		})
	}
	if done != nil {
		done(nil)
	}
}

// TestPresenceSyncWaitsForEveryLoop: a loop that does not answer the presence snapshot in
// time makes the edge retry the Sync, never send it without that loop's connections (the
// store would take them for gone and their users for offline until the next Sync).
func TestPresenceSyncWaitsForEveryLoop(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	store := &countingStore{Store: mem}
	pub := &stallingPub{stall: "stuck", stalled: make(chan struct{}), release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(pub.release)
		}
	}
	defer release()
	cfg := testConfig()
	cfg.Loops = 1
	cfg.Presence = store
	cfg.Publisher = pub
	cfg.PresenceFlush = 5 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.snapWait = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	defer func() {
		release()
		cancel()
		<-errc
	}()
	<-s.Ready()

	dialGorilla(t, s, "alice")
	online := func(users ...string) func() error {
		return func() error {
			got, err := mem.ResolveUsers(context.Background(), users)
			if err != nil {
				return err
			}
			for _, u := range users {
				if len(got[u]) != 1 {
					return fmt.Errorf("%s has %d connections in the store", u, len(got[u]))
				}
			}
			return nil
		}
	}
	checkFor(t, 5*time.Second, online("alice"))

	dialed := make(chan error, 1)
	go func() { // its handshake completes only once the loop is released
		c, _, err := websocket.DefaultDialer.Dial(wsURL(s, "stuck"), nil)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			_, _, err = c.ReadMessage() // the welcome
		}
		dialed <- err
	}()
	<-pub.stalled
	syncs := store.syncs.Load()
	s.ResyncPresence()
	checkFor(t, 5*time.Second, func() error {
		if n := s.pres.snapFails.Load(); n < 2 {
			return fmt.Errorf("%d snapshots failed", n)
		}
		return nil
	})
	if n := store.syncs.Load(); n != syncs {
		t.Fatalf("%d Syncs sent while a loop could not answer its snapshot", n-syncs)
	}
	if err := online("alice")(); err != nil {
		t.Fatalf("while the loop is held: %v", err)
	}

	release()
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		if store.syncs.Load() == syncs {
			return fmt.Errorf("no Sync after the loop answered")
		}
		return online("alice", "stuck")()
	})
}

// gatedStore holds every Apply that carries a connect of user until open is closed.
type gatedStore struct {
	presence.Store
	user    string
	entered chan struct{} // closed when such an Apply arrived
	once    sync.Once
	open    chan struct{}
	stuck   bool // ignore the call's deadline too (a stuck call)
}

func (g *gatedStore) Apply(ctx context.Context, edge string, epoch uint64, ops []presence.Op) error {
	for _, op := range ops {
		if op.Kind == presence.OpConnect && op.User == g.user {
			g.once.Do(func() { close(g.entered) })
			if g.stuck {
				<-g.open
				continue
			}
			select {
			case <-g.open:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return g.Store.Apply(ctx, edge, epoch, ops)
}

// TestWelcomeAfterPresence: a client is welcomed only once the presence store has its
// connection — a message resolved right after the welcome reaches it — and, when the store
// does not answer, after WelcomeWait anyway.
func TestWelcomeAfterPresence(t *testing.T) {
	start := func(t *testing.T, wait time.Duration) (*presence.MemoryStore, *gatedStore, *Server) {
		mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mem.Close() })
		g := &gatedStore{Store: mem, user: "alice", entered: make(chan struct{}), open: make(chan struct{})}
		cfg := testConfig()
		cfg.Presence = g
		cfg.PresenceLease = 30 * time.Second // the held Apply must not cost the lease
		cfg.WelcomeWait = wait
		return mem, g, startEdge(t, cfg)
	}
	type welcome struct {
		conns int // alice's connections in the store when the welcome arrived
		err   error
	}
	dial := func(t *testing.T, s *Server, mem *presence.MemoryStore) <-chan welcome {
		out := make(chan welcome, 1)
		go func() {
			c, _, err := websocket.DefaultDialer.Dial(wsURL(s, "alice"), nil)
			if err == nil {
				t.Cleanup(func() { c.Close() })
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _, err = c.ReadMessage()
			}
			var n int
			if err == nil {
				var m map[string][]presence.Conn
				m, err = mem.ResolveUsers(context.Background(), []string{"alice"})
				n = len(m["alice"])
			}
			out <- welcome{n, err}
		}()
		return out
	}

	t.Run("held until the store has it", func(t *testing.T) {
		mem, g, s := start(t, 10*time.Second)
		got := dial(t, s, mem)
		<-g.entered
		select {
		case w := <-got:
			t.Fatalf("welcomed while the store did not have the connection (it had %d, err %v)", w.conns, w.err)
		case <-time.After(200 * time.Millisecond):
		}
		close(g.open)
		w := <-got
		if w.err != nil || w.conns != 1 {
			t.Fatalf("welcome: err %v, alice's connections in the store %d, want 1", w.err, w.conns)
		}
	})

	t.Run("welcomed after WelcomeWait when the store does not answer", func(t *testing.T) {
		mem, g, s := start(t, 300*time.Millisecond)
		defer close(g.open)
		t0 := time.Now()
		w := <-dial(t, s, mem)
		if w.err != nil {
			t.Fatal(w.err)
		}
		if d := time.Since(t0); d < 300*time.Millisecond {
			t.Fatalf("welcomed after %v, before WelcomeWait", d)
		}
		if w.conns != 0 {
			t.Fatalf("the store has %d connections of alice: the Apply was held", w.conns)
		}
	})
}

// TestPresenceLeaseOutlivesStuckApply: the lease is renewed while an Apply hangs for several
// lease times (a loaded router), so the edge keeps its registration (no re-register, no full
// re-Sync of every connection, no users looking offline meanwhile).
func TestPresenceLeaseOutlivesStuckApply(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	g := &gatedStore{Store: mem, user: "slow", entered: make(chan struct{}), open: make(chan struct{}), stuck: true}
	store := &countingStore{Store: g}
	cfg := testConfig()
	cfg.Presence = store
	cfg.PresenceLease = 300 * time.Millisecond
	cfg.WelcomeWait = -1
	s := startEdge(t, cfg)
	released := false
	defer func() {
		if !released {
			close(g.open)
		}
	}()
	dialGorilla(t, s, "slow")
	<-g.entered
	epoch := s.Epoch()
	// Renewals go on while the Apply hangs: enough of them for three lease times.
	renews := store.renews.Load()
	checkFor(t, 5*time.Second, func() error {
		if n := store.renews.Load() - renews; n < 9 {
			return fmt.Errorf("%d renewals while the Apply hangs, want 9 (every lease/3 for 3 leases)", n)
		}
		return nil
	})
	if e := s.Epoch(); e != epoch {
		t.Fatalf("the lease lapsed while an Apply hung: epoch %d -> %d", epoch, e)
	}
	released = true
	close(g.open)
	checkFor(t, 5*time.Second, func() error {
		m, err := mem.ResolveUsers(context.Background(), []string{"slow"})
		if err != nil || len(m["slow"]) != 1 {
			return fmt.Errorf("slow: %v %v", m, err)
		}
		return nil
	})
	if n := store.registers.Load(); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
}
