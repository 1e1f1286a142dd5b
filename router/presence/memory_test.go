package presence_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryStoreContract(t *testing.T) {
	presencetest.Run(t, func(t *testing.T) presence.Store {
		s, err := presence.NewMemoryStore(presence.MemoryConfig{ReapInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestMemoryConfigInvalid(t *testing.T) {
	if _, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: -1}); err == nil {
		t.Fatal("negative LeaseTTL accepted")
	}
}

// TestMemoryEventsOverflow: a subscriber a whole buffer behind has its channel closed (after
// the events that fit) instead of silently missing events; other subscribers are unaffected.
func TestMemoryEventsOverflow(t *testing.T) {
	s, err := presence.NewMemoryStore(presence.MemoryConfig{EventBuffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := s.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := s.Register(ctx, "e", 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		// one event per Apply: fast keeps up, slow falls behind
		if err := s.Apply(ctx, "e", ep, []presence.Op{{Kind: presence.OpConnect, ConnID: uint64(i + 1), User: fmt.Sprint("u", i)}}); err != nil {
			t.Fatal(err)
		}
		if ev := <-fast; ev.Kind != presence.EventUserOnline || ev.User != fmt.Sprint("u", i) {
			t.Fatalf("fast: %+v", ev)
		}
	}
	var got []string
	for ev := range slow {
		got = append(got, ev.User)
	}
	if fmt.Sprint(got) != "[u0 u1]" {
		t.Fatalf("slow got %v then its channel closed, want [u0 u1]", got)
	}
}
