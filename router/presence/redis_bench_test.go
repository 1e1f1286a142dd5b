//go:build integration

package presence_test

import (
	"testing"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// BenchmarkRedisPresence measures presence throughput against real Redis through one
// RedisStore in process (no gRPC): batched connects and batched resolves (presencetest.Bench;
// the per-CPU-second figures include the Redis servers' CPU).
// Run:
//
//	source .run/env; cd router
//	go test -tags integration -run '^$' -bench BenchmarkRedisPresence -benchtime 3s ./presence/
//
// The same load through the gRPC service is BenchmarkServicePresence in router/client.
func BenchmarkRedisPresence(b *testing.B) {
	for _, target := range []struct{ name, env string }{{"standalone", "SB_REDIS_ADDR"}, {"cluster", "SB_REDIS_CLUSTER_ADDRS"}} {
		b.Run(target.name, func(b *testing.B) {
			c := presencetest.RedisClient(b, target.env)
			prefix := presencetest.RedisPrefix()
			b.Cleanup(func() { presencetest.WipePrefix(nil, c, prefix) })
			s, err := presence.NewRedisStore(presence.RedisConfig{Client: c, Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			presencetest.Bench(b, s, presencetest.RedisCPU(c))
		})
	}
}

// BenchmarkMemoryPresence is the in-memory baseline of the same load.
func BenchmarkMemoryPresence(b *testing.B) {
	s, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	presencetest.Bench(b, s, nil)
}
