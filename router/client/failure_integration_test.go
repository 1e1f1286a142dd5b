//go:build integration

package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

// TestServiceLeaseLapse: through the router service with its defaults (lease 3s, refresh
// 200ms) and logic's client with its default cache (200ms): an edge stops renewing; uncached
// queries stop returning its users at the lease deadline (3s after its last renewal), logic's
// cached queries within lease + CacheTTL (3.2s), and the
// users' "last leave" (offline) events reach logic's client; a user that also has a
// connection on a live edge gets no offline event.
func TestServiceLeaseLapse(t *testing.T)        { testServiceLeaseLapse(t, "SB_REDIS_ADDR") }
func TestServiceLeaseLapseCluster(t *testing.T) { testServiceLeaseLapse(t, "SB_REDIS_CLUSTER_ADDRS") }

func testServiceLeaseLapse(t *testing.T, env string) {
	rc := presencetest.RedisClient(t, env)
	st := newRedisStore(t, rc, presencetest.RedisPrefix(), 0)
	edgeC, srv := serve(t, st, client.Config{CacheTTL: -1})
	logic := newClient(t, srv, client.Config{}) // default cache
	const lease, cacheTTL = presence.DefaultLeaseTTL, 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	evs, err := logic.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conns, rooms := presencetest.EdgeState("lapse", 200)
	dying := &presencetest.SimEdge{P: edgeC, ID: "edge-dying", TTL: lease, Conns: conns, Rooms: rooms}
	stop := dying.Start(ctx, t)
	live := &presencetest.SimEdge{P: edgeC, ID: "edge-live", TTL: 30 * time.Second, // the control: a long lease, so load cannot lapse it
		Conns: conns[:1]}
	stopLive := live.Start(ctx, t)
	defer stopLive()
	all := presencetest.Users(conns)
	if m, err := logic.ResolveUsers(ctx, all); err != nil || len(m) != len(conns) {
		t.Fatalf("before lapse: %d users, err %v", len(m), err)
	}
	presencetest.AwaitOnline(ctx, t, evs, len(conns))
	stop() // the edge dies: no more renewals
	// The last renewal: the lease runs from here.
	if err := edgeC.Renew(ctx, dying.ID, dying.Current()); err != nil {
		t.Fatal(err)
	}
	lastRenew := time.Now()
	// Uncached reads (every call reaches the router) hide the edge at its lease deadline.
	presencetest.WaitUntil(t, lease+time.Second, "dead edge's users hidden (uncached)", func() error {
		m, err := edgeC.ResolveUsers(ctx, all)
		if err != nil {
			return err
		}
		if len(m) != 1 {
			return fmt.Errorf("%d users still resolve", len(m))
		}
		return nil
	})
	hiddenUncached := time.Since(lastRenew)
	// logic's cached reads within lease + CacheTTL.
	presencetest.WaitUntil(t, lease+cacheTTL+time.Second, "dead edge's users hidden", func() error {
		m, err := logic.ResolveUsers(ctx, all)
		if err != nil {
			return err
		}
		if len(m) != 1 || len(m[conns[0].User]) != 1 || m[conns[0].User][0].Edge != "edge-live" {
			return fmt.Errorf("%d users still resolve", len(m))
		}
		re, err := logic.RoomEdges(ctx, "room-1")
		if err != nil {
			return err
		}
		if len(re) != 0 {
			return fmt.Errorf("room-1 edges %v", re)
		}
		return nil
	})
	hidden := time.Since(lastRenew)
	offline, offlineAt := presencetest.AwaitOffline(t, evs, len(conns)-1, "edge-dying", lastRenew)
	if offline[conns[0].User] {
		t.Fatal("a user with a live connection got an offline event")
	}
	if err := edgeC.Renew(ctx, dying.ID, dying.Current()); !errors.Is(err, presence.ErrLeaseLost) {
		t.Fatalf("Renew after lapse: %v, want ErrLeaseLost", err)
	}
	t.Logf("lease %v, cache %v: after the dead edge's last renewal, uncached reads hid it after %v, logic's cached reads after %v; all %d offline events by %v",
		lease, cacheTTL, hiddenUncached, hidden, len(offline), offlineAt)
}

// TestServiceDataLoss: Redis loses the presence data (every key of the store, as a FLUSHALL
// does) under three running edges of 1000 connections. Each edge sees ErrLeaseLost at its next
// Renew or Apply, registers again and Syncs; presence is whole again, as seen by logic through
// its cached client, within one renewal interval (lease/3) + the Sync, and no client
// reconnects. Typical: 1.0-1.4s; the test deadline, lease/3 + 6s, leaves slack for a machine
// at load 20.
func TestServiceDataLoss(t *testing.T)        { testServiceDataLoss(t, "SB_REDIS_ADDR") }
func TestServiceDataLossCluster(t *testing.T) { testServiceDataLoss(t, "SB_REDIS_CLUSTER_ADDRS") }

func testServiceDataLoss(t *testing.T, env string) {
	rc := presencetest.RedisClient(t, env)
	prefix := presencetest.RedisPrefix()
	st := newRedisStore(t, rc, prefix, 0)
	edgeC, srv := serve(t, st, client.Config{CacheTTL: -1})
	logic := newClient(t, srv, client.Config{})
	const lease = presence.DefaultLeaseTTL
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fleet := presencetest.StartFleet(ctx, t, edgeC, 3, 1000, lease)
	whole := func() error { return fleet.Whole(ctx, logic) }
	presencetest.WaitUntil(t, 5*time.Second, "initial state", whole)
	lost := fleet.Lose(func() { presencetest.WipePrefix(t, rc, prefix) })
	// Edge 0 has something to report right after the loss: its Apply fails with
	// ErrLeaseLost and it resyncs at once (the others notice at their next Renew).
	resynced, err := fleet.Edges[0].Apply(ctx, []presence.Op{{Kind: presence.OpJoin, ConnID: 1, Room: "room-0"}})
	if err != nil || !resynced {
		t.Fatalf("Apply after data loss: resynced=%v err=%v, want ErrLeaseLost and a resync", resynced, err)
	}
	bound := lease/3 + 6*time.Second // typical: about lease/3 (see the log line); slack for a loaded machine
	presencetest.WaitUntil(t, bound, "presence whole after data loss", whole)
	took := time.Since(lost)
	fleet.CheckResynced(t, lost)
	t.Logf("data loss: presence of 3 edges x 1000 conns whole again for logic %v later (bound %v)", took, bound)
}
