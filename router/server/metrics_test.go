package server_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
)

func sample(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestMetricsAndPprof: presence calls served over gRPC show up on /metrics, counted by op,
// result and op kind; pprof answers on the admin address.
func TestMetricsAndPprof(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	srv := run(t, mem)
	cl, err := client.New(client.Config{Addr: srv.Addr(), CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	url := "http://" + srv.AdminAddr() + "/metrics"
	code, before := get(t, url)
	if code != 200 || sample(before, "go_goroutines") < 1 {
		t.Fatalf("metrics %d: %s", code, before)
	}

	ctx := context.Background()
	ep, err := cl.Register(ctx, "e1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Apply(ctx, "e1", ep, []presence.Op{
		{Kind: presence.OpConnect, ConnID: 1, User: "alice"},
		{Kind: presence.OpConnect, ConnID: 2, User: "bob"},
		{Kind: presence.OpJoin, ConnID: 1, User: "alice", Room: "r"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Apply(ctx, "e1", ep+7, []presence.Op{{Kind: presence.OpConnect, ConnID: 3, User: "carol"}}); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("apply with a wrong epoch: %v", err)
	}
	for range 3 {
		if _, err := cl.ResolveUsers(ctx, []string{"alice"}); err != nil {
			t.Fatal(err)
		}
	}
	_, body := get(t, url)
	for series, want := range map[string]float64{
		`sb_router_presence_duration_seconds_count{op="register",result="ok"}`:      1,
		`sb_router_presence_duration_seconds_count{op="apply",result="ok"}`:         1,
		`sb_router_presence_duration_seconds_count{op="apply",result="lease_lost"}`: 1,
		`sb_router_presence_duration_seconds_count{op="resolve_users",result="ok"}`: 3,
		`sb_router_presence_ops_total{kind="connect"}`:                              2,
		`sb_router_presence_ops_total{kind="join"}`:                                 1,
	} {
		if got := sample(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
	if code, body := get(t, "http://"+srv.AdminAddr()+"/debug/pprof/"); code != 200 || !regexp.MustCompile(`goroutine`).MatchString(body) {
		t.Fatalf("pprof: %d", code)
	}
}

// blockingStore holds ResolveUsers until release is closed (a call in flight at shutdown).
type blockingStore struct {
	presence.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error) {
	close(b.entered)
	<-b.release
	return b.Store.ResolveUsers(ctx, users)
}

// TestReadyzDraining: once Shutdown starts, /readyz answers 503 while in-flight calls finish.
func TestReadyzDraining(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	bs := &blockingStore{Store: mem, entered: make(chan struct{}), release: make(chan struct{})}
	srv := run(t, bs)
	cl, err := client.New(client.Config{Addr: srv.Addr(), CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	url := "http://" + srv.AdminAddr() + "/readyz"
	if code, body := get(t, url); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	callDone := make(chan error, 1)
	go func() { _, err := cl.ResolveUsers(context.Background(), []string{"u"}); callDone <- err }()
	<-bs.entered
	shutDone := make(chan error, 1)
	go func() { shutDone <- srv.Shutdown(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, url)
		if code == 503 && body == "not ready: draining\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz while draining: %d %q", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(bs.release)
	if err := <-callDone; err != nil {
		t.Fatalf("in-flight call: %v", err)
	}
	if err := <-shutDone; err != nil {
		t.Fatal(err)
	}
}
