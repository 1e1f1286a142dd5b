package logic_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) {
	if os.Getenv(childReplicaEnv) != "" {
		os.Exit(runChildReplica()) // the test binary re-executed as a logic replica to be killed
	}
	goleak.VerifyTestMain(m,
		// pulsar-client-go v0.16.0 stops this one SendTimeout after its producer closed (see
		// logic/bus's TestMain); only the integration tests start Pulsar producers.
		goleak.IgnoreTopFunction("github.com/apache/pulsar-client-go/pulsar.(*partitionProducer).failTimeoutMessages"),
	)
}

// funcPlugin is a plugin made of closures.
type funcPlugin struct {
	name string
	init func(h *logic.Host) error
}

func (p funcPlugin) Name() string             { return p.name }
func (p funcPlugin) Init(h *logic.Host) error { return p.init(h) }

func plugin(routes map[string]logic.Handler) logic.Plugin {
	return funcPlugin{name: "test", init: func(h *logic.Host) error {
		for t, fn := range routes {
			h.Handle(t, fn)
		}
		return nil
	}}
}

func TestReplyAndUnknownType(t *testing.T) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
		"t.echo": func(_ context.Context, c *logic.Context) error { c.Reply(c.Data); return nil },
	})}})
	e := h.Edge("e1")
	a := e.Connect("alice", nil)
	e.Send(a, "t.echo", "1", `{"x":1}`)
	f := e.ExpectReply(a, "1")
	if f.Type != "t.echo" || string(f.Data) != `{"x":1}` {
		t.Fatalf("reply = %+v", f)
	}
	e.Send(a, "nope.nope", "2", "")
	f = e.ExpectReply(a, "2")
	if f.Type != protocol.TypeError || f.Code != protocol.ErrUnknownType {
		t.Fatalf("unknown type answered with %+v", f)
	}
}

func TestErrorsPanicsAndTransient(t *testing.T) {
	var calls atomic.Int32
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
		"t.forbidden": func(context.Context, *logic.Context) error {
			return protocol.NewError(protocol.ErrForbidden, "no")
		},
		"t.panic": func(context.Context, *logic.Context) error { panic("boom") },
		"t.plain": func(context.Context, *logic.Context) error { return errors.New("oops") },
		"t.flaky": func(_ context.Context, c *logic.Context) error {
			if calls.Add(1) < 3 {
				return logic.Transient(errors.New("store down"))
			}
			c.Reply([]byte(fmt.Sprintf(`{"redeliveries":%d}`, c.Redeliveries)))
			return nil
		},
		"t.down": func(context.Context, *logic.Context) error { return logic.Transient(errors.New("down")) },
		"t.kick": func(context.Context, *logic.Context) error { return logic.Refuse(protocol.CloseKicked, "") },
	})}, MaxRedeliveries: 2})
	e := h.Edge("e1")
	a := e.Connect("alice", nil)
	for _, tc := range []struct {
		typ  string
		code protocol.ErrorCode
	}{
		{"t.forbidden", protocol.ErrForbidden},
		{"t.panic", protocol.ErrInternal},
		{"t.plain", protocol.ErrInternal},
		{"t.down", protocol.ErrUnavailable},
	} {
		e.Send(a, tc.typ, tc.typ, "")
		f := e.ExpectReply(a, tc.typ)
		if f.Type != protocol.TypeError || f.Code != tc.code || f.Message == "" {
			t.Errorf("%s: got %+v, want error %d", tc.typ, f, tc.code)
		}
	}
	e.Send(a, "t.flaky", "f", "")
	if f := e.ExpectReply(a, "f"); string(f.Data) != `{"redeliveries":2}` {
		t.Fatalf("flaky: %+v", f)
	}
	e.Send(a, "t.kick", "k", "")
	d := e.Expect(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownClose }, "close")
	if d.Code != uint32(protocol.CloseKicked) || !slices.Equal(d.Conns, []uint64{a.ID}) || d.Epoch != a.Epoch {
		t.Fatalf("close = %+v", d)
	}
	st := h.Runtime.Stats()
	if st.Nacks < 4 || st.Errors < 4 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestOneEnvelopePerEdge: a message to a user with devices on two edges, and to a room with
// members on three edges, crosses the bus once per edge holding a target — never per recipient,
// never to edges without one.
func TestOneEnvelopePerEdge(t *testing.T) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
		"t.dm": func(ctx context.Context, c *logic.Context) error {
			return c.Send().ToUsers(ctx, []string{"bob", "bob", "nobody"}, logic.Frame("t.msg", []byte(`"hi"`)))
		},
		"t.room": func(ctx context.Context, c *logic.Context) error {
			o := logic.Frame("t.room", []byte(`"all"`))
			o.Priority, o.Exclude = protocol.PriorityPaid, c.Conn
			return c.Send().ToRoom(ctx, "r1", o)
		},
		"t.all": func(ctx context.Context, c *logic.Context) error {
			return c.Send().ToAll(ctx, logic.Frame("t.all", nil))
		},
	})}})
	e1, e2, e3, e4 := h.Edge("e1"), h.Edge("e2"), h.Edge("e3"), h.Edge("e4")
	a := e1.Connect("alice", nil)
	b1 := e2.Connect("bob", nil)
	b2 := e3.Connect("bob", nil)
	b3 := e3.Connect("bob", nil)
	e4.Connect("carol", nil)
	e1.Send(a, "t.dm", "1", "")
	for _, e := range []*logictest.Edge{e2, e3} {
		d := e.ExpectFrame("t.msg")
		if d.Target != protocol.TargetUsers || !slices.Equal(d.Users, []string{"bob"}) {
			t.Fatalf("%s got %+v", e.ID, d)
		}
	}
	// room: members on e1 (the sender and another), e2, e3; none on e4.
	a2 := e1.Connect("amy", nil)
	for _, m := range []struct {
		e *logictest.Edge
		c logic.Conn
	}{{e1, a}, {e1, a2}, {e2, b1}, {e3, b2}, {e3, b3}} {
		m.e.JoinDirect(m.c, "r1")
	}
	e1.Send(a, "t.room", "2", "")
	for _, e := range []*logictest.Edge{e1, e2, e3} {
		d := e.ExpectFrame("t.room")
		if d.Target != protocol.TargetRoom || d.Room != "r1" || d.Priority != protocol.PriorityPaid {
			t.Fatalf("%s got %+v", e.ID, d)
		}
		if want := map[string]uint64{"e1": a.ID}[e.ID]; d.ExcludeConn != want {
			t.Fatalf("%s exclude = %d, want %d", e.ID, d.ExcludeConn, want)
		}
	}
	e1.Send(a, "t.all", "3", "")
	logictest.Eventually(t, "broadcast", func() bool { return len(h.Broadcasts()) == 1 })
	// Everything the handlers published is in; now count per edge.
	for _, e := range []*logictest.Edge{e1, e2, e3, e4} {
		n := e.Count(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownDeliver })
		want := map[string]int{"e1": 1, "e2": 2, "e3": 2, "e4": 0}[e.ID]
		if n != want {
			t.Errorf("%s received %d deliveries, want %d: %s", e.ID, n, want, logictest.Describe(e.Received()))
		}
	}
}

func TestConnectHooks(t *testing.T) {
	var disconnects atomic.Int32
	p := funcPlugin{name: "gate", init: func(h *logic.Host) error {
		h.OnConnect(func(ctx context.Context, c *logic.Context) error {
			if c.Meta["token"] != "ok" {
				return logic.Refuse(protocol.ClosePolicy, "bad token")
			}
			return c.Join(ctx, "lobby", "user:"+c.User)
		})
		h.OnDisconnect(func(context.Context, *logic.Context) error { disconnects.Add(1); return nil })
		return nil
	}}
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{p}})
	e := h.Edge("e1")
	bad := e.Connect("mallory", map[string]string{"token": "no"})
	d := e.Expect(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownClose }, "refusal")
	if d.Code != uint32(protocol.ClosePolicy) || d.Reason != "bad token" || d.Conns[0] != bad.ID {
		t.Fatalf("refusal = %+v", d)
	}
	good := e.Connect("alice", map[string]string{"token": "ok"})
	d = e.Expect(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownJoin }, "join")
	if d.Conns[0] != good.ID || !slices.Equal(d.Rooms, []string{"lobby", "user:alice"}) {
		t.Fatalf("join = %+v", d)
	}
	logictest.Eventually(t, "presence join", func() bool {
		n, err := h.Presence.RoomCounts(context.Background(), []string{"lobby"})
		return err == nil && n["lobby"] == 1
	})
	e.Disconnect(good)
	logictest.Eventually(t, "disconnect hook", func() bool { return disconnects.Load() == 1 })
}

func TestRateLimitMiddleware(t *testing.T) {
	h := logictest.New(t, logic.Config{
		Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
			"t.ok": func(_ context.Context, c *logic.Context) error { c.Reply(nil); return nil },
		})},
		Middleware: []logic.Middleware{logic.RateLimit(logic.RateLimitConfig{Rate: 0.001, Burst: 3})},
	})
	e := h.Edge("e1")
	a := e.Connect("alice", nil)
	b := e.Connect("bob", nil)
	for i := range 5 {
		e.Send(a, "t.ok", fmt.Sprint(i), "")
	}
	for i := range 5 {
		f := e.ExpectReply(a, fmt.Sprint(i))
		limited := f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited
		if limited != (i >= 3) {
			t.Fatalf("frame %d: %+v", i, f)
		}
	}
	e.Send(b, "t.ok", "b", "") // another user has their own bucket
	if f := e.ExpectReply(b, "b"); f.Type != "t.ok" {
		t.Fatalf("bob: %+v", f)
	}
}

// TestPerUserOrder: with several consumers per replica, each user's frames are handled in order.
func TestPerUserOrder(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]string{}
	h := logictest.New(t, logic.Config{Consumers: 4, Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
		"t.seq": func(_ context.Context, c *logic.Context) error {
			mu.Lock()
			seen[c.User] = append(seen[c.User], c.ID)
			mu.Unlock()
			return nil
		},
	})}})
	e := h.Edge("e1")
	const users, n = 8, 50
	conns := make([]logic.Conn, users)
	for u := range users {
		conns[u] = e.Connect(fmt.Sprint("u", u), nil)
	}
	for i := range n {
		for u := range users {
			e.Send(conns[u], "t.seq", fmt.Sprint(i), "")
		}
	}
	logictest.Eventually(t, "all frames", func() bool {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, s := range seen {
			total += len(s)
		}
		return total == users*n
	})
	mu.Lock()
	defer mu.Unlock()
	for u, ids := range seen {
		for i, id := range ids {
			if id != fmt.Sprint(i) {
				t.Fatalf("user %s: frame %d was %s: %v", u, i, id, ids)
			}
		}
	}
}

func TestConfigAndRoutes(t *testing.T) {
	if _, err := logic.New(logic.Config{}); err == nil {
		t.Fatal("New without Bus/Presence succeeded")
	}
	dup := plugin(map[string]logic.Handler{"x.y": func(context.Context, *logic.Context) error { return nil }})
	h := logictest.New(t, logic.Config{})
	cfg := h.Config
	cfg.Plugins = []logic.Plugin{dup, dup}
	if _, err := logic.New(cfg); !errors.Is(err, logic.ErrDuplicateRoute) {
		t.Fatalf("duplicate route: %v", err)
	}
	cfg.Plugins = nil
	rt, err := logic.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = rt.Run(ctx) // returns at once: ctx is done
	if err := rt.Run(context.Background()); !errors.Is(err, logic.ErrStarted) {
		t.Fatalf("second Run: %v", err)
	}
}

func TestObserveAndKick(t *testing.T) {
	var mu sync.Mutex
	observed := map[string]int{}
	failed := 0
	h := logictest.New(t, logic.Config{
		Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
			"t.kick": func(ctx context.Context, c *logic.Context) error {
				return c.Send().Kick(ctx, "bob", protocol.CloseKicked, "")
			},
		})},
		Middleware: []logic.Middleware{logic.Observe(func(typ string, _ time.Duration, err error) {
			mu.Lock()
			observed[typ]++
			if err != nil {
				failed++
			}
			mu.Unlock()
		})},
	})
	e1, e2 := h.Edge("e1"), h.Edge("e2")
	a := e1.Connect("alice", nil)
	e1.Connect("bob", nil)
	e2.Connect("bob", nil)
	e1.Send(a, "t.kick", "1", "")
	for _, e := range []*logictest.Edge{e1, e2} {
		d := e.Expect(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownClose }, "kick")
		if d.Target != protocol.TargetUsers || !slices.Equal(d.Users, []string{"bob"}) || d.Code != uint32(protocol.CloseKicked) {
			t.Fatalf("%s: %+v", e.ID, d)
		}
	}
	e1.Send(a, "t.none", "2", "")
	e1.ExpectReply(a, "2")
	mu.Lock()
	defer mu.Unlock()
	if observed["t.kick"] != 1 || observed["t.none"] != 1 || failed != 1 {
		t.Fatalf("observed %v, %d failed", observed, failed)
	}
}

func TestTraceparentAndMalformed(t *testing.T) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{plugin(map[string]logic.Handler{
		"t.echo": func(_ context.Context, c *logic.Context) error { c.Reply(nil); return nil },
	})}})
	e := h.Edge("e1")
	a := e.Connect("alice", nil)
	e.PublishRaw("alice", []byte{0xff, 0xff, 0xff})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.Publish(&protocol.Upstream{Kind: protocol.UpMessage, Edge: e.ID, Epoch: e.Epoch, Conn: a.ID, User: "alice",
		Type: "t.echo", ID: "1", Traceparent: tp})
	d := e.Expect(func(d *protocol.Downstream) bool { return d.Frame.ID == "1" }, "reply")
	if len(d.Traceparent) != len(tp) || d.Traceparent[:36] != tp[:36] {
		t.Fatalf("downstream traceparent %q does not continue trace of %q", d.Traceparent, tp)
	}
	if st := h.Runtime.Stats(); st.Malformed != 1 {
		t.Fatalf("stats %+v", st)
	}
}
