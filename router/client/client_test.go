package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
	"github.com/switchboard-io/switchboard/router/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs a router server over st on 127.0.0.1:0 and returns a client of it. Everything
// stops at the end of the test.
func serve(t testing.TB, st presence.Store, ccfg client.Config) (*client.Client, *server.Server) {
	t.Helper()
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	ccfg.Addr = srv.Addr()
	c, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	return c, srv
}

func newMemory(t testing.TB) *presence.MemoryStore {
	s, err := presence.NewMemoryStore(presence.MemoryConfig{ReapInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// The contract through client -> gRPC -> server -> MemoryStore, with the resolve cache on
// (default) and off.
func TestContractMemory(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{{"cache", 0}, {"nocache", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			presencetest.Run(t, func(t *testing.T) presence.Store {
				c, _ := serve(t, newMemory(t), client.Config{CacheTTL: tc.ttl})
				return c
			})
		})
	}
}

func TestErrorsMapped(t *testing.T) {
	c, _ := serve(t, newMemory(t), client.Config{})
	ctx := context.Background()
	if _, err := c.Register(ctx, "", 0); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("Register empty: %v", err)
	}
	if err := c.Renew(ctx, "nobody", 7); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Renew unknown: %v", err)
	}
	if err := c.Apply(ctx, "nobody", 7, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "u"}}); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Apply unknown: %v", err)
	}
	// A server that is gone: ErrUnavailable, not a hang.
	dead, err := client.New(client.Config{Addr: "127.0.0.1:1", CallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	if _, err := dead.ResolveUsers(ctx, []string{"u"}); !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("dead router: %v", err)
	}
	_ = dead.Close()
	if _, err := dead.Edges(ctx); !errors.Is(err, presence.ErrUnavailable) || !errors.Is(err, client.ErrClosed) {
		t.Fatalf("closed client: %v", err)
	}
}

// spyStore records the trace id seen by the store.
type spyStore struct {
	presence.Store
	seen chan trace.TraceID
}

func (s *spyStore) ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error) {
	s.seen <- trace.SpanContextFromContext(ctx).TraceID()
	return s.Store.ResolveUsers(ctx, users)
}

func TestTraceContextPropagated(t *testing.T) {
	spy := &spyStore{Store: newMemory(t), seen: make(chan trace.TraceID, 1)}
	c, _ := serve(t, spy, client.Config{CacheTTL: -1})
	tid := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := c.ResolveUsers(ctx, []string{"u"}); err != nil {
		t.Fatal(err)
	}
	if got := <-spy.seen; got != tid {
		t.Fatalf("store saw trace %s, want %s", got, tid)
	}
}

// A Sync larger than SyncChunk is sent in pieces and ends in the same state as one Sync.
func TestSyncChunked(t *testing.T) {
	ctx := context.Background()
	c, _ := serve(t, newMemory(t), client.Config{SyncChunk: 3, CacheTTL: -1})
	ep, err := c.Register(ctx, "e", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Previous state that the Sync must replace.
	if err := c.Apply(ctx, "e", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 99, User: "old"}, {Kind: presence.OpJoin, ConnID: 99, Room: "r0"}}); err != nil {
		t.Fatal(err)
	}
	var conns []presence.Conn
	rooms := map[string][]uint64{}
	var users []string
	for i := 1; i <= 10; i++ {
		u := fmt.Sprintf("u%d", i)
		users = append(users, u)
		conns = append(conns, presence.Conn{ConnID: uint64(i), User: u, Meta: map[string]string{"i": u}})
		rooms[fmt.Sprintf("r%d", i%3)] = append(rooms[fmt.Sprintf("r%d", i%3)], uint64(i))
		rooms["all"] = append(rooms["all"], uint64(i))
	}
	rooms["all"] = append(rooms["all"], 1000) // unknown conn: ignored
	if err := c.Sync(ctx, "e", ep, conns, rooms); err != nil {
		t.Fatal(err)
	}
	m, err := c.ResolveUsers(ctx, append(users, "old"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 10 || m["u7"][0].Meta["i"] != "u7" {
		t.Fatalf("resolve after chunked sync: %d users %+v", len(m), m["u7"])
	}
	counts, err := c.RoomCounts(ctx, []string{"r0", "r1", "r2", "all"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"r0": 3, "r1": 4, "r2": 3, "all": 10}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("room counts %v, want %v", counts, want)
	}
	if err := c.Sync(ctx, "e", ep, append(conns, presence.Conn{ConnID: 50}), nil); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("chunked sync with a conn without user: %v", err)
	}
}
