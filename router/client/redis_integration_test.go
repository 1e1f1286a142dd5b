//go:build integration

package client_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// redisClient returns a client of the Redis in env var name (one address: standalone; several:
// Cluster), or fails the test.
func redisClient(t testing.TB, name string) redis.UniversalClient {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run under deploy/local/with-services.sh (make test) or source .run/env", name)
	}
	addrs := strings.Split(v, ",")
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			t.Fatalf("%s=%s: %s unreachable: %v", name, v, a, err)
		}
		_ = c.Close()
	}
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

// wipePrefix deletes every key under prefix on every master: for this store it is what a
// FLUSHALL (or a restart without persistence) does, without destroying the keys of tests
// running concurrently against the same Redis. Keys are listed first and deleted in one
// pipeline per master, so the window in which only part of the data is gone is short.
//
// The registration set goes first: a router's reaper only acts on registrations listed there,
// so it cannot "reap" edges whose leases vanished while their entries still exist, which a
// real (atomic) FLUSHALL never shows it.
func wipePrefix(t testing.TB, c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Unlink(ctx, prefix+"{g}:edges").Err(); err != nil && t != nil {
		t.Fatalf("wipe %s: %v", prefix, err)
	}
	del := func(ctx context.Context, n *redis.Client) error {
		var keys []string
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		_, err := n.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Unlink(ctx, k)
			}
			return nil
		})
		return err
	}
	var err error
	switch cc := c.(type) {
	case *redis.ClusterClient:
		err = cc.ForEachMaster(ctx, del)
	case *redis.Client:
		err = del(ctx, cc)
	}
	if err != nil && t != nil {
		t.Fatalf("wipe %s: %v", prefix, err)
	}
}

func newRedisStore(t testing.TB, c redis.UniversalClient, prefix string, refresh time.Duration) *presence.RedisStore {
	t.Helper()
	s, err := presence.NewRedisStore(presence.RedisConfig{Client: c, Prefix: prefix, RefreshInterval: refresh})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(); wipePrefix(nil, c, prefix) })
	return s
}

func runRedisContract(t *testing.T, env string) {
	rc := redisClient(t, env)
	presencetest.Run(t, func(t *testing.T) presence.Store {
		c, _ := serve(t, newRedisStore(t, rc, testPrefix(), 50*time.Millisecond), client.Config{})
		return c
	})
}

// The contract through client -> gRPC -> server -> RedisStore on real Redis and Redis Cluster.
func TestContractRedis(t *testing.T)        { runRedisContract(t, "SB_REDIS_ADDR") }
func TestContractRedisCluster(t *testing.T) { runRedisContract(t, "SB_REDIS_CLUSTER_ADDRS") }

// TestServiceReplicas: two router replicas on one Redis. An edge reports through replica 1;
// logic, balanced round-robin over both (a static address list), resolves and receives the
// events whichever replica serves it; an edge that dies on replica 1 disappears for logic.
func TestServiceReplicas(t *testing.T)        { testServiceReplicas(t, "SB_REDIS_ADDR") }
func TestServiceReplicasCluster(t *testing.T) { testServiceReplicas(t, "SB_REDIS_CLUSTER_ADDRS") }

func testServiceReplicas(t *testing.T, env string) {
	rc := redisClient(t, env)
	prefix := testPrefix()
	edge, srv1 := serve(t, newRedisStore(t, rc, prefix, 50*time.Millisecond), client.Config{CacheTTL: -1})
	_, srv2 := serve(t, newRedisStore(t, rc, prefix, 50*time.Millisecond), client.Config{CacheTTL: -1})
	logic, err := client.New(client.Config{Addr: srv1.Addr() + "," + srv2.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logic.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, err := logic.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := edge.Register(ctx, "e1", 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := edge.Apply(ctx, "e1", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: 1, User: "alice"}, {Kind: presence.OpJoin, ConnID: 1, Room: "r"}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-evs; ev.Kind != presence.EventUserOnline || ev.User != "alice" {
		t.Fatalf("event %+v", ev)
	}
	// Several calls: round-robin spreads them over both replicas.
	for i := 0; i < 6; i++ {
		m, err := logic.ResolveUsers(ctx, []string{"alice"})
		if err != nil || len(m["alice"]) != 1 {
			t.Fatalf("resolve %d: %v %v", i, m, err)
		}
		re, err := logic.RoomEdges(ctx, "r")
		if err != nil || len(re) != 1 || re[0].Edge != "e1" {
			t.Fatalf("room edges %d: %v %v", i, re, err)
		}
	}
	// The edge dies (no renewals): gone for logic within the lease + cache bound, and its
	// offline event arrives.
	waitFor(t, 500*time.Millisecond+200*time.Millisecond+2*time.Second, "dead edge hidden", func() error {
		m, err := logic.ResolveUsers(ctx, []string{"alice"})
		if err != nil {
			return err
		}
		if len(m) != 0 {
			return fmt.Errorf("alice resolves: %v", m)
		}
		return nil
	})
	select {
	case ev := <-evs:
		if ev.Kind != presence.EventUserOffline || ev.User != "alice" {
			t.Fatalf("event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no offline event")
	}
}
