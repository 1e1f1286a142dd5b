//go:build integration

package presence_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// redisAddrs returns the addresses in env var name or fails the test.
func redisAddrs(t testing.TB, name string) []string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run under deploy/local/with-services.sh (make test) or export it", name)
	}
	addrs := strings.Split(v, ",")
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			t.Fatalf("%s=%s: %s unreachable: %v", name, v, a, err)
		}
		_ = c.Close()
	}
	return addrs
}

// newRedisClient returns a UniversalClient: standalone for one address, Cluster for several.
func newRedisClient(t testing.TB, name string) redis.UniversalClient {
	t.Helper()
	addrs := redisAddrs(t, name)
	var c redis.UniversalClient
	if len(addrs) == 1 {
		c = redis.NewClient(&redis.Options{Addr: addrs[0]})
	} else {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s: ping: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "sbtest:" + hex.EncodeToString(b) + ":"
}

// cleanupPrefix deletes every key under prefix on every master.
func cleanupPrefix(c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	del := func(ctx context.Context, n *redis.Client) error {
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			n.Del(ctx, iter.Val())
		}
		return iter.Err()
	}
	switch cc := c.(type) {
	case *redis.ClusterClient:
		_ = cc.ForEachMaster(ctx, del)
	case *redis.Client:
		_ = del(ctx, cc)
	}
}

func newRedisStore(t *testing.T, c redis.UniversalClient, prefix string) *presence.RedisStore {
	t.Helper()
	s, err := presence.NewRedisStore(presence.RedisConfig{Client: c, Prefix: prefix, RefreshInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func runRedisContract(t *testing.T, env string) {
	c := newRedisClient(t, env)
	presencetest.Run(t, func(t *testing.T) presence.Store {
		prefix := testPrefix()
		t.Cleanup(func() { cleanupPrefix(c, prefix) })
		return newRedisStore(t, c, prefix)
	})
}

func TestRedisStoreContract(t *testing.T)        { runRedisContract(t, "SB_REDIS_ADDR") }
func TestRedisClusterStoreContract(t *testing.T) { runRedisContract(t, "SB_REDIS_CLUSTER_ADDRS") }
