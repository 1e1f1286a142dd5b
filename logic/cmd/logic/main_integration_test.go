//go:build integration

package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus/bustest"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/server"
)

var hc = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBinaryAdminSurface runs the binary's wiring against real Pulsar and an in-process
// router: /readyz follows the subscription and the router, /metrics moves, the admin API and
// pprof need the token.
func TestBinaryAdminSurface(t *testing.T) {
	pulsarURL, adminURL := os.Getenv("SB_PULSAR_URL"), os.Getenv("SB_PULSAR_ADMIN_URL")
	if pulsarURL == "" || adminURL == "" {
		t.Fatal("SB_PULSAR_URL and SB_PULSAR_ADMIN_URL must be set (source .run/env)")
	}
	ns := bustest.PulsarNamespace(t, adminURL, "logiccmd")

	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	rsrv, err := server.New(server.Config{Addr: "127.0.0.1:0", Store: mem})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rstop := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- rsrv.Run(rctx) }()
	defer func() { rstop(); <-rdone }()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := l.Addr().String()
	l.Close()
	const token = "itest-token"
	o := options{pulsar: pulsarURL, namespace: ns, sub: "sb-logic", router: rsrv.Addr(), admin: adminAddr,
		adminToken: token, consumers: 2, rate: 50}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	base := "http://" + adminAddr
	waitFor(t, "/readyz 200", func() bool { c, _ := call(t, "GET", base+"/readyz", "", ""); return c == 200 })

	if c, body := call(t, "GET", base+"/metrics", "", ""); c != 200 || !strings.Contains(body, "\nsb_logic_ready 1\n") {
		t.Fatalf("metrics %d: %s", c, body)
	}
	for _, p := range []string{"/admin/online", "/debug/pprof/"} {
		if c, _ := call(t, "GET", base+p, "", ""); c != 401 {
			t.Errorf("%s without token: %d", p, c)
		}
		if c, _ := call(t, "GET", base+p, token, ""); c != 200 {
			t.Errorf("%s with token: %d", p, c)
		}
	}
	if c, body := call(t, "POST", base+"/admin/broadcast", token, `{"type":"sys.notice","data":{"t":1}}`); c != 200 {
		t.Fatalf("broadcast %d: %s", c, body)
	}
	if _, body := call(t, "GET", base+"/metrics", "", ""); !strings.Contains(body, `sb_logic_bus_publish_duration_seconds_count{result="ok"} 1`) {
		t.Fatalf("publish not counted: %s", body)
	}

	rstop() // the router goes away: logic is no longer ready
	<-rdone
	rdone <- nil
	waitFor(t, "/readyz 503", func() bool {
		c, body := call(t, "GET", base+"/readyz", "", "")
		return c == 503 && strings.Contains(body, "router")
	})
}
