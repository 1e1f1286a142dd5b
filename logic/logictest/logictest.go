// Package logictest runs a logic Runtime hermetically for plugin tests: an in-memory bus, an
// in-memory presence store and fake edges that consume their downstream topic, apply joins and
// leaves to presence the way a real edge does, and record every envelope they receive.
package logictest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Timeout bounds every wait of the harness.
const Timeout = 10 * time.Second

// Harness is a running Runtime with fake edges.
type Harness struct {
	T        testing.TB
	Bus      *bus.Memory
	Presence *presence.MemoryStore
	Runtime  *logic.Runtime
	Config   logic.Config

	mu    sync.Mutex
	edges map[string]*Edge
	subs  []bus.Subscription
	bcast []protocol.Downstream
}

// New starts a Runtime with cfg; Bus and Presence are filled in (memory) when nil. Everything
// stops in t.Cleanup.
func New(t testing.TB, cfg logic.Config) *Harness {
	t.Helper()
	h := &Harness{T: t, edges: make(map[string]*Edge)}
	if cfg.Bus == nil {
		b, err := bus.NewMemory(bus.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		h.Bus = b
		cfg.Bus = b
	}
	if cfg.Presence == nil {
		p, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		h.Presence = p
		cfg.Presence = p
	}
	if cfg.NackDelay == 0 {
		cfg.NackDelay = 10 * time.Millisecond
	}
	h.Config = cfg
	rt, err := logic.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Runtime = rt
	if h.Bus != nil {
		s, err := h.Bus.Subscribe(context.Background(), protocol.BroadcastTopic(cfg.Namespace), "test-bcast",
			bus.SubOptions{Mode: bus.Exclusive}, func(_ context.Context, d *bus.Delivery) error {
				var env protocol.Downstream
				if err := protocol.DecodeDownstream(d.Payload, &env); err != nil {
					return err
				}
				h.mu.Lock()
				h.bcast = append(h.bcast, env)
				h.mu.Unlock()
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		h.subs = append(h.subs, s)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-runErr; err != nil {
			t.Error(err)
		}
		h.mu.Lock()
		subs := h.subs
		h.mu.Unlock()
		for _, s := range subs {
			_ = s.Close()
		}
		if h.Bus != nil {
			_ = h.Bus.Close()
		}
		if h.Presence != nil {
			_ = h.Presence.Close()
		}
	})
	return h
}

// Broadcasts returns the envelopes published to the broadcast topic so far.
func (h *Harness) Broadcasts() []protocol.Downstream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]protocol.Downstream(nil), h.bcast...)
}

// Edge returns the fake edge id, registering it on first use.
func (h *Harness) Edge(id string) *Edge {
	h.T.Helper()
	h.mu.Lock()
	e := h.edges[id]
	h.mu.Unlock()
	if e != nil {
		return e
	}
	ctx := context.Background()
	epoch, err := h.Presence.Register(ctx, id, time.Minute)
	if err != nil {
		h.T.Fatal(err)
	}
	e = &Edge{h: h, ID: id, Epoch: epoch, users: make(map[uint64]string)}
	s, err := h.Config.Bus.Subscribe(ctx, protocol.EdgeTopic(h.Config.Namespace, id), "edge-"+id,
		bus.SubOptions{Mode: bus.Exclusive}, e.receive)
	if err != nil {
		h.T.Fatal(err)
	}
	h.mu.Lock()
	h.edges[id] = e
	h.subs = append(h.subs, s)
	h.mu.Unlock()
	return e
}

// Edge is a fake edge: it holds connections in presence, publishes upstream envelopes and
// records the downstream envelopes it receives.
type Edge struct {
	h     *Harness
	ID    string
	Epoch uint64

	mu       sync.Mutex
	nextConn uint64
	users    map[uint64]string     // guarded by mu
	got      []protocol.Downstream // guarded by mu
	taken    []bool                // guarded by mu: consumed by Expect
}

func (e *Edge) receive(ctx context.Context, d *bus.Delivery) error {
	var env protocol.Downstream
	if err := protocol.DecodeDownstream(d.Payload, &env); err != nil {
		e.h.T.Errorf("edge %s: bad downstream: %v", e.ID, err)
		return nil
	}
	if env.Kind == protocol.DownJoin || env.Kind == protocol.DownLeave {
		kind := presence.OpJoin
		if env.Kind == protocol.DownLeave {
			kind = presence.OpLeave
		}
		var ops []presence.Op
		e.mu.Lock()
		for _, c := range env.Conns {
			for _, r := range env.Rooms {
				ops = append(ops, presence.Op{Kind: kind, ConnID: c, User: e.users[c], Room: r})
			}
		}
		e.mu.Unlock()
		if err := e.h.Presence.Apply(ctx, e.ID, e.Epoch, ops); err != nil {
			e.h.T.Errorf("edge %s: apply: %v", e.ID, err)
		}
	}
	e.mu.Lock()
	e.got = append(e.got, env)
	e.taken = append(e.taken, false)
	e.mu.Unlock()
	return nil
}

// Connect adds a connection of user to presence and publishes its UpConnect.
func (e *Edge) Connect(user string, meta map[string]string) logic.Conn {
	e.h.T.Helper()
	e.mu.Lock()
	e.nextConn++
	id := e.nextConn
	e.users[id] = user
	e.mu.Unlock()
	if err := e.h.Presence.Apply(context.Background(), e.ID, e.Epoch,
		[]presence.Op{{Kind: presence.OpConnect, ConnID: id, User: user, Meta: meta}}); err != nil {
		e.h.T.Fatal(err)
	}
	c := logic.Conn{Edge: e.ID, Epoch: e.Epoch, ID: id}
	e.publish(user, &protocol.Upstream{Kind: protocol.UpConnect, Edge: e.ID, Epoch: e.Epoch, Conn: id,
		User: user, Meta: meta})
	return c
}

// Disconnect removes the connection from presence and publishes its UpDisconnect.
func (e *Edge) Disconnect(c logic.Conn) {
	e.h.T.Helper()
	e.mu.Lock()
	user := e.users[c.ID]
	delete(e.users, c.ID)
	e.mu.Unlock()
	if err := e.h.Presence.Apply(context.Background(), e.ID, e.Epoch,
		[]presence.Op{{Kind: presence.OpDisconnect, ConnID: c.ID, User: user}}); err != nil {
		e.h.T.Fatal(err)
	}
	e.publish(user, &protocol.Upstream{Kind: protocol.UpDisconnect, Edge: e.ID, Epoch: e.Epoch, Conn: c.ID,
		User: user, CloseCode: uint32(protocol.CloseNormal)})
}

// JoinDirect joins c to room in presence without going through logic (a room joined by an
// earlier life of the test).
func (e *Edge) JoinDirect(c logic.Conn, room string) {
	e.h.T.Helper()
	e.mu.Lock()
	user := e.users[c.ID]
	e.mu.Unlock()
	if err := e.h.Presence.Apply(context.Background(), e.ID, e.Epoch,
		[]presence.Op{{Kind: presence.OpJoin, ConnID: c.ID, User: user, Room: room}}); err != nil {
		e.h.T.Fatal(err)
	}
}

// Send publishes a client frame of connection c upstream. data is a JSON value ("" = none).
func (e *Edge) Send(c logic.Conn, typ, id, data string) {
	e.h.T.Helper()
	e.mu.Lock()
	user := e.users[c.ID]
	e.mu.Unlock()
	var d []byte
	if data != "" {
		d = []byte(data)
	}
	e.publish(user, &protocol.Upstream{Kind: protocol.UpMessage, Edge: e.ID, Epoch: e.Epoch, Conn: c.ID,
		User: user, Type: typ, ID: id, Data: d, TimeUnixNano: time.Now().UnixNano()})
}

// SendJSON is Send with v marshalled.
func (e *Edge) SendJSON(c logic.Conn, typ, id string, v any) {
	e.h.T.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.h.T.Fatal(err)
	}
	e.Send(c, typ, id, string(b))
}

func (e *Edge) publish(user string, up *protocol.Upstream) {
	e.h.T.Helper()
	e.PublishRaw(user, protocol.AppendUpstream(nil, up))
}

// Publish publishes up as is (keyed by its user): for envelopes Send cannot make (trace
// context, odd kinds).
func (e *Edge) Publish(up *protocol.Upstream) {
	e.h.T.Helper()
	e.publish(up.User, up)
}

// PublishRaw publishes payload upstream with key (malformed envelopes).
func (e *Edge) PublishRaw(key string, payload []byte) {
	e.h.T.Helper()
	ch := make(chan error, 1)
	e.h.Config.Bus.Publish(context.Background(), protocol.UpstreamTopic(e.h.Config.Namespace),
		bus.Message{Key: key, Payload: payload}, func(err error) { ch <- err })
	if err := <-ch; err != nil {
		e.h.T.Fatal(err)
	}
}

// Received returns every envelope received so far.
func (e *Edge) Received() []protocol.Downstream {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]protocol.Downstream(nil), e.got...)
}

// Count returns how many received envelopes match pred.
func (e *Edge) Count(pred func(*protocol.Downstream) bool) int {
	n := 0
	for _, d := range e.Received() {
		if pred(&d) {
			n++
		}
	}
	return n
}

// Expect waits for the first not yet expected envelope matching pred and marks it consumed.
func (e *Edge) Expect(pred func(*protocol.Downstream) bool, what string) protocol.Downstream {
	e.h.T.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		e.mu.Lock()
		for i := range e.got {
			if !e.taken[i] && pred(&e.got[i]) {
				e.taken[i] = true
				d := e.got[i]
				e.mu.Unlock()
				return d
			}
		}
		e.mu.Unlock()
		if time.Now().After(deadline) {
			e.h.T.Fatalf("edge %s: no %s within %v; got %s", e.ID, what, Timeout, Describe(e.Received()))
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline
	}
}

// ExpectFrame waits for a delivery of frame type typ (to any target) and returns it.
func (e *Edge) ExpectFrame(typ string) protocol.Downstream {
	e.h.T.Helper()
	return e.Expect(func(d *protocol.Downstream) bool {
		return d.Kind == protocol.DownDeliver && d.Frame.Type == typ
	}, "frame "+typ)
}

// ExpectReply waits for a frame answering client frame id (a reply or an error) to conn c.
func (e *Edge) ExpectReply(c logic.Conn, id string) protocol.ServerFrame {
	e.h.T.Helper()
	d := e.Expect(func(d *protocol.Downstream) bool {
		return d.Kind == protocol.DownDeliver && d.Target == protocol.TargetConns &&
			len(d.Conns) == 1 && d.Conns[0] == c.ID && d.Frame.ID == id
	}, "reply to "+id)
	return d.Frame
}

// Eventually polls cond until it holds or the harness timeout passes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Describe renders envelopes for failure messages.
func Describe(ds []protocol.Downstream) string {
	s := fmt.Sprintf("%d envelopes:", len(ds))
	for _, d := range ds {
		s += fmt.Sprintf("\n  kind=%d target=%d conns=%v users=%v room=%q rooms=%v excl=%d prio=%d frame={%s id=%q code=%d %s} code=%d",
			d.Kind, d.Target, d.Conns, d.Users, d.Room, d.Rooms, d.ExcludeConn, d.Priority, d.Frame.Type, d.Frame.ID,
			d.Frame.Code, d.Frame.Data, d.Code)
	}
	return s
}
