//go:build integration

package presence_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

func newRedisStore(t *testing.T, c redis.UniversalClient, prefix string) *presence.RedisStore {
	t.Helper()
	s, err := presence.NewRedisStore(presence.RedisConfig{Client: c, Prefix: prefix, RefreshInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func runRedisContract(t *testing.T, env string) {
	c := presencetest.RedisClient(t, env)
	presencetest.Run(t, func(t *testing.T) presence.Store {
		prefix := presencetest.RedisPrefix()
		t.Cleanup(func() { presencetest.WipePrefix(nil, c, prefix) })
		return newRedisStore(t, c, prefix)
	})
}

func TestRedisStoreContract(t *testing.T)        { runRedisContract(t, "SB_REDIS_ADDR") }
func TestRedisClusterStoreContract(t *testing.T) { runRedisContract(t, "SB_REDIS_CLUSTER_ADDRS") }
