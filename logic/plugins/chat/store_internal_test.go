package chat

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestMemoryStoreSweepsExpiredCMIDs: expired client message ids are removed at the latest a
// cap of appends after a conversation passed its sweep threshold, and a retry within the
// window still dedupes while the ids pile up.
func TestMemoryStoreSweepsExpiredCMIDs(t *testing.T) {
	ctx := context.Background()
	const historyCap, ttl = 2, 50 * time.Millisecond
	s := NewMemoryStore(historyCap, ttl)
	clock := time.Now()
	s.now = func() time.Time { return clock }
	conv := DirectConv("a", "b")
	add := func(cmid string) (Message, bool) {
		t.Helper()
		m, dup, err := s.Append(ctx, Message{Conv: conv, From: "a", CMID: cmid, Text: "x"}, []string{"a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		return m, dup
	}
	for i := range 20 {
		add("old-" + strconv.Itoa(i))
	}
	if m, dup := add("old-19"); !dup || m.Seq != 20 {
		t.Fatalf("retry within the window: seq %d dup %v", m.Seq, dup)
	}
	clock = clock.Add(2 * ttl) // every id expires
	for i := range historyCap + 2 {
		add("new-" + strconv.Itoa(i))
	}
	s.mu.Lock()
	n := len(s.convs[conv].cmids)
	s.mu.Unlock()
	if n != historyCap+2 {
		t.Fatalf("%d ids kept, want only the %d new ones", n, historyCap+2)
	}
	if _, dup := add("old-19"); dup {
		t.Fatal("an expired id still dedupes")
	}
}
