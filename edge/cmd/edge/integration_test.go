//go:build integration

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/server"
)

func need(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: source .run/env (the lead's services)", name)
	}
	return v
}

// namespace creates a Pulsar namespace of its own so nothing else consumes this test's topics.
func namespace(t *testing.T, admin string) string {
	t.Helper()
	ns := fmt.Sprintf("public/sbedge-%d", rand.Uint32())
	req, _ := http.NewRequest(http.MethodPut, strings.TrimRight(admin, "/")+"/admin/v2/namespaces/"+ns, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("create namespace %s: HTTP %d", ns, res.StatusCode)
	}
	t.Cleanup(func() { deleteNamespace(t, admin, ns) })
	return ns
}

// deleteNamespace removes ns's topics and then ns (the standalone broker refuses a forced
// namespace delete). Best effort: it runs after the edges stopped.
func deleteNamespace(t *testing.T, admin, ns string) {
	base := strings.TrimRight(admin, "/") + "/admin/v2/"
	del := func(path string) {
		req, _ := http.NewRequest(http.MethodDelete, base+path, nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode/100 != 2 && res.StatusCode != http.StatusNotFound {
				t.Logf("cleanup: DELETE %s: HTTP %d", path, res.StatusCode)
			}
		}
	}
	res, err := http.Get(base + "namespaces/" + ns + "/topics")
	if err != nil {
		return
	}
	var topics []string
	_ = json.NewDecoder(res.Body).Decode(&topics)
	res.Body.Close()
	for _, tp := range topics {
		if rest, ok := strings.CutPrefix(tp, "persistent://"); ok {
			del("persistent/" + rest + "?force=true")
		}
	}
	del("namespaces/" + ns)
}

type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// TestEdgeBinaryOverPulsarAndRouter runs the edge binary's run() against the real Pulsar broker
// and an in-process router: a client authenticated with a dev token is reported to the router,
// its connect reaches the upstream topic, deliveries published to the edge's topic and to the
// broadcast topic reach it, and a drain requested through the admin API (as SIGTERM does) moves it.
func TestEdgeBinaryOverPulsarAndRouter(t *testing.T) {
	pulsarURL := need(t, "SB_PULSAR_URL")
	ns := namespace(t, need(t, "SB_PULSAR_ADMIN_URL"))
	edgeID := fmt.Sprintf("edge-it-%d", rand.Uint32())

	store, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rs, err := server.New(server.Config{Addr: "127.0.0.1:0", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- rs.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()

	b, err := bus.NewPulsar(bus.PulsarConfig{URL: pulsarURL})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ups := make(chan protocol.Upstream, 16)
	sub, err := b.Subscribe(t.Context(), protocol.UpstreamTopic(ns), "it", bus.SubOptions{Mode: bus.KeyShared},
		func(_ context.Context, d *bus.Delivery) error {
			var u protocol.Upstream
			if err := protocol.DecodeUpstream(d.Payload, &u); err == nil {
				ups <- u
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	t.Setenv("SB_JWT_SECRET", "it-secret")
	t.Setenv("SB_ADMIN_TOKEN", "it-admin")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wsURL, errc := startEdge(t, ctx, edgeID, pulsarURL, ns, rs.Addr())
	httpBase := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws")

	res, err := http.Get(httpBase + "/auth/dev-token?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if tok.Token == "" {
		t.Fatalf("no dev token (HTTP %d)", res.StatusCode)
	}
	if _, _, err := websocket.DefaultDialer.Dial(wsURL+"?user=mallory", nil); err == nil {
		t.Fatal("?user= accepted without -insecure-dev-auth")
	}
	c, _, err := websocket.DefaultDialer.Dial(wsURL+"?token="+tok.Token, nil)
	if err != nil {
		t.Fatalf("dial with token: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	read := func() frame {
		t.Helper()
		var f frame
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		return f
	}
	if w := read(); w.Type != protocol.TypeWelcome || !strings.Contains(string(w.Data), `"user":"alice"`) {
		t.Fatalf("welcome %+v", w)
	}

	select {
	case u := <-ups:
		if u.Kind != protocol.UpConnect || u.User != "alice" || u.Edge != edgeID {
			t.Fatalf("upstream %+v", u)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no UpConnect on the upstream topic")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conns, err := store.ResolveUsers(t.Context(), []string{"alice"})
		if err == nil && len(conns["alice"]) == 1 && conns["alice"][0].Edge == edgeID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router never saw alice on %s: %v %v", edgeID, conns, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	publish := func(topic string, d *protocol.Downstream) {
		done := make(chan error, 1)
		b.Publish(t.Context(), topic, bus.Message{Payload: protocol.AppendDownstream(nil, d)}, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
	}
	publish(protocol.EdgeTopic(ns, edgeID), &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers,
		Users: []string{"alice"}, Frame: protocol.ServerFrame{Type: "greeting", Data: []byte(`{"to":"alice"}`)}})
	if f := read(); f.Type != "greeting" || string(f.Data) != `{"to":"alice"}` {
		t.Fatalf("delivery %+v", f)
	}
	publish(protocol.BroadcastTopic(ns), &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetAll,
		Frame: protocol.ServerFrame{Type: "announce", Data: []byte(`"hi all"`)}})
	if f := read(); f.Type != "announce" {
		t.Fatalf("broadcast %+v", f)
	}

	// The admin API drains the edge as SIGTERM would; a wrong token is refused.
	drain := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, httpBase+"/admin/drain", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /admin/drain: %v", err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := drain("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("drain with a wrong token: HTTP %d, want 401", code)
	}
	if code := drain("it-admin"); code != http.StatusAccepted {
		t.Fatalf("drain: HTTP %d, want 202", code)
	}
	if f := read(); f.Type != protocol.TypeMove {
		t.Fatalf("after the drain request: %+v, want move", f)
	}
	_ = c.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return after the drain")
	}
}

// startEdge runs the binary's run() (with SB_JWT_SECRET from the environment) and returns its
// WebSocket URL and the channel run's result arrives on.
func startEdge(t *testing.T, ctx context.Context, id, pulsarURL, ns, router string) (string, <-chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-addr", "127.0.0.1:0", "-id", id, "-pulsar", pulsarURL, "-namespace", ns,
			"-router", router, "-dev-tokens", "-demo", "-drain", "300ms", "-move-jitter", "100ms"}, pw, io.Discard)
		pw.Close()
		errc <- err
	}()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case line <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-line:
		return regexp.MustCompile(`ws://\S+`).FindString(l), errc
	case err := <-errc:
		t.Fatalf("run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the edge printed no address within 60s")
	}
	return "", nil
}

// startRouter serves an in-memory presence store over gRPC until the test ends.
func startRouter(t *testing.T) (*presence.MemoryStore, string) {
	t.Helper()
	store, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := server.New(server.Config{Addr: "127.0.0.1:0", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	return store, rs.Addr()
}

// dial connects user with a dev token from the edge's issuer and reads the welcome.
func dial(t *testing.T, wsURL, user string) *websocket.Conn {
	t.Helper()
	httpBase := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws")
	res, err := http.Get(httpBase + "/auth/dev-token?user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	c, _, err := websocket.DefaultDialer.Dial(wsURL+"?token="+tok.Token, nil)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", wsURL, user, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var w frame
	if err := c.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
		t.Fatalf("welcome: %+v %v", w, err)
	}
	return c
}

// readUntil reads frames until one of type typ with the given id ("" = any) arrives.
func readUntil(t *testing.T, c *websocket.Conn, typ, id string) frame {
	t.Helper()
	for {
		var f frame
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if f.Type == protocol.TypeError {
			t.Fatalf("error frame while waiting for %s: %+v", typ, f)
		}
		if f.Type == typ && (id == "" || f.ID == id) {
			return f
		}
	}
}

// TestTwoEdgesChatAndDanmakuAcrossPulsar is the cluster's path with the real binaries' wiring:
// two edges (run()), the router, and a logic runtime with the chat and danmaku plugins, all over
// the real Pulsar broker. A 1:1 chat message from a client on edge 1 reaches the recipient on
// edge 2, and a danmaku reaches room members on both edges.
func TestTwoEdgesChatAndDanmakuAcrossPulsar(t *testing.T) {
	pulsarURL := need(t, "SB_PULSAR_URL")
	ns := namespace(t, need(t, "SB_PULSAR_ADMIN_URL"))
	_, routerAddr := startRouter(t)
	t.Setenv("SB_JWT_SECRET", "it-secret")
	tag := rand.Uint32()

	b, err := bus.NewPulsar(bus.PulsarConfig{URL: pulsarURL})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rc, err := client.New(client.Config{Addr: routerAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rt, err := logic.New(logic.Config{Bus: b, Presence: rc, Namespace: ns,
		Plugins: []logic.Plugin{chat.New(chat.Config{Store: chat.NewMemoryStore(0, 0)}), danmaku.New(danmaku.Config{})}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	ldone := make(chan error, 1)
	go func() { ldone <- rt.Run(lctx) }()
	defer func() { lcancel(); <-ldone }()

	ctx, cancel := context.WithCancel(context.Background())
	ws1, errc1 := startEdge(t, ctx, fmt.Sprintf("edge-a-%d", tag), pulsarURL, ns, routerAddr)
	ws2, errc2 := startEdge(t, ctx, fmt.Sprintf("edge-b-%d", tag), pulsarURL, ns, routerAddr)
	defer func() { cancel(); <-errc1; <-errc2 }()

	alice := dial(t, ws1, "alice")
	bob := dial(t, ws2, "bob")

	send := func(c *websocket.Conn, s string) {
		t.Helper()
		if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send(alice, `{"type":"chat.send","id":"c1","data":{"to":"bob","text":"across edges","cmid":"m1"}}`)
	readUntil(t, alice, "ack", "c1")
	reply := readUntil(t, alice, "chat.send", "c1")
	got := readUntil(t, bob, "chat.msg", "")
	var m struct {
		Conv, From, Text string
		Seq              uint64
	}
	if err := json.Unmarshal(got.Data, &m); err != nil || m.From != "alice" || m.Text != "across edges" || m.Seq != 1 {
		t.Fatalf("bob got %s (%v); alice's reply %s", got.Data, err, reply.Data)
	}

	for _, c := range []*websocket.Conn{alice, bob} {
		send(c, `{"type":"room.join","id":"j1","data":{"room":"live"}}`)
		readUntil(t, c, "room.join", "j1")
	}
	send(alice, `{"type":"danmaku.send","id":"d1","data":{"room":"live","text":"666"}}`)
	for _, c := range []*websocket.Conn{alice, bob} {
		f := readUntil(t, c, "danmaku", "")
		if !strings.Contains(string(f.Data), `"text":"666"`) {
			t.Fatalf("danmaku %s", f.Data)
		}
	}
}
