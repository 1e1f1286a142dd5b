//go:build integration

package client_test

import (
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// BenchmarkServicePresence measures presence throughput through one router: edge clients
// -> gRPC -> server -> RedisStore -> real Redis (standalone and Cluster), all on this machine
// (presencetest.Bench: batched connects, batched resolves; the resolve cache is off so every
// resolve reaches Redis). Run:
//
//	source .run/env; cd router
//	go test -tags integration -run '^$' -bench BenchmarkServicePresence -benchtime 3s ./client/
func BenchmarkServicePresence(b *testing.B) {
	for _, target := range []struct{ name, env string }{{"standalone", "SB_REDIS_ADDR"}, {"cluster", "SB_REDIS_CLUSTER_ADDRS"}} {
		b.Run(target.name, func(b *testing.B) {
			rc := presencetest.RedisClient(b, target.env)
			st := newRedisStore(b, rc, presencetest.RedisPrefix(), 200*time.Millisecond)
			c, _ := serve(b, st, client.Config{CacheTTL: -1})
			presencetest.Bench(b, c, presencetest.RedisCPU(rc))
		})
	}
}
