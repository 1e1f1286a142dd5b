package logic

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// instantBus accepts every publish at once. It calls done inline, which the Bus contract
// forbids; the runtime does not depend on it, and it keeps the benchmark about the runtime.
type instantBus struct{ n atomic.Int64 }

func (b *instantBus) Publish(_ context.Context, _ string, _ bus.Message, done func(error)) {
	b.n.Add(1)
	done(nil)
}
func (b *instantBus) Subscribe(context.Context, string, string, bus.SubOptions, bus.Handler) (bus.Subscription, error) {
	return nil, bus.ErrClosed
}
func (b *instantBus) Close() error { return nil }

// staticPresence places every room on edges edges and every user on one edge.
type staticPresence struct{ edges []presence.RoomEdge }

func (p staticPresence) ResolveUsers(_ context.Context, users []string) (map[string][]presence.Conn, error) {
	m := make(map[string][]presence.Conn, len(users))
	for i, u := range users {
		m[u] = []presence.Conn{{Edge: p.edges[i%len(p.edges)].Edge, Epoch: 1, ConnID: uint64(i + 1), User: u}}
	}
	return m, nil
}
func (p staticPresence) RoomEdges(context.Context, string) ([]presence.RoomEdge, error) {
	return p.edges, nil
}
func (p staticPresence) RoomCounts(context.Context, []string) (map[string]int, error) {
	return nil, nil
}

type benchPlugin struct{}

func (benchPlugin) Name() string { return "bench" }
func (benchPlugin) Init(h *Host) error {
	h.Handle("b.echo", func(_ context.Context, c *Context) error { c.Reply(c.Data); return nil })
	h.Handle("b.room", func(ctx context.Context, c *Context) error {
		return c.Send().ToRoom(ctx, "r", Out{Frame: protocol.ServerFrame{Type: "b.room", Data: c.Data}, Exclude: c.Conn})
	})
	return nil
}

// BenchmarkHandle is the runtime's per-frame cost around a handler: decode the envelope, run the
// middleware chain and the handler, encode and publish the deliveries, await them.
func BenchmarkHandle(b *testing.B) {
	for _, tc := range []struct {
		typ   string
		edges int
	}{{"b.echo", 1}, {"b.room", 1}, {"b.room", 10}, {"b.room", 100}} {
		b.Run(fmt.Sprintf("type=%s/edges=%d", tc.typ, tc.edges), func(b *testing.B) {
			edges := make([]presence.RoomEdge, tc.edges)
			for i := range edges {
				edges[i] = presence.RoomEdge{Edge: fmt.Sprint("edge-", i), Epoch: 1, Members: 100}
			}
			ib := &instantBus{}
			r, err := New(Config{Bus: ib, Presence: staticPresence{edges}, Plugins: []Plugin{benchPlugin{}},
				Middleware: []Middleware{RateLimit(RateLimitConfig{Rate: 1e9})}})
			if err != nil {
				b.Fatal(err)
			}
			payload := protocol.AppendUpstream(nil, &protocol.Upstream{Kind: protocol.UpMessage, Edge: "edge-0",
				Epoch: 1, Conn: 7, User: "alice", Type: tc.typ, ID: "1", Data: []byte(`{"text":"hello"}`)})
			d := &bus.Delivery{Message: bus.Message{Key: "alice", Payload: payload}}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := r.handle(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ib.n.Load())/float64(b.N), "envelopes/op")
		})
	}
}
