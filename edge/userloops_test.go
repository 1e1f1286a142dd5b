package edge

import (
	"fmt"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/protocol"
)

// TestUserDeliveryAcrossLoops: a delivery to a user reaches every connection of the user on
// every loop while connections open and close (Dispatch wakes only the loops holding the
// user), and none of another user's.
func TestUserDeliveryAcrossLoops(t *testing.T) {
	cfg := testConfig()
	cfg.Loops = 4
	s := startEdge(t, cfg)
	var conns []*websocket.Conn
	loops := map[uint64]bool{}
	for len(loops) < 2 || len(conns) < 6 {
		if len(conns) == 40 {
			t.Fatalf("8 connections all on loop %v", loops)
		}
		c, w := dialGorilla(t, s, "u")
		defer c.Close()
		conns = append(conns, c)
		loops[connID(t, w)&loopMask] = true
	}
	other, _ := dialGorilla(t, s, "other")
	defer other.Close()
	for round := range 3 {
		data := fmt.Sprintf(`{"round":%d}`, round)
		down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"nobody", "u"}, Frame: deliver("chat", data)})
		for _, c := range conns {
			if f := readFrame(t, c); f.Type != "chat" || string(f.Data) != data {
				t.Fatalf("round %d: got %+v", round, f)
			}
		}
		// Close the first half: the rest (and new connections) still get the next delivery.
		n := len(conns) / 2
		for _, c := range conns[:n] {
			c.Close()
		}
		conns = conns[n:]
		c, _ := dialGorilla(t, s, "u")
		defer c.Close()
		conns = append(conns, c)
	}
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"other"}, Frame: deliver("chat", `{"to":"other"}`)})
	if f := readFrame(t, other); string(f.Data) != `{"to":"other"}` {
		t.Fatalf("other: got %+v", f)
	}
}

// TestUserLoops: a loop's bit is set while it holds a connection of the user.
func TestUserLoops(t *testing.T) {
	u := newUserLoops()
	u.add("a", 0)
	u.add("a", 3)
	u.add("b", 1)
	u.add("c", 64) // beyond the mask: not tracked
	if m := u.mask([]string{"a"}); m != 0b1001 {
		t.Fatalf("a: %b", m)
	}
	if m := u.mask([]string{"a", "b", "c", "d"}); m != 0b1011 {
		t.Fatalf("a, b: %b", m)
	}
	u.remove("a", 0)
	u.remove("b", 1)
	if m := u.mask([]string{"a", "b"}); m != 0b1000 {
		t.Fatalf("after remove: %b", m)
	}
	u.remove("a", 3)
	if n := len(u.shard("a").m) + len(u.shard("b").m); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}
