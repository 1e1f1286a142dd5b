package presencetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/presence"
)

// Querier is the query side of presence: a presence.Store, or the router's gRPC client.
type Querier interface {
	ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error)
	RoomEdges(ctx context.Context, room string) ([]presence.RoomEdge, error)
	RoomCounts(ctx context.Context, rooms []string) (map[string]int, error)
	Online(ctx context.Context) (presence.Counts, error)
}

// Fleet is a set of SimEdges that share one presence, for data-loss tests.
type Fleet struct {
	Edges []*SimEdge
	Users []string // every edge's users
	per   int
}

// StartFleet starts n SimEdges "edge-<i>" on p with lease ttl, each holding
// EdgeState("e<i>", per) (per a multiple of 10); they stop when t ends.
func StartFleet(ctx context.Context, t testing.TB, p Lessee, n, per int, ttl time.Duration) *Fleet {
	t.Helper()
	f := &Fleet{per: per}
	for i := 0; i < n; i++ {
		conns, rooms := EdgeState(fmt.Sprintf("e%d", i), per)
		e := &SimEdge{P: p, ID: fmt.Sprintf("edge-%d", i), TTL: ttl, Conns: conns, Rooms: rooms}
		t.Cleanup(e.Start(ctx, t))
		f.Edges = append(f.Edges, e)
		f.Users = append(f.Users, Users(conns)...)
	}
	return f
}

// Whole reports, through q, whether presence shows the fleet's whole state: every user
// resolves, room-0 has its members of every edge, room-1 is on every edge, and the online
// counts add up.
func (f *Fleet) Whole(ctx context.Context, q Querier) error {
	n := len(f.Edges)
	m, err := q.ResolveUsers(ctx, f.Users)
	if err != nil {
		return err
	}
	if len(m) != len(f.Users) {
		return fmt.Errorf("%d of %d users resolve", len(m), len(f.Users))
	}
	rc, err := q.RoomCounts(ctx, []string{"room-0"})
	if err != nil {
		return err
	}
	if want := n * f.per / 10; rc["room-0"] != want {
		return fmt.Errorf("room-0 has %d members, want %d", rc["room-0"], want)
	}
	re, err := q.RoomEdges(ctx, "room-1")
	if err != nil {
		return err
	}
	if len(re) != n {
		return fmt.Errorf("room-1 on %d edges, want %d", len(re), n)
	}
	on, err := q.Online(ctx)
	if err != nil {
		return err
	}
	if want := n * f.per; on.Connections != want || on.Users != want {
		return fmt.Errorf("online: %d conns, %d users; want %d", on.Connections, on.Users, want)
	}
	return nil
}

// Lose runs lose (a test making presence lose data) with every edge locked: the loss is
// atomic for the edges, as a FLUSHALL is, none re-syncs while it happens. It returns when
// lose returned.
func (f *Fleet) Lose(lose func()) time.Time {
	for _, e := range f.Edges {
		e.Lock()
	}
	lose()
	for _, e := range f.Edges {
		e.Unlock()
	}
	return time.Now()
}

// CheckResynced fails t unless every edge registered and Synced exactly twice (start and
// after the loss at lost), and logs how long after the loss each did.
func (f *Fleet) CheckResynced(t testing.TB, lost time.Time) {
	t.Helper()
	for _, e := range f.Edges {
		n, last := e.Resyncs()
		if n != 2 {
			t.Errorf("edge %s resynced %d times, want 2 (start + loss)", e.ID, n)
		}
		t.Logf("edge %s re-synced %v after the loss", e.ID, last.Sub(lost))
	}
}
