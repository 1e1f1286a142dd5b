//go:build integration

package edge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// TestPresenceOnRedis runs the edge's presence reporting against the real RedisStore: state
// appears, survives a lost lease (re-register, full Sync), follows disconnects, and is gone at
// once after a graceful shutdown.
func TestPresenceOnRedis(t *testing.T) {
	addr := os.Getenv("SB_REDIS_ADDR")
	if addr == "" {
		t.Fatal("SB_REDIS_ADDR is not set (source .run/env)")
	}
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	ctx := context.Background()
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis %s: %v", addr, err)
	}
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	store, err := presence.NewRedisStore(presence.RedisConfig{Client: rc, Prefix: "sbtest-edge-" + suffix + ":"})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	cfg := testConfig()
	cfg.ID = "edge-it-" + suffix
	cfg.Presence = store
	cfg.PresenceLease = time.Second
	cfg.PresenceFlush = 5 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	<-s.Ready()

	a, w := dialGorilla(t, s, "ra-"+suffix)
	ida := connID(t, w)
	dialGorilla(t, s, "rb-"+suffix)
	room := "room-" + suffix
	down(t, s, &protocol.Downstream{Kind: protocol.DownJoin, Target: protocol.TargetConns, Conns: []uint64{ida}, Rooms: []string{room}})

	check := func(users int, members int) func() error {
		return func() error {
			got, err := store.ResolveUsers(ctx, []string{"ra-" + suffix, "rb-" + suffix})
			if err != nil {
				return err
			}
			n := 0
			for _, cs := range got {
				for _, c := range cs {
					if c.Edge != cfg.ID || c.Epoch != s.Epoch() {
						return fmt.Errorf("conn %+v, edge epoch %d", c, s.Epoch())
					}
					n++
				}
			}
			if n != users {
				return fmt.Errorf("%d conns, want %d", n, users)
			}
			re, err := store.RoomEdges(ctx, room)
			if err != nil {
				return err
			}
			m := 0
			for _, e := range re {
				m += e.Members
			}
			if m != members {
				return fmt.Errorf("%d room members, want %d", m, members)
			}
			return nil
		}
	}
	checkFor(t, 10*time.Second, check(2, 1))

	first := s.Epoch()
	if err := store.Deregister(ctx, cfg.ID, first); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		if s.Epoch() == first {
			return fmt.Errorf("not re-registered")
		}
		return check(2, 1)()
	})

	a.Close()
	checkFor(t, 10*time.Second, check(1, 0))

	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	edges, err := store.Edges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := edges[cfg.ID]; ok {
		t.Fatalf("edge still live after shutdown: %v", edges)
	}
}
