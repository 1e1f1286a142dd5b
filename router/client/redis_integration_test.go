//go:build integration

package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

func newRedisStore(t testing.TB, c redis.UniversalClient, prefix string, refresh time.Duration) *presence.RedisStore {
	t.Helper()
	s, err := presence.NewRedisStore(presence.RedisConfig{Client: c, Prefix: prefix, RefreshInterval: refresh})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(); presencetest.WipePrefix(nil, c, prefix) })
	return s
}

func runRedisContract(t *testing.T, env string) {
	rc := presencetest.RedisClient(t, env)
	presencetest.Run(t, func(t *testing.T) presence.Store {
		c, _ := serve(t, newRedisStore(t, rc, presencetest.RedisPrefix(), 50*time.Millisecond), client.Config{})
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
	rc := presencetest.RedisClient(t, env)
	prefix := presencetest.RedisPrefix()
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
	presencetest.WaitUntil(t, 500*time.Millisecond+200*time.Millisecond+2*time.Second, "dead edge hidden", func() error {
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
