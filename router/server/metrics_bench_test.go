package server

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/presence"
)

// BenchmarkMetricsStore: the decorator's cost per presence call (memory store, so the
// overhead is not hidden behind a network round trip).
func BenchmarkMetricsStore(b *testing.B) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer mem.Close()
	ctx := context.Background()
	ep, err := mem.Register(ctx, "e1", time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if err := mem.Apply(ctx, "e1", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "u"}}); err != nil {
		b.Fatal(err)
	}
	_, wrapped, err := newMetrics(mem)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		s    presence.Store
	}{{"metrics=off", mem}, {"metrics=on", wrapped}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			users := []string{"u"}
			for b.Loop() {
				if _, err := tc.s.ResolveUsers(ctx, users); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
