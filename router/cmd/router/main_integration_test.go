//go:build integration

package main

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// TestRunRedis: the binary's wiring against real Redis and real Redis Cluster (ready means the
// store reached Redis).
func TestRunRedis(t *testing.T) {
	for _, env := range []string{"SB_REDIS_ADDR", "SB_REDIS_CLUSTER_ADDRS"} {
		t.Run(env, func(t *testing.T) {
			addr := os.Getenv(env)
			if addr == "" {
				t.Fatalf("%s is not set: run under deploy/local/with-services.sh (make test) or source .run/env", env)
			}
			runRouter(t, "-redis", addr, "-redis-prefix", fmt.Sprintf("sbtest:cmd%d:", time.Now().UnixNano()))
		})
	}
}
