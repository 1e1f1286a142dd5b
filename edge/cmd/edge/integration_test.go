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

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
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
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodDelete, strings.TrimRight(admin, "/")+"/admin/v2/namespaces/"+ns+"?force=true", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	})
	return ns
}

type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// TestEdgeBinaryOverPulsarAndRouter runs the edge binary's run() against the real Pulsar broker
// and an in-process router: a client authenticated with a dev token is reported to the router,
// its connect reaches the upstream topic, deliveries published to the edge's topic and to the
// broadcast topic reach it, and a signal drains it with a move frame.
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-addr", "127.0.0.1:0", "-id", edgeID, "-pulsar", pulsarURL, "-namespace", ns,
			"-router", rs.Addr(), "-dev-tokens", "-demo", "-drain", "300ms", "-move-jitter", "100ms"}, pw, io.Discard)
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
	var wsURL string
	select {
	case l := <-line:
		wsURL = regexp.MustCompile(`ws://\S+`).FindString(l)
	case err := <-errc:
		t.Fatalf("run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the edge printed no address within 60s")
	}
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

	cancel() // SIGTERM: drain
	if f := read(); f.Type != protocol.TypeMove {
		t.Fatalf("after the signal: %+v, want move", f)
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
