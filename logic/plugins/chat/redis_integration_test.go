//go:build integration

package chat_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/logic/plugins/chat"
)

func redisClient(t *testing.T, env string) redis.UniversalClient {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		t.Fatalf("%s is not set (source /work/main/.run/env)", env)
	}
	var c redis.UniversalClient
	if strings.Contains(env, "CLUSTER") {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addr, ",")})
	} else {
		c = redis.NewClient(&redis.Options{Addr: addr})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis %s unreachable: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func redisStore(t *testing.T, env string, historyCap int) (chat.Store, string) {
	c := redisClient(t, env)
	uniq := fmt.Sprintf("%x", rand.Uint64())
	prefix := "sbtest:chat:" + uniq + ":"
	s, err := chat.NewRedisStore(chat.RedisConfig{Client: c, Prefix: prefix, HistoryCap: historyCap, DedupeTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		del := func(cl redis.UniversalClient) {
			var cursor uint64
			for {
				keys, next, err := cl.Scan(ctx, cursor, prefix+"*", 1000).Result()
				if err != nil {
					return
				}
				for _, k := range keys {
					cl.Del(ctx, k)
				}
				if cursor = next; cursor == 0 {
					return
				}
			}
		}
		if cc, ok := c.(*redis.ClusterClient); ok {
			_ = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { del(n); return nil })
		} else {
			del(c)
		}
	})
	return s, uniq
}

func TestRedisStoreContract(t *testing.T) {
	s, uniq := redisStore(t, "SB_REDIS_ADDR", 10)
	testStore(t, s, uniq, 10)
}

func TestRedisClusterStoreContract(t *testing.T) {
	s, uniq := redisStore(t, "SB_REDIS_CLUSTER_ADDRS", 10)
	testStore(t, s, uniq, 10)
}

// TestRedisChat runs the plugin scenario (two devices, retry, sync) on a real Redis.
func TestRedisChat(t *testing.T) {
	s, _ := redisStore(t, "SB_REDIS_ADDR", 0)
	runChat(t, s)
}
