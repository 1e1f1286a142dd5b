//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/edge/cmd/internal/wire"
	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/bustest"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/server"
)

func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: source .run/env (the lead's services)", name)
	}
	return v
}

// eventually polls ok until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func suffix() string { return fmt.Sprintf("%08x", rand.Uint32()) }

// namespace creates a Pulsar namespace of its own so nothing else consumes this test's topics;
// its topics and then the namespace are deleted at cleanup.
func namespace(t testing.TB, admin string) string {
	t.Helper()
	return bustest.PulsarNamespace(t, admin, "sbe2e")
}

// cluster is one test's Switchboard: a Pulsar namespace, Redis key prefixes, a router, edges
// and logic replicas, all torn down at cleanup.
type cluster struct {
	t          testing.TB
	ns         string
	pulsarURL  string
	adminURL   string
	rdb        *redis.Client
	store      *presence.RedisStore
	routerAddr string
	chatPrefix string
	edges      []*edgeNode
	logics     []*logicNode
	middleware []logic.Middleware // for the logic replicas added after it is set
	timings    *timings           // when set, logic replicas time their chat appends and user lookups
}

// timings records how long the chat store's Append and presence's ResolveUsers took.
type timings struct {
	mu              sync.Mutex
	append, resolve []time.Duration
}

func (tm *timings) add(dst *[]time.Duration, d time.Duration) {
	tm.mu.Lock()
	*dst = append(*dst, d)
	tm.mu.Unlock()
}

type timedStore struct {
	chat.Store
	tm *timings
}

func (s timedStore) Append(ctx context.Context, m chat.Message, members []string) (chat.Message, bool, error) {
	start := time.Now()
	out, dup, err := s.Store.Append(ctx, m, members)
	s.tm.add(&s.tm.append, time.Since(start))
	return out, dup, err
}

type timedPresence struct {
	logic.Presence
	tm *timings
}

func (p timedPresence) ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error) {
	start := time.Now()
	out, err := p.Presence.ResolveUsers(ctx, users)
	p.tm.add(&p.tm.resolve, time.Since(start))
	return out, err
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	c := &cluster{t: t, pulsarURL: need(t, "SB_PULSAR_URL")}
	admin := need(t, "SB_PULSAR_ADMIN_URL")
	c.adminURL = strings.TrimRight(admin, "/")
	raddr := need(t, "SB_REDIS_ADDR")
	c.ns = namespace(t, admin)

	c.rdb = redis.NewClient(&redis.Options{Addr: raddr})
	if err := c.rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis %s: %v", raddr, err)
	}
	sfx := suffix()
	presPrefix := "sbe2e:" + sfx + ":p:"
	c.chatPrefix = "sbe2e:" + sfx + ":chat:"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		it := c.rdb.Scan(ctx, 0, "sbe2e:"+sfx+":*", 1000).Iterator()
		var keys []string
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			_ = c.rdb.Del(ctx, keys[:n]...).Err()
			keys = keys[n:]
		}
		_ = c.rdb.Close()
	})

	store, err := presence.NewRedisStore(presence.RedisConfig{Client: c.rdb, Prefix: presPrefix})
	if err != nil {
		t.Fatal(err)
	}
	c.store = store
	t.Cleanup(func() { _ = store.Close() })

	rs, err := server.New(server.Config{Addr: "127.0.0.1:0", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- rs.Run(rctx) }()
	t.Cleanup(func() {
		rcancel()
		select {
		case <-rdone:
		case <-time.After(10 * time.Second):
			t.Error("router did not stop")
		}
	})
	c.routerAddr = rs.Addr()
	return c
}

// tap records the downstream envelopes an edge handled, by what they carry.
type tap struct {
	mu  sync.Mutex
	got []protocol.Downstream
	at  []time.Time // when the edge handled got[i]
}

func (tp *tap) record(payload []byte) {
	now := time.Now()
	var d protocol.Downstream
	if protocol.DecodeDownstream(payload, &d) != nil {
		return
	}
	d.Frame.Data = append([]byte(nil), d.Frame.Data...)
	tp.mu.Lock()
	tp.got = append(tp.got, d)
	tp.at = append(tp.at, now)
	tp.mu.Unlock()
}

// each calls fn for every envelope recorded, with its arrival time.
func (tp *tap) each(fn func(d *protocol.Downstream, at time.Time)) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for i := range tp.got {
		fn(&tp.got[i], tp.at[i])
	}
}

func (tp *tap) count(match func(*protocol.Downstream) bool) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	n := 0
	for i := range tp.got {
		if match(&tp.got[i]) {
			n++
		}
	}
	return n
}

type edgeNode struct {
	srv *edge.Server
	url string
	tap *tap
}

// addEdge starts an edge with its own Pulsar client, reporting presence to the router.
func (c *cluster) addEdge() *edgeNode {
	t := c.t
	t.Helper()
	id := fmt.Sprintf("e%d-%s", len(c.edges)+1, suffix())
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: c.pulsarURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	rc, err := client.New(client.Config{Addr: c.routerAddr, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	srv, err := edge.New(edge.Config{
		ID:              id,
		Addr:            "127.0.0.1:0",
		Loops:           2,
		InsecureDevAuth: true,
		Publisher:       wire.NewPublisher(b, c.ns),
		Presence:        rc,
		RateLimit:       2000,
		DrainWindow:     100 * time.Millisecond,
		DrainGrace:      100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := &edgeNode{srv: srv, tap: &tap{}}
	ds, err := wire.Subscribe(context.Background(), b, wire.Config{
		Edge: id, Namespace: c.ns,
		Retryable: func(err error) bool { return errors.Is(err, edge.ErrNotReady) },
	}, func(p []byte) error {
		err := srv.HandleDownstream(p)
		if err == nil {
			n.tap.record(p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ds.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edge %s: %v", id, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("edge %s did not stop", id)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("edge %s: %v", id, err)
	}
	if srv.Addr() == "" {
		t.Fatalf("edge %s did not listen", id)
	}
	eventually(t, 10*time.Second, "edge "+id+" registered with the router", func() bool { return srv.Epoch() != 0 })
	n.url = "ws://" + srv.Addr() + "/ws"
	c.edges = append(c.edges, n)
	return n
}

// crashBus wraps a logic replica's Pulsar client so the replica can die like a crashed process:
// after crash, nothing it publishes reaches the broker and no frame it was handling (or is
// handed from its prefetch queue) is acknowledged or negatively acknowledged; the frames stay
// unacknowledged until its consumers are gone, then the broker redelivers them.
type crashBus struct {
	bus.Bus
	dead    atomic.Bool
	handled sync.Map // key (user) → *atomic.Int64: frames this replica acknowledged per key
}

var errCrashed = errors.New("e2e: replica crashed")

func (b *crashBus) Publish(ctx context.Context, topic string, m bus.Message, done func(error)) {
	if b.dead.Load() {
		go done(fmt.Errorf("%w: %w", bus.ErrUnavailable, errCrashed))
		return
	}
	b.Bus.Publish(ctx, topic, m, done)
}

func (b *crashBus) Subscribe(ctx context.Context, topic, sub string, opts bus.SubOptions, h bus.Handler) (bus.Subscription, error) {
	return b.Bus.Subscribe(ctx, topic, sub, opts, func(ctx context.Context, d *bus.Delivery) error {
		if b.dead.Load() {
			<-ctx.Done() // the consumer is closing: leave the frame unacknowledged
			return errCrashed
		}
		err := h(ctx, d)
		if b.dead.Load() {
			<-ctx.Done() // died after doing the work, before the ack
			return errCrashed
		}
		if err == nil {
			v, _ := b.handled.LoadOrStore(d.Key, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		return err
	})
}

func (b *crashBus) handledFor(key string) int64 {
	if v, ok := b.handled.Load(key); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

type logicNode struct {
	rt     *logic.Runtime
	bus    *crashBus
	pulsar *bus.Pulsar
	cancel context.CancelFunc
	done   chan error
	killed atomic.Bool
	closed chan struct{} // closed when a kill's background Close returned
}

// addLogic starts a logic replica (chat on Redis, danmaku) with its own Pulsar client and
// router client.
func (c *cluster) addLogic() *logicNode {
	t := c.t
	t.Helper()
	pb, err := bus.NewPulsar(bus.PulsarConfig{URL: c.pulsarURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pb.Close() })
	rc, err := client.New(client.Config{Addr: c.routerAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	cs, err := chat.NewRedisStore(chat.RedisConfig{Client: c.rdb, Prefix: c.chatPrefix})
	if err != nil {
		t.Fatal(err)
	}
	var store chat.Store = cs
	var pres logic.Presence = rc
	if c.timings != nil {
		store, pres = timedStore{cs, c.timings}, timedPresence{rc, c.timings}
	}
	n := &logicNode{bus: &crashBus{Bus: pb}, pulsar: pb, done: make(chan error, 1), closed: make(chan struct{})}
	rt, err := logic.New(logic.Config{
		Bus: n.bus, Presence: pres, Namespace: c.ns,
		Plugins: []logic.Plugin{
			chat.New(chat.Config{Store: store}),
			danmaku.New(danmaku.Config{CountInterval: time.Hour}), // no online-count pushes in these tests
		},
		Middleware: c.middleware,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.rt = rt
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-n.done:
			if err != nil && !n.killed.Load() {
				t.Errorf("logic: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("logic replica did not stop")
		}
		if n.killed.Load() {
			select {
			case <-n.closed:
			case <-time.After(20 * time.Second):
				t.Error("killed replica's Pulsar client did not close")
			}
		}
	})
	select {
	case <-rt.Ready():
	case err := <-n.done:
		t.Fatalf("logic: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("logic replica not subscribed within 30s")
	}
	c.logics = append(c.logics, n)
	return n
}

// kill makes the replica die abruptly: it stops publishing and acknowledging at once, then its
// consumers and Pulsar client are closed in the background (nobody waits for a graceful stop).
func (n *logicNode) kill() {
	n.killed.Store(true)
	n.bus.dead.Store(true)
	n.cancel()
	go func() { _ = n.pulsar.Close(); close(n.closed) }()
}

// frame is a server frame as a client sees it, stamped with its arrival time.
type frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	at      time.Time
}

// wsClient is a test client: a reader goroutine records every frame it receives.
type wsClient struct {
	t    testing.TB
	user string
	edge *edgeNode
	conn *websocket.Conn
	wmu  sync.Mutex
	mu   sync.Mutex
	got  []frame
	rerr error
	done chan struct{}
	seq  atomic.Int64
}

var dialer = websocket.Dialer{Subprotocols: []string{protocol.SubprotocolJSON}, HandshakeTimeout: 10 * time.Second}

// dial connects user to the edge and waits for the welcome frame.
func dial(t testing.TB, e *edgeNode, user string) *wsClient {
	t.Helper()
	conn, res, err := dialer.Dial(e.url+"?user="+user, nil)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", e.url, user, err)
	}
	if res.Header.Get("Sec-WebSocket-Protocol") != protocol.SubprotocolJSON {
		t.Fatalf("subprotocol %q", res.Header.Get("Sec-WebSocket-Protocol"))
	}
	c := &wsClient{t: t, user: user, edge: e, conn: conn, done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	w := c.await("welcome", 10*time.Second, func(f frame) bool { return f.Type == protocol.TypeWelcome })
	if !strings.Contains(string(w.Data), `"user":"`+user+`"`) {
		t.Fatalf("welcome %s", w.Data)
	}
	return c
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, b, err := c.conn.ReadMessage()
		now := time.Now()
		if err != nil {
			c.mu.Lock()
			c.rerr = err
			c.mu.Unlock()
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			c.mu.Lock()
			c.rerr = fmt.Errorf("undecodable frame %q: %w", b, err)
			c.mu.Unlock()
			return
		}
		f.at = now
		c.mu.Lock()
		c.got = append(c.got, f)
		c.mu.Unlock()
	}
}

func (c *wsClient) close() {
	_ = c.conn.Close()
	<-c.done
}

// send writes a client frame and returns its id.
func (c *wsClient) send(typ string, data any) string {
	c.t.Helper()
	id := fmt.Sprintf("%s-%d", c.user, c.seq.Add(1))
	b, err := json.Marshal(data)
	if err != nil {
		c.t.Fatal(err)
	}
	msg, _ := json.Marshal(map[string]any{"type": typ, "id": id, "data": json.RawMessage(b)})
	c.wmu.Lock()
	err = c.conn.WriteMessage(websocket.TextMessage, msg)
	c.wmu.Unlock()
	if err != nil {
		c.t.Fatalf("%s: write %s: %v", c.user, typ, err)
	}
	return id
}

// frames returns the frames received so far that match.
func (c *wsClient) frames(match func(frame) bool) []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []frame
	for _, f := range c.got {
		if match == nil || match(f) {
			out = append(out, f)
		}
	}
	return out
}

// await waits for the first frame that matches.
func (c *wsClient) await(what string, d time.Duration, match func(frame) bool) frame {
	c.t.Helper()
	var got frame
	deadline := time.Now().Add(d)
	for {
		if fs := c.frames(match); len(fs) > 0 {
			got = fs[0]
			return got
		}
		c.mu.Lock()
		rerr := c.rerr
		c.mu.Unlock()
		if rerr != nil {
			c.t.Fatalf("%s waiting for %s: connection: %v (frames %s)", c.user, what, rerr, c.dump())
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: no %s within %v (frames %s)", c.user, what, d, c.dump())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// reply waits for the plugin's reply to request id (a frame of the request's type with its id).
func (c *wsClient) reply(typ, id string) frame {
	c.t.Helper()
	f := c.await(typ+" reply "+id, 20*time.Second, func(f frame) bool {
		return f.ID == id && (f.Type == typ || f.Type == protocol.TypeError)
	})
	if f.Type == protocol.TypeError {
		c.t.Fatalf("%s: %s %s answered with error %d %s", c.user, typ, id, f.Code, f.Message)
	}
	return f
}

func (c *wsClient) dump() string {
	fs := c.frames(nil)
	var sb strings.Builder
	for i, f := range fs {
		if i == 20 {
			fmt.Fprintf(&sb, " … %d more", len(fs)-20)
			break
		}
		fmt.Fprintf(&sb, " {%s %s %d %s %s}", f.Type, f.ID, f.Code, f.Message, f.Data)
	}
	return sb.String()
}

func isType(typ string) func(frame) bool { return func(f frame) bool { return f.Type == typ } }

// waitOnline waits until the router resolves user to n connections.
func (c *cluster) waitOnline(user string, n int) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, fmt.Sprintf("%s online with %d connections", user, n), func() bool {
		m, err := c.store.ResolveUsers(context.Background(), []string{user})
		return err == nil && len(m[user]) == n
	})
}

// topicStats returns the broker's stats of a persistent topic (for failure reports).
func (c *cluster) topicStats(topic string) string {
	path := strings.Replace(topic, "persistent://", "/admin/v2/persistent/", 1) + "/stats"
	res, err := http.Get(c.adminURL + path)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	return string(b)
}

// subStats summarises a subscription's broker stats: backlog, messages waiting in the replay
// queue, unacknowledged messages, consumers and their draining hashes.
func (c *cluster) subStats(topic, sub string) string {
	var st struct {
		Subscriptions map[string]struct {
			MsgBacklog      int64 `json:"msgBacklog"`
			MsgInReplay     int64 `json:"msgInReplay"`
			UnackedMessages int64 `json:"unackedMessages"`
			Consumers       []struct {
				Name     string `json:"consumerName"`
				Permits  int64  `json:"availablePermits"`
				Unacked  int64  `json:"unackedMessages"`
				Draining int64  `json:"drainingHashesCount"`
			} `json:"consumers"`
		} `json:"subscriptions"`
	}
	raw := c.topicStats(topic)
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return raw
	}
	s, ok := st.Subscriptions[sub]
	if !ok {
		return "no subscription " + sub
	}
	out := fmt.Sprintf("backlog %d, in replay %d, unacked %d, %d consumers:", s.MsgBacklog, s.MsgInReplay, s.UnackedMessages, len(s.Consumers))
	for _, k := range s.Consumers {
		out += fmt.Sprintf(" [%s permits %d unacked %d draining %d]", k.Name, k.Permits, k.Unacked, k.Draining)
	}
	return out
}

// cursorStats summarises the broker's internal state of a subscription's cursor.
func (c *cluster) cursorStats(topic, sub string) string {
	path := strings.Replace(topic, "persistent://", "/admin/v2/persistent/", 1) + "/internalStats"
	res, err := http.Get(c.adminURL + path)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	var st struct {
		Cursors map[string]map[string]any `json:"cursors"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return err.Error()
	}
	cur := st.Cursors[sub]
	var parts []string
	for _, k := range []string{"markDeletePosition", "readPosition", "waitingReadOp", "pendingReadOps", "messagesConsumedCounter", "state"} {
		parts = append(parts, fmt.Sprintf("%s=%v", k, cur[k]))
	}
	return strings.Join(parts, " ")
}
