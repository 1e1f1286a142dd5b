package client_test

import (
	"testing"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// BenchmarkServiceMemory is the gRPC path without Redis: edge clients -> gRPC -> server ->
// MemoryStore. Compared with BenchmarkMemoryPresence (presence) it is the cost of the service
// layer; with BenchmarkServicePresence (integration) the cost of Redis.
func BenchmarkServiceMemory(b *testing.B) {
	c, _ := serve(b, newMemory(b), client.Config{CacheTTL: -1})
	presencetest.Bench(b, c, nil)
}
