// Package presencetest is the contract test every presence.Store implementation passes:
// MemoryStore, RedisStore (standalone and Cluster) and the gRPC client.
//
// Contract details pinned here beyond the Store doc comments:
//   - Join/Leave of a connection the edge/epoch does not hold is ignored; a duplicate Join or a
//     Leave of a non-member is a no-op.
//   - Connect of a connection id that exists with the same user refreshes Meta/ConnectedAt;
//     with another user it is a disconnect of the old one followed by a connect.
//   - ResolveUsers omits users without live connections; each user's conns are ordered by
//     (Edge, ConnID). RoomEdges is ordered by Edge. RoomCounts omits rooms without members.
//   - Online.PerEdge lists every live edge (0 for an edge without connections).
//   - Deregister of a lease that is already gone is not an error.
//   - Register of an edge that holds a live lease starts a new epoch; the old epoch is gone at
//     once (Renew/Apply with it return ErrLeaseLost, its entries are invisible).
//   - A lapsed lease hides its entries from every query within the lease time; its users'
//     offline events follow (a background reaper) within a bounded delay.
package presencetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/presence"
)

// ShortTTL is the lease used by the lapse and renew tests (long enough that a loaded machine
// does not lapse a renewing edge). The store's reaper must run often enough that
// offline events follow within EventWait.
const ShortTTL = time.Second

// EventWait bounds how long a test waits for an expected event or state.
const EventWait = 5 * time.Second

// Run runs the contract against stores made by newStore. Each subtest gets a fresh store
// (it must not see another subtest's state) and closes it at the end.
func Run(t *testing.T, newStore func(t *testing.T) presence.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s presence.Store)
	}{
		{"RegisterEpochs", testRegisterEpochs},
		{"Invalid", testInvalid},
		{"ConnectResolve", testConnectResolve},
		{"ConnectReplace", testConnectReplace},
		{"Disconnect", testDisconnect},
		{"Rooms", testRooms},
		{"Online", testOnline},
		{"Events", testEvents},
		{"EventsClose", testEventsClose},
		{"Renew", testRenew},
		{"LeaseLapse", testLeaseLapse},
		{"Deregister", testDeregister},
		{"RestartedEdge", testRestartedEdge},
		{"Sync", testSync},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func register(t *testing.T, s presence.Store, edge string, ttl time.Duration) uint64 {
	t.Helper()
	ep, err := s.Register(ctxT(t), edge, ttl)
	if err != nil {
		t.Fatalf("Register(%s): %v", edge, err)
	}
	if ep == 0 {
		t.Fatalf("Register(%s): epoch 0", edge)
	}
	return ep
}

func apply(t *testing.T, s presence.Store, edge string, epoch uint64, ops ...presence.Op) {
	t.Helper()
	if err := s.Apply(ctxT(t), edge, epoch, ops); err != nil {
		t.Fatalf("Apply(%s): %v", edge, err)
	}
}

func connect(id uint64, user string, meta ...string) presence.Op {
	op := presence.Op{Kind: presence.OpConnect, ConnID: id, User: user}
	if len(meta) > 0 {
		op.Meta = map[string]string{}
		for i := 0; i+1 < len(meta); i += 2 {
			op.Meta[meta[i]] = meta[i+1]
		}
	}
	return op
}
func disconnect(id uint64, user string) presence.Op {
	return presence.Op{Kind: presence.OpDisconnect, ConnID: id, User: user}
}
func join(id uint64, room string) presence.Op {
	return presence.Op{Kind: presence.OpJoin, ConnID: id, Room: room}
}
func leave(id uint64, room string) presence.Op {
	return presence.Op{Kind: presence.OpLeave, ConnID: id, Room: room}
}

func resolve(t *testing.T, s presence.Store, users ...string) map[string][]presence.Conn {
	t.Helper()
	m, err := s.ResolveUsers(ctxT(t), users)
	if err != nil {
		t.Fatalf("ResolveUsers: %v", err)
	}
	return m
}

// connIDs summarises a resolve result as user -> "edge/conn" strings.
func connIDs(m map[string][]presence.Conn) map[string][]string {
	out := map[string][]string{}
	for u, cs := range m {
		for _, c := range cs {
			out[u] = append(out[u], fmt.Sprintf("%s/%d", c.Edge, c.ConnID))
		}
	}
	return out
}

func eq(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testRegisterEpochs(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	e1 := register(t, s, "edge-a", 0)
	e2 := register(t, s, "edge-a", 0)
	if e2 <= e1 {
		t.Fatalf("second epoch %d not greater than %d", e2, e1)
	}
	if err := s.Renew(ctx, "edge-a", e1); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Renew old epoch: %v, want ErrLeaseLost", err)
	}
	if err := s.Apply(ctx, "edge-a", e1, []presence.Op{connect(1, "u")}); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Apply old epoch: %v, want ErrLeaseLost", err)
	}
	if err := s.Renew(ctx, "edge-a", e2); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if err := s.Renew(ctx, "edge-unknown", 42); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Renew unknown: %v, want ErrLeaseLost", err)
	}
	b := register(t, s, "edge-b", 0)
	edges, err := s.Edges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Edges", edges, map[string]uint64{"edge-a": e2, "edge-b": b})
}

func testInvalid(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	if _, err := s.Register(ctx, "", 0); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("Register empty: %v", err)
	}
	ep := register(t, s, "e", 0)
	bad := [][]presence.Op{
		{{Kind: 99, ConnID: 1, User: "u"}},
		{{Kind: presence.OpConnect, ConnID: 1}},
		{{Kind: presence.OpJoin, ConnID: 1}},
		{connect(1, "u"), {Kind: 0}},
	}
	for i, ops := range bad {
		if err := s.Apply(ctx, "e", ep, ops); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("bad batch %d: %v, want ErrInvalid", i, err)
		}
	}
	// A rejected batch applies nothing.
	eq(t, "resolve after rejected batch", len(resolve(t, s, "u")), 0)
	if err := s.Sync(ctx, "e", ep, []presence.Conn{{ConnID: 1}}, nil); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("Sync without user: %v", err)
	}
}

func testConnectResolve(t *testing.T, s presence.Store) {
	a := register(t, s, "edge-a", 0)
	b := register(t, s, "edge-b", 0)
	at := time.Unix(1700000000, 123456000)
	op := connect(1, "alice", "device", "phone", "client", "ios/1.2")
	op.At = at
	apply(t, s, "edge-a", a, op, connect(2, "bob"))
	apply(t, s, "edge-b", b, connect(7, "alice", "device", "web"))
	m := resolve(t, s, "alice", "bob", "nobody", "alice")
	eq(t, "resolve", connIDs(m), map[string][]string{
		"alice": {"edge-a/1", "edge-b/7"},
		"bob":   {"edge-a/2"},
	})
	c := m["alice"][0]
	if c.Edge != "edge-a" || c.Epoch != a || c.User != "alice" || c.ConnID != 1 {
		t.Fatalf("conn fields: %+v", c)
	}
	eq(t, "meta", c.Meta, map[string]string{"device": "phone", "client": "ios/1.2"})
	if !c.ConnectedAt.Equal(at) {
		t.Fatalf("ConnectedAt %v, want %v", c.ConnectedAt, at)
	}
	if m["alice"][1].Epoch != b || m["alice"][1].ConnectedAt.IsZero() {
		t.Fatalf("second conn: %+v", m["alice"][1])
	}
	if got := resolve(t, s); len(got) != 0 {
		t.Fatalf("resolve nothing: %v", got)
	}
}

func testConnectReplace(t *testing.T, s presence.Store) {
	a := register(t, s, "e", 0)
	apply(t, s, "e", a, connect(1, "alice", "v", "1"), connect(1, "alice", "v", "2"))
	m := resolve(t, s, "alice")
	eq(t, "conns", connIDs(m), map[string][]string{"alice": {"e/1"}})
	eq(t, "meta refreshed", m["alice"][0].Meta, map[string]string{"v": "2"})
	apply(t, s, "e", a, join(1, "r"), connect(1, "bob"))
	eq(t, "replaced by other user", connIDs(resolve(t, s, "alice", "bob")), map[string][]string{"bob": {"e/1"}})
	counts, err := s.RoomCounts(ctxT(t), []string{"r"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "replaced conn left its rooms", counts, map[string]int{})
}

func testDisconnect(t *testing.T, s presence.Store) {
	a := register(t, s, "e", 0)
	apply(t, s, "e", a, connect(1, "alice"), connect(2, "alice"), join(1, "r1"), join(2, "r1"), join(1, "r2"))
	apply(t, s, "e", a, disconnect(1, "alice"), disconnect(99, "ghost"))
	eq(t, "resolve", connIDs(resolve(t, s, "alice")), map[string][]string{"alice": {"e/2"}})
	counts, err := s.RoomCounts(ctxT(t), []string{"r1", "r2"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "rooms after disconnect", counts, map[string]int{"r1": 1})
	apply(t, s, "e", a, disconnect(2, ""))
	eq(t, "resolve after last", len(resolve(t, s, "alice")), 0)
}

func testRooms(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	a := register(t, s, "edge-a", 0)
	b := register(t, s, "edge-b", 0)
	apply(t, s, "edge-a", a, connect(1, "u1"), connect(2, "u2"), connect(3, "u3"),
		join(1, "room"), join(2, "room"), join(2, "room"), join(3, "other"),
		join(404, "room"), leave(3, "room"))
	apply(t, s, "edge-b", b, connect(1, "u4"), join(1, "room"))
	re, err := s.RoomEdges(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "RoomEdges", re, []presence.RoomEdge{{Edge: "edge-a", Epoch: a, Members: 2}, {Edge: "edge-b", Epoch: b, Members: 1}})
	counts, err := s.RoomCounts(ctx, []string{"room", "other", "empty"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "RoomCounts", counts, map[string]int{"room": 3, "other": 1})
	apply(t, s, "edge-b", b, leave(1, "room"))
	apply(t, s, "edge-a", a, leave(1, "room"), leave(1, "room"))
	re, err = s.RoomEdges(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "RoomEdges after leaves", re, []presence.RoomEdge{{Edge: "edge-a", Epoch: a, Members: 1}})
	re, err = s.RoomEdges(ctx, "nothing")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "RoomEdges empty", len(re), 0)
}

func testOnline(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	a := register(t, s, "edge-a", 0)
	b := register(t, s, "edge-b", 0)
	c := register(t, s, "edge-c", 0)
	_ = c
	apply(t, s, "edge-a", a, connect(1, "u1"), connect(2, "u2"), connect(3, "u1"))
	apply(t, s, "edge-b", b, connect(1, "u1"), connect(2, "u3"))
	got, err := s.Online(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Online", got, presence.Counts{Connections: 5, Users: 3, PerEdge: map[string]int{"edge-a": 3, "edge-b": 2, "edge-c": 0}})
}

type eventLog struct {
	mu  sync.Mutex
	evs []presence.Event
}

func collect(t *testing.T, s presence.Store) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Events(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Events: %v", err)
	}
	l := &eventLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			l.mu.Lock()
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// summary returns events as "+user@edge" / "-user@edge", and with changed "~user@edge".
func (l *eventLog) summary(changed bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []string{}
	for _, ev := range l.evs {
		sign := "?"
		switch ev.Kind {
		case presence.EventUserOnline:
			sign = "+"
		case presence.EventUserOffline:
			sign = "-"
		case presence.EventUserChanged:
			if !changed {
				continue
			}
			sign = "~"
		}
		out = append(out, sign+ev.User+"@"+ev.Edge)
	}
	return out
}

// waitFor waits until the online and offline events are want (in order, or in any order
// when they come from several edges).
func (l *eventLog) waitFor(t *testing.T, want ...string) {
	t.Helper()
	l.wait(t, false, want)
}

// waitForAll is waitFor including the changed events.
func (l *eventLog) waitForAll(t *testing.T, want ...string) {
	t.Helper()
	l.wait(t, true, want)
}

func (l *eventLog) wait(t *testing.T, changed bool, want []string) {
	t.Helper()
	eventually(t, EventWait, "events", func() error {
		got := l.summary(changed)
		if len(got) < len(want) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		if !reflect.DeepEqual(got, want) {
			sg, sw := append([]string(nil), got...), append([]string(nil), want...)
			sort.Strings(sg)
			sort.Strings(sw)
			if !reflect.DeepEqual(sg, sw) {
				return fmt.Errorf("got %v, want %v", got, want)
			}
		}
		return nil
	})
}

func testEvents(t *testing.T, s presence.Store) {
	l := collect(t, s)
	a := register(t, s, "edge-a", 0)
	b := register(t, s, "edge-b", 0)
	apply(t, s, "edge-a", a, connect(1, "alice"))
	l.waitFor(t, "+alice@edge-a")
	apply(t, s, "edge-b", b, connect(1, "alice"))
	apply(t, s, "edge-a", a, disconnect(1, "alice"))
	apply(t, s, "edge-a", a, connect(2, "bob"))
	l.waitFor(t, "+alice@edge-a", "+bob@edge-a")
	apply(t, s, "edge-b", b, disconnect(1, "alice"))
	l.waitFor(t, "+alice@edge-a", "+bob@edge-a", "-alice@edge-b")
	// alice's second connection (on edge-b) and the end of her first one changed her set of
	// connections while she stayed online.
	l.waitForAll(t, "+alice@edge-a", "~alice@edge-b", "~alice@edge-a", "+bob@edge-a", "-alice@edge-b")
	// A connection re-sent unchanged (the anti-entropy Sync) changes nothing: no event.
	if err := s.Sync(ctxT(t), "edge-a", a, []presence.Conn{{ConnID: 2, User: "bob"}}, nil); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	apply(t, s, "edge-a", a, connect(3, "bob"), connect(4, "carol"))
	l.waitForAll(t, "+alice@edge-a", "~alice@edge-b", "~alice@edge-a", "+bob@edge-a", "-alice@edge-b",
		"~bob@edge-a", "+carol@edge-a")
	for _, ev := range l.evs {
		if ev.At.IsZero() {
			t.Fatalf("event without time: %+v", ev)
		}
	}
}

func testEventsClose(t *testing.T, s presence.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	timeout := time.After(EventWait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("Events channel not closed after ctx cancel")
		}
	}
}

func testRenew(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	ep := register(t, s, "e", ShortTTL)
	apply(t, s, "e", ep, connect(1, "alice"))
	// Renew several times over more than 3 lease times; the entry must stay visible.
	end := time.Now().Add(3 * ShortTTL)
	for time.Now().Before(end) {
		if err := s.Renew(ctx, "e", ep); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if len(resolve(t, s, "alice")) != 1 {
			t.Fatal("renewed edge's user not visible")
		}
		time.Sleep(ShortTTL / 5) // heartbeat pacing, not synchronisation
	}
}

func testLeaseLapse(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	l := collect(t, s)
	dead := register(t, s, "dead", ShortTTL)
	live := register(t, s, "live", 0)
	apply(t, s, "dead", dead, connect(1, "alice"), connect(2, "bob"), join(1, "room"), join(2, "room"))
	apply(t, s, "live", live, connect(1, "bob"), join(1, "room"))
	l.waitFor(t, "+alice@dead", "+bob@dead")
	start := time.Now()
	// The "dead" edge never renews. Within the lease time (plus scheduling slack) every query
	// hides it.
	eventually(t, ShortTTL+time.Second, "lapse hidden", func() error {
		m := resolve(t, s, "alice", "bob")
		if got := connIDs(m); !reflect.DeepEqual(got, map[string][]string{"bob": {"live/1"}}) {
			return fmt.Errorf("resolve %v", got)
		}
		re, err := s.RoomEdges(ctx, "room")
		if err != nil {
			return err
		}
		if len(re) != 1 || re[0].Edge != "live" {
			return fmt.Errorf("room edges %v", re)
		}
		rc, err := s.RoomCounts(ctx, []string{"room"})
		if err != nil {
			return err
		}
		if rc["room"] != 1 {
			return fmt.Errorf("room counts %v", rc)
		}
		edges, err := s.Edges(ctx)
		if err != nil {
			return err
		}
		if _, ok := edges["dead"]; ok {
			return fmt.Errorf("edges %v", edges)
		}
		on, err := s.Online(ctx)
		if err != nil {
			return err
		}
		if on.Connections != 1 || on.PerEdge["dead"] != 0 {
			return fmt.Errorf("online %+v", on)
		}
		return nil
	})
	t.Logf("lapse hidden %v after last report (lease %v)", time.Since(start), ShortTTL)
	if err := s.Renew(ctx, "dead", dead); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Renew after lapse: %v, want ErrLeaseLost", err)
	}
	if err := s.Apply(ctx, "dead", dead, []presence.Op{connect(3, "carol")}); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Apply after lapse: %v, want ErrLeaseLost", err)
	}
	// alice goes offline; bob stays online through the live edge: his set changed.
	l.waitFor(t, "+alice@dead", "+bob@dead", "-alice@dead")
	l.waitForAll(t, "+alice@dead", "+bob@dead", "~bob@live", "-alice@dead", "~bob@dead")
	eventually(t, EventWait, "online users", func() error {
		on, err := s.Online(ctx)
		if err != nil {
			return err
		}
		if on.Users != 1 {
			return fmt.Errorf("online %+v", on)
		}
		return nil
	})
}

func testDeregister(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	l := collect(t, s)
	ep := register(t, s, "e", 0)
	apply(t, s, "e", ep, connect(1, "alice"), join(1, "room"))
	if err := s.Deregister(ctx, "e", ep); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	eq(t, "resolve after deregister", len(resolve(t, s, "alice")), 0)
	re, err := s.RoomEdges(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "room after deregister", len(re), 0)
	l.waitFor(t, "+alice@e", "-alice@e")
	if err := s.Deregister(ctx, "e", ep); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	if err := s.Renew(ctx, "e", ep); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Renew after deregister: %v", err)
	}
}

func testRestartedEdge(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	old := register(t, s, "e", 0)
	apply(t, s, "e", old, connect(1, "alice"), join(1, "room"))
	neu := register(t, s, "e", 0)
	eq(t, "old epoch hidden", len(resolve(t, s, "alice")), 0)
	re, err := s.RoomEdges(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "old room entry hidden", len(re), 0)
	apply(t, s, "e", neu, connect(1, "alice"))
	m := resolve(t, s, "alice")
	if len(m["alice"]) != 1 || m["alice"][0].Epoch != neu {
		t.Fatalf("new epoch resolve: %+v", m)
	}
}

func testSync(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	l := collect(t, s)
	ep := register(t, s, "e", 0)
	apply(t, s, "e", ep, connect(1, "alice"), connect(2, "bob"), join(1, "r1"), join(2, "r1"), join(2, "r2"))
	l.waitFor(t, "+alice@e", "+bob@e")
	at := time.Unix(1700000100, 0)
	conns := []presence.Conn{
		{ConnID: 2, User: "bob", Meta: map[string]string{"d": "x"}, ConnectedAt: at},
		{ConnID: 3, User: "carol", ConnectedAt: at},
		{ConnID: 4, User: "carol"},
	}
	rooms := map[string][]uint64{"r2": {3, 4, 999}, "r3": {2}}
	if err := s.Sync(ctx, "e", ep, conns, rooms); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	m := resolve(t, s, "alice", "bob", "carol")
	eq(t, "resolve after sync", connIDs(m), map[string][]string{"bob": {"e/2"}, "carol": {"e/3", "e/4"}})
	eq(t, "meta after sync", m["bob"][0].Meta, map[string]string{"d": "x"})
	if !m["carol"][0].ConnectedAt.Equal(at) {
		t.Fatalf("ConnectedAt after sync: %v", m["carol"][0].ConnectedAt)
	}
	counts, err := s.RoomCounts(ctx, []string{"r1", "r2", "r3"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "rooms after sync", counts, map[string]int{"r2": 2, "r3": 1})
	l.waitFor(t, "+alice@e", "+bob@e", "-alice@e", "+carol@e")
	// Sync of a fresh epoch (the anti-entropy path) and Sync to nothing.
	ep2 := register(t, s, "e", 0)
	if err := s.Sync(ctx, "e", ep2, conns, rooms); err != nil {
		t.Fatalf("Sync new epoch: %v", err)
	}
	eq(t, "resolve after re-register+sync", connIDs(resolve(t, s, "alice", "bob", "carol")),
		map[string][]string{"bob": {"e/2"}, "carol": {"e/3", "e/4"}})
	if err := s.Sync(ctx, "e", ep2, nil, nil); err != nil {
		t.Fatalf("Sync empty: %v", err)
	}
	eq(t, "resolve after empty sync", len(resolve(t, s, "alice", "bob", "carol")), 0)
	if err := s.Sync(ctx, "e", ep, nil, nil); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Sync old epoch: %v", err)
	}
}

func testConcurrent(t *testing.T, s presence.Store) {
	ctx := ctxT(t)
	const edges, perEdge, batch = 4, 500, 50
	var wg sync.WaitGroup
	errs := make(chan error, edges)
	for e := 0; e < edges; e++ {
		wg.Add(1)
		go func(e int) {
			defer wg.Done()
			name := fmt.Sprintf("edge-%d", e)
			ep, err := s.Register(ctx, name, 0)
			if err != nil {
				errs <- err
				return
			}
			for i := 0; i < perEdge; i += batch {
				ops := make([]presence.Op, 0, 2*batch)
				for j := i; j < i+batch; j++ {
					ops = append(ops, connect(uint64(j), fmt.Sprintf("user-%d", j)), join(uint64(j), "big"))
				}
				if err := s.Apply(ctx, name, ep, ops); err != nil {
					errs <- err
					return
				}
			}
		}(e)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	on, err := s.Online(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if on.Connections != edges*perEdge || on.Users != perEdge {
		t.Fatalf("online %+v", on)
	}
	counts, err := s.RoomCounts(ctx, []string{"big"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "big room", counts["big"], edges*perEdge)
	users := make([]string, perEdge)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	m := resolve(t, s, users...)
	for _, u := range users {
		if len(m[u]) != edges {
			t.Fatalf("%s: %d conns, want %d", u, len(m[u]), edges)
		}
	}
}
