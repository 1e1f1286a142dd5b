package presencetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
)

// Lessee is the edge's side of presence: a presence.Store, or the router's gRPC client.
type Lessee interface {
	Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error)
	Renew(ctx context.Context, edge string, epoch uint64) error
	Apply(ctx context.Context, edge string, epoch uint64, ops []presence.Op) error
	Sync(ctx context.Context, edge string, epoch uint64, conns []presence.Conn, rooms map[string][]uint64) error
}

// SimEdge plays the edge side of the lease protocol against P: it renews every TTL/3 and, on
// ErrLeaseLost from Renew or Apply, registers again and Syncs its full state Conns/Rooms (what
// the edge's reporter does). No client connection is involved.
type SimEdge struct {
	P     Lessee
	ID    string
	TTL   time.Duration
	Conns []presence.Conn
	Rooms map[string][]uint64

	mu       sync.Mutex // held throughout a re-sync
	epoch    uint64
	resyncs  int
	lastSync time.Time
}

// Start registers and Syncs (failing t on error), then renews in the background until ctx
// ends or stop is called.
func (e *SimEdge) Start(ctx context.Context, t testing.TB) (stop func()) {
	t.Helper()
	if err := e.resync(ctx); err != nil {
		t.Fatalf("edge %s start: %v", e.ID, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(e.TTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ep := e.Current()
			if err := e.P.Renew(ctx, e.ID, ep); errors.Is(err, presence.ErrLeaseLost) {
				_ = e.resyncFrom(ctx, ep) // retried at the next tick on failure
			}
		}
	}()
	return func() { cancel(); <-done }
}

// Current is the edge's epoch.
func (e *SimEdge) Current() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.epoch
}

// Lock keeps the edge from re-syncing until Unlock: a test holds it while it makes the
// backend lose data, so that the loss is atomic for the edge (as a FLUSHALL is).
func (e *SimEdge) Lock() { e.mu.Lock() }

// Unlock ends Lock.
func (e *SimEdge) Unlock() { e.mu.Unlock() }

// Resyncs reports how often the edge registered and Synced (Start included) and when last.
func (e *SimEdge) Resyncs() (n int, last time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resyncs, e.lastSync
}

// Apply reports ops; on ErrLeaseLost it re-registers and Syncs (the ops are part of the
// edge's state already, so the Sync carries them).
func (e *SimEdge) Apply(ctx context.Context, ops []presence.Op) (resynced bool, err error) {
	ep := e.Current()
	err = e.P.Apply(ctx, e.ID, ep, ops)
	if errors.Is(err, presence.ErrLeaseLost) {
		return true, e.resyncFrom(ctx, ep)
	}
	return false, err
}

// resyncFrom re-registers and Syncs unless the edge already left epoch from (another
// goroutine of the edge saw the loss first).
func (e *SimEdge) resyncFrom(ctx context.Context, from uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.epoch != from {
		return nil
	}
	return e.resyncLocked(ctx)
}

func (e *SimEdge) resync(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resyncLocked(ctx)
}

func (e *SimEdge) resyncLocked(ctx context.Context) error {
	ep, err := e.P.Register(ctx, e.ID, e.TTL)
	if err != nil {
		return err
	}
	if err := e.P.Sync(ctx, e.ID, ep, e.Conns, e.Rooms); err != nil {
		return err
	}
	e.epoch = ep
	e.resyncs++
	e.lastSync = time.Now()
	return nil
}

// EdgeState is an edge's state of n connections of distinct users "<prefix>-user-<i>",
// connection i+1 a member of room "room-<i%10>".
func EdgeState(prefix string, n int) ([]presence.Conn, map[string][]uint64) {
	conns := make([]presence.Conn, n)
	rooms := map[string][]uint64{}
	for i := range conns {
		conns[i] = presence.Conn{ConnID: uint64(i + 1), User: fmt.Sprintf("%s-user-%d", prefix, i), Meta: map[string]string{"d": "web"}}
		r := fmt.Sprintf("room-%d", i%10)
		rooms[r] = append(rooms[r], uint64(i+1))
	}
	return conns, rooms
}

// Users is the users of conns, in order.
func Users(conns []presence.Conn) []string {
	out := make([]string, len(conns))
	for i, c := range conns {
		out[i] = c.User
	}
	return out
}

// WaitUntil polls cond until it returns nil and returns how long that took, or fails t when
// d passes first.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RedisClient returns a client of the Redis in environment variable name (one address:
// standalone; several, comma-separated: Cluster), closed when t ends, or fails t when the
// variable is unset or Redis unreachable. opts adjust the client's options.
func RedisClient(t testing.TB, name string, opts ...func(*redis.UniversalOptions)) redis.UniversalClient {
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
	o := &redis.UniversalOptions{Addrs: addrs} // one address: a *redis.Client, several: a *redis.ClusterClient
	for _, f := range opts {
		f(o)
	}
	c := redis.NewUniversalClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s: ping: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisPrefix is a fresh random key prefix, so that concurrent test runs do not share keys.
func RedisPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "sbtest:" + hex.EncodeToString(b) + ":"
}

// WipePrefix deletes every key under prefix on every master: for a RedisStore it is what a
// FLUSHALL (or a restart without persistence) does, without destroying the keys of tests
// running concurrently against the same Redis. Keys are listed first and deleted in one
// pipeline per master, so the window in which only part of the data is gone is short.
// Errors fail t; with t nil (a cleanup) they are ignored.
//
// The registration set goes first: a router's reaper only acts on registrations listed there,
// so it cannot "reap" edges whose leases vanished while their entries still exist, which a
// real (atomic) FLUSHALL never shows it.
func WipePrefix(t testing.TB, c redis.UniversalClient, prefix string) {
	if t != nil {
		t.Helper()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Unlink(ctx, prefix+"{g}:edges").Err(); err != nil && t != nil {
		t.Fatalf("wipe %s: %v", prefix, err)
	}
	err := ForEachMaster(ctx, c, func(ctx context.Context, n *redis.Client) error {
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
	})
	if err != nil && t != nil {
		t.Fatalf("wipe %s: %v", prefix, err)
	}
}

// ForEachMaster calls fn with every master of c: the one server of a standalone client, each
// master of a Cluster.
func ForEachMaster(ctx context.Context, c redis.UniversalClient, fn func(context.Context, *redis.Client) error) error {
	switch cc := c.(type) {
	case *redis.ClusterClient:
		return cc.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, cc)
	}
	return fmt.Errorf("presencetest: unsupported Redis client %T", c)
}

// AwaitOnline reads evs until n user-online events arrived, failing t when ctx ends first.
func AwaitOnline(ctx context.Context, t testing.TB, evs <-chan presence.Event, n int) {
	t.Helper()
	for online := 0; online < n; {
		select {
		case ev := <-evs:
			if ev.Kind == presence.EventUserOnline {
				online++
			}
		case <-ctx.Done():
			t.Fatalf("online events: %d of %d", online, n)
		}
	}
}

// AwaitOffline reads evs until n user-offline events arrived, failing t when 5 s pass without
// one or one comes from an edge other than edge. It returns the users that went offline and
// how long after since the last one came.
func AwaitOffline(t testing.TB, evs <-chan presence.Event, n int, edge string, since time.Time) (offline map[string]bool, last time.Duration) {
	t.Helper()
	offline = map[string]bool{}
	for len(offline) < n {
		select {
		case ev := <-evs:
			if ev.Kind == presence.EventUserOffline {
				if ev.Edge != edge {
					t.Fatalf("offline event from %s, want %s", ev.Edge, edge)
				}
				offline[ev.User] = true
				last = time.Since(since)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("offline events: %d of %d", len(offline), n)
		}
	}
	return offline, last
}
