//go:build integration

package logic_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/bustest"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/logic/plugins/echo"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

var adminHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// pulsarNS creates a namespace of its own for the test (the topics of other test runs on the
// same broker are never touched) and returns the broker URL and the namespace.
func pulsarNS(t *testing.T) (string, string) {
	t.Helper()
	svc, admin := os.Getenv("SB_PULSAR_URL"), os.Getenv("SB_PULSAR_ADMIN_URL")
	if svc == "" || admin == "" {
		t.Fatal("SB_PULSAR_URL and SB_PULSAR_ADMIN_URL must be set (source .run/env)")
	}
	return svc, bustest.PulsarNamespace(t, admin, "logictest")
}

func newPulsar(t *testing.T, url string) *bus.Pulsar {
	t.Helper()
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func redisChatStore(t *testing.T) chat.Store {
	t.Helper()
	addr := os.Getenv("SB_REDIS_ADDR")
	if addr == "" {
		t.Fatal("SB_REDIS_ADDR must be set (source .run/env)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis %s: %v", addr, err)
	}
	prefix := fmt.Sprintf("sbtest:logic:%x:", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		_ = c.Close()
	})
	s, err := chat.NewRedisStore(chat.RedisConfig{Client: c, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startReplica runs one more Runtime with cfg until the test ends (or stop is called).
func startReplica(t *testing.T, cfg logic.Config) (rt *logic.Runtime, stop func()) {
	t.Helper()
	rt, err := logic.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rt.Run(context.Background()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := rt.Shutdown(ctx); err != nil {
				t.Error(err)
			}
			<-done
		})
	}
	t.Cleanup(stop)
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("replica: %v", err)
	}
	return rt, stop
}

// TestPulsarChatAndRoomAcrossEdges: two logic replicas on a real Pulsar broker and a real
// Redis. Alice on e1 writes to Bob, connected on e2 and e3: each of Bob's edges receives the
// message once; Bob recovers it with sync from another edge. A danmaku to a room with members
// on three edges crosses the bus exactly once per edge.
func TestPulsarChatAndRoomAcrossEdges(t *testing.T) {
	url, ns := pulsarNS(t)
	b := newPulsar(t, url)
	t.Cleanup(func() { _ = b.Close() })
	store := redisChatStore(t)
	plugins := func() []logic.Plugin {
		return []logic.Plugin{echo.Plugin{}, chat.New(chat.Config{Store: store}), danmaku.New(danmaku.Config{CountInterval: time.Hour})}
	}
	h := logictest.New(t, logic.Config{Bus: b, Namespace: ns, Plugins: plugins(), Consumers: 2})
	cfg2 := h.Config
	cfg2.Plugins = plugins()
	startReplica(t, cfg2)

	e1, e2, e3 := h.Edge("e1"), h.Edge("e2"), h.Edge("e3")
	alice := e1.Connect("alice", nil)
	e2.Connect("bob", nil)
	e3.Connect("bob", nil)
	msgID := func(d *protocol.Downstream) string {
		var m chat.Message
		if d.Frame.Type != chat.TypeMsg || json.Unmarshal(d.Frame.Data, &m) != nil {
			return ""
		}
		return m.ID
	}
	var ids []string
	for i := range 2 {
		e1.SendJSON(alice, chat.TypeSend, fmt.Sprint("s", i), map[string]string{"to": "bob", "text": fmt.Sprint("hi ", i), "cmid": fmt.Sprint("c", i)})
		f := e1.ExpectReply(alice, fmt.Sprint("s", i))
		var r struct {
			ID  string `json:"id"`
			Seq uint64 `json:"seq"`
		}
		if f.Type == protocol.TypeError || json.Unmarshal(f.Data, &r) != nil || r.Seq != uint64(i+1) {
			t.Fatalf("send %d: %+v", i, f)
		}
		ids = append(ids, r.ID)
		for _, e := range []*logictest.Edge{e2, e3} {
			e.Expect(func(d *protocol.Downstream) bool { return msgID(d) == r.ID }, "chat.msg "+r.ID)
		}
	}
	// The second message arrived after the first on each edge's ordered topic: the first
	// cannot have a late duplicate in flight any more.
	for _, e := range []*logictest.Edge{e2, e3} {
		if n := e.Count(func(d *protocol.Downstream) bool { return msgID(d) == ids[0] }); n != 1 {
			t.Errorf("%s received message %s %d times", e.ID, ids[0], n)
		}
	}
	e4 := h.Edge("e4")
	bob4 := e4.Connect("bob", nil)
	e4.SendJSON(bob4, chat.TypeSync, "y", map[string]any{"conv": chat.DirectConv("alice", "bob"), "since": 0})
	f := e4.ExpectReply(bob4, "y")
	var sr struct{ Messages []chat.Message }
	if json.Unmarshal(f.Data, &sr) != nil || len(sr.Messages) != 2 || sr.Messages[0].ID != ids[0] {
		t.Fatalf("sync: %+v", f)
	}

	// Room members on e1 (two), e2, e3; nobody on e4.
	members := []struct {
		e *logictest.Edge
		c logic.Conn
	}{{e1, alice}, {e1, e1.Connect("amy", nil)}, {e2, e2.Connect("carl", nil)}, {e3, e3.Connect("dora", nil)}}
	for _, m := range members {
		m.e.SendJSON(m.c, danmaku.TypeJoin, "j", map[string]string{"room": "live"})
		m.e.ExpectReply(m.c, "j")
	}
	logictest.Eventually(t, "room members", func() bool {
		n, err := h.Presence.RoomCounts(context.Background(), []string{"live"})
		return err == nil && n["live"] == len(members)
	})
	isText := func(text string) func(d *protocol.Downstream) bool {
		return func(d *protocol.Downstream) bool {
			var m danmaku.Danmu
			return d.Target == protocol.TargetRoom && json.Unmarshal(d.Frame.Data, &m) == nil && m.Text == text
		}
	}
	for _, text := range []string{"first", "second"} {
		e2.SendJSON(members[2].c, danmaku.TypeSend, text, map[string]string{"room": "live", "text": text})
		for _, e := range []*logictest.Edge{e1, e2, e3} {
			e.Expect(isText(text), "danmaku "+text)
		}
	}
	for _, e := range []*logictest.Edge{e1, e2, e3, e4} {
		want := map[string]int{"e4": 0}[e.ID]
		if e.ID != "e4" {
			want = 1
		}
		if n := e.Count(isText("first")); n != want {
			t.Errorf("%s: %d room envelopes for one danmaku, want %d", e.ID, n, want)
		}
	}
}

// TestPulsarReplicaKilled: replica A, a separate process, is killed with SIGKILL mid-stream;
// replica B (in this process) takes over A's users. Every frame is handled (none lost, so none
// acknowledged and lost) and each user's frames are handled in order: merged by handling time
// across both replicas, a user's frame numbers may repeat (a frame A handled but had not yet
// acknowledged is redelivered) but never jump ahead.
func TestPulsarReplicaKilled(t *testing.T) {
	url, ns := pulsarNS(t)
	edgeBus, busB := newPulsar(t, url), newPulsar(t, url)
	t.Cleanup(func() { _ = edgeBus.Close(); _ = busB.Close() })
	pres, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pres.Close() })

	type rec struct {
		n       int
		at      int64
		replica string
	}
	const users, perUser, killAfter = 16, 100, 50
	var mu sync.Mutex
	seen := make(map[string][]rec)
	handledA := 0
	killNow := make(chan struct{})

	// Replica A: this test binary re-executed, reporting on stdout.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childReplicaEnv+"="+ns)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var user string
			var r rec
			if sc.Text() == "ready" {
				close(ready)
				continue
			}
			if _, err := fmt.Sscan(sc.Text(), &user, &r.n, &r.at); err != nil {
				continue
			}
			r.replica = "A"
			mu.Lock()
			seen[user] = append(seen[user], r)
			if handledA++; handledA == killAfter {
				close(killNow)
			}
			mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("replica A did not come up")
	}
	startReplica(t, logic.Config{Bus: busB, Presence: pres, Namespace: ns, Consumers: 2,
		Plugins: []logic.Plugin{seqRecorder(func(user string, n int) {
			mu.Lock()
			seen[user] = append(seen[user], rec{n: n, at: time.Now().UnixNano(), replica: "B"})
			mu.Unlock()
		})}})

	topic := protocol.UpstreamTopic(ns)
	var pubWG sync.WaitGroup
	pubErr := make(chan error, users*perUser)
	for n := range perUser {
		for u := range users {
			user := fmt.Sprint("u", u)
			up := protocol.Upstream{Kind: protocol.UpMessage, Edge: "e1", Epoch: 1, Conn: uint64(u + 1), User: user,
				Type: "t.seq", Data: []byte(fmt.Sprint(n))}
			pubWG.Add(1)
			edgeBus.Publish(context.Background(), topic, bus.Message{Key: user, Payload: protocol.AppendUpstream(nil, &up)},
				func(err error) {
					if err != nil {
						pubErr <- err
					}
					pubWG.Done()
				})
		}
	}
	select {
	case <-killNow:
	case <-time.After(logictest.Timeout):
		t.Fatal("replica A handled fewer than killAfter frames (Key_Shared gave it no key?)")
	}
	_ = cmd.Process.Kill() // SIGKILL: no shutdown, no flush, unacked frames stay unacked
	<-readerDone
	_ = cmd.Wait()
	mu.Lock()
	killedAt := handledA
	mu.Unlock()
	pubWG.Wait()
	close(pubErr)
	for err := range pubErr {
		t.Fatalf("publish: %v", err)
	}
	logictest.Eventually(t, "every frame handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for u := range users {
			got := map[int]bool{}
			for _, r := range seen[fmt.Sprint("u", u)] {
				got[r.n] = true
			}
			if len(got) != perUser {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	dups, takenOver := 0, 0
	for user, rs := range seen {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].at < rs[j].at })
		high, hadA := -1, false
		for i, r := range rs {
			if r.n > high+1 {
				t.Fatalf("%s: frame %d handled after %d (position %d): order broken", user, r.n, high, i)
			}
			if r.n <= high {
				dups++
			}
			high = max(high, r.n)
			if r.replica == "A" {
				hadA = true
			} else if hadA {
				takenOver++
			}
		}
	}
	if takenOver == 0 {
		t.Fatal("replica B handled no frame of a user replica A had handled")
	}
	t.Logf("%d frames; A (a process) killed after %d; B took over %d frames of A's users; %d redelivered duplicates",
		users*perUser, killedAt, takenOver, dups)
}

// TestPulsarLatency measures, in one run on this machine: Pulsar's own publish→consume, the
// echo round trip (edge → Pulsar → logic → Pulsar → edge) and the chat round trip (A's edge →
// Pulsar → logic + Redis → Pulsar → B's edge). Figures are logged, never asserted.
func TestPulsarLatency(t *testing.T) {
	url, ns := pulsarNS(t)
	edgeBus, logicBus := newPulsar(t, url), newPulsar(t, url)
	t.Cleanup(func() { _ = edgeBus.Close(); _ = logicBus.Close() })
	pres, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pres.Close() })
	var hmu sync.Mutex
	handled := map[string][]time.Duration{} // handler time per frame type (Redis included, publishes not)
	startReplica(t, logic.Config{Bus: logicBus, Presence: pres, Namespace: ns,
		Plugins: []logic.Plugin{echo.Plugin{}, chat.New(chat.Config{Store: redisChatStore(t)})},
		Middleware: []logic.Middleware{logic.Observe(func(typ string, d time.Duration, _ error) {
			hmu.Lock()
			handled[typ] = append(handled[typ], d)
			hmu.Unlock()
		})}})
	ctx := context.Background()
	// 200 frames/s from 50 senders: one user's frames are handled one at a time (Key_Shared),
	// so a single sender at 200/s would measure queueing behind its own frames.
	const n, gap, senders = 400, 5 * time.Millisecond, 50

	// arrivals: frame id -> receive time, fed by the edges' subscriptions.
	type arrival struct {
		id string
		at time.Time
	}
	arrivals := make(chan arrival, 4*n)
	sub := func(topic, name string, id func(*bus.Delivery) string) {
		s, err := edgeBus.Subscribe(ctx, topic, name, bus.SubOptions{Mode: bus.Exclusive}, func(_ context.Context, d *bus.Delivery) error {
			if k := id(d); k != "" {
				arrivals <- arrival{k, time.Now()}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
	}
	frameID := func(d *bus.Delivery) string {
		var env protocol.Downstream
		if protocol.DecodeDownstream(d.Payload, &env) != nil {
			return ""
		}
		if env.Frame.Type == chat.TypeMsg {
			var m chat.Message
			_ = json.Unmarshal(env.Frame.Data, &m)
			return "msg:" + m.CMID
		}
		return env.Frame.ID
	}
	rawTopic := "persistent://" + ns + "/latency-raw"
	sub(rawTopic, "raw", func(d *bus.Delivery) string { return string(d.Payload) })
	sub(protocol.EdgeTopic(ns, "ea"), "ea", frameID)
	sub(protocol.EdgeTopic(ns, "eb"), "eb", frameID)
	epochA, _ := pres.Register(ctx, "ea", time.Minute)
	epochB, _ := pres.Register(ctx, "eb", time.Minute)
	if err := pres.Apply(ctx, "eb", epochB, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "bob"}}); err != nil {
		t.Fatal(err)
	}
	if err := pres.Apply(ctx, "ea", epochA, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "alice"}}); err != nil {
		t.Fatal(err)
	}

	measure := func(name string, send func(i int) (id string)) []time.Duration {
		sent := make(map[string]time.Time, n)
		var lat []time.Duration
		tick := time.NewTicker(gap)
		defer tick.Stop()
		deadline := time.After(2 * time.Minute)
		for i := 0; len(lat) < n; {
			select {
			case <-tick.C:
				if i < n {
					sent[send(i)] = time.Now()
					i++
				}
			case a := <-arrivals:
				if at, ok := sent[a.id]; ok {
					lat = append(lat, a.at.Sub(at))
					delete(sent, a.id)
				}
			case <-deadline:
				t.Fatalf("%s: %d of %d answered", name, len(lat), n)
			}
		}
		return lat
	}
	pub := func(topic, key string, payload []byte) {
		edgeBus.Publish(ctx, topic, bus.Message{Key: key, Payload: payload}, func(err error) {
			if err != nil {
				t.Errorf("publish: %v", err)
			}
		})
	}
	up := func(user string, conn uint64, epoch uint64, edge, typ, id string, data []byte) []byte {
		return protocol.AppendUpstream(nil, &protocol.Upstream{Kind: protocol.UpMessage, Edge: edge, Epoch: epoch,
			Conn: conn, User: user, Type: typ, ID: id, Data: data, TimeUnixNano: time.Now().UnixNano()})
	}
	// Warm up producers, consumers and the Redis script cache.
	_ = measure("warm-up", func(i int) string {
		id := fmt.Sprint("w", i)
		pub(protocol.UpstreamTopic(ns), "alice", up("alice", 1, epochA, "ea", echo.Type, id, []byte(`1`)))
		return id
	})

	raw := measure("pulsar", func(i int) string {
		id := fmt.Sprint("r", i)
		pub(rawTopic, "k", []byte(id))
		return id
	})
	echoLat := measure("echo", func(i int) string {
		id, user := fmt.Sprint("e", i), fmt.Sprint("a", i%senders)
		pub(protocol.UpstreamTopic(ns), user, up(user, 1, epochA, "ea", echo.Type, id, []byte(`{"t":"hello"}`)))
		return id
	})
	chatLat := measure("chat", func(i int) string {
		cmid, user := fmt.Sprint("c", i), fmt.Sprint("a", i%senders)
		data, _ := json.Marshal(map[string]string{"to": "bob", "text": "hello bob", "cmid": cmid})
		pub(protocol.UpstreamTopic(ns), user, up(user, 1, epochA, "ea", chat.TypeSend, "", data))
		return "msg:" + cmid
	})
	p := func(l []time.Duration, q float64) time.Duration {
		s := slices.Clone(l)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[min(len(s)-1, int(q*float64(len(s))))].Round(10 * time.Microsecond)
	}
	t.Logf("n=%d at %v intervals from %d senders, one run:", n, gap, senders)
	t.Logf("  pulsar publish→consume     p50 %-9v p99 %v", p(raw, .5), p(raw, .99))
	t.Logf("  echo round trip (2 hops)   p50 %-9v p99 %v", p(echoLat, .5), p(echoLat, .99))
	t.Logf("  chat A→logic+Redis→B       p50 %-9v p99 %v", p(chatLat, .5), p(chatLat, .99))
	t.Logf("  goal: p50 ≤ 2×%v+2ms = %v, p99 ≤ 30ms", p(raw, .5), 2*p(raw, .5)+2*time.Millisecond)
	hmu.Lock()
	defer hmu.Unlock()
	if h := handled[chat.TypeSend]; len(h) > 0 {
		t.Logf("  of which chat.send handler (Redis, presence) p50 %-9v p99 %v", p(h, .5), p(h, .99))
	}
}

// TestPulsarThroughput measures one replica's echo throughput on a real broker for several
// Config.Consumers × Config.Concurrency: a frame holds its slot until its deliveries are
// accepted by the broker, so slots bound the replica's parallelism (4×1 is a replica of 4
// serial consumers, as all replicas were before Concurrency). Logged, never asserted.
func TestPulsarThroughput(t *testing.T) {
	url, _ := pulsarNS(t)
	edgeBus := newPulsar(t, url)
	t.Cleanup(func() { _ = edgeBus.Close() })
	pres, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pres.Close() })
	ctx := context.Background()
	const frames, users = 4000, 400
	for _, sc := range []struct{ consumers, concurrency int }{{4, 1}, {16, 1}, {4, 64}} {
		consumers := sc.consumers
		_, ns := pulsarNS(t) // a fresh upstream topic: no frames of the previous round
		edge := fmt.Sprint("tp", consumers, "x", sc.concurrency)
		got := make(chan struct{}, frames)
		s, err := edgeBus.Subscribe(ctx, protocol.EdgeTopic(ns, edge), edge, bus.SubOptions{Mode: bus.Exclusive},
			func(context.Context, *bus.Delivery) error { got <- struct{}{}; return nil })
		if err != nil {
			t.Fatal(err)
		}
		logicBus := newPulsar(t, url)
		_, stop := startReplica(t, logic.Config{Bus: logicBus, Presence: pres, Namespace: ns,
			Subscription: "sub-" + edge, Consumers: consumers, Concurrency: sc.concurrency, Plugins: []logic.Plugin{echo.Plugin{}}})
		start := time.Now()
		for i := range frames {
			user := fmt.Sprint("u", i%users)
			payload := protocol.AppendUpstream(nil, &protocol.Upstream{Kind: protocol.UpMessage, Edge: edge, Epoch: 1,
				Conn: uint64(i%users + 1), User: user, Type: echo.Type, ID: fmt.Sprint(i), Data: []byte(`"x"`)})
			edgeBus.Publish(ctx, protocol.UpstreamTopic(ns), bus.Message{Key: user, Payload: payload}, func(err error) {
				if err != nil {
					t.Errorf("publish: %v", err)
				}
			})
		}
		for i := range frames {
			select {
			case <-got:
			case <-time.After(time.Minute):
				t.Fatalf("consumers=%d: %d of %d replies", consumers, i, frames)
			}
		}
		el := time.Since(start)
		t.Logf("consumers=%-3d concurrency=%-3d %d echo frames from %d users in %v: %.0f frames/s", consumers, sc.concurrency, frames, users,
			el.Round(time.Millisecond), frames/el.Seconds())
		stop()
		_ = logicBus.Close()
		_ = s.Close()
	}
}
