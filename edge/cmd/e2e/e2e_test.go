//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/protocol"
)

type sendReply struct {
	Conv string `json:"conv"`
	Seq  uint64 `json:"seq"`
	ID   string `json:"id"`
	Dup  bool   `json:"dup"`
}

type syncReply struct {
	Conv     string         `json:"conv"`
	Messages []chat.Message `json:"messages"`
	More     bool           `json:"more"`
}

func decode[T any](t testing.TB, f frame) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(f.Data, &v); err != nil {
		t.Fatalf("%s frame data %s: %v", f.Type, f.Data, err)
	}
	return v
}

// chatMsgs returns the chat.msg deliveries c received, in arrival order.
func chatMsgs(t testing.TB, c *wsClient) []chat.Message {
	t.Helper()
	var out []chat.Message
	for _, f := range c.frames(isType(chat.TypeMsg)) {
		out = append(out, decode[chat.Message](t, f))
	}
	return out
}

func countID(ms []chat.Message, id string) int {
	n := 0
	for _, m := range ms {
		if m.ID == id {
			n++
		}
	}
	return n
}

// sendChat sends a 1:1 message and returns the frame id; the edge's ack and the plugin's reply
// are checked by the caller.
func sendChat(c *wsClient, to, text, cmid string) string {
	return c.send(chat.TypeSend, map[string]string{"to": to, "text": text, "cmid": cmid})
}

func isAck(id string) func(frame) bool {
	return func(f frame) bool { return f.Type == protocol.TypeAck && f.ID == id }
}

// TestChatReachesBothDevicesOnTwoEdges: alice on edge 1 writes to bob, who is connected on edge
// 2 and on edge 3. Each device receives each message exactly once, each of bob's edges handles
// one delivery envelope per message, alice gets the edge's ack (the bus accepted her frame) and
// the plugin's reply with the message's sequence number, and she is not echoed her own message.
func TestChatReachesBothDevicesOnTwoEdges(t *testing.T) {
	c := newCluster(t)
	e1, e2, e3 := c.addEdge(), c.addEdge(), c.addEdge()
	c.addLogic()
	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	a := dial(t, e1, alice)
	b2 := dial(t, e2, bob)
	b3 := dial(t, e3, bob)
	c.waitOnline(bob, 2)
	c.waitOnline(alice, 1)
	conv := chat.DirectConv(alice, bob)

	var replies []sendReply
	for i, text := range []string{"hello bob", "second message"} {
		id := sendChat(a, bob, text, fmt.Sprintf("cm-%d", i))
		a.await("edge ack of "+id, 20*time.Second, isAck(id))
		r := decode[sendReply](t, a.reply(chat.TypeSend, id))
		if r.Conv != conv || r.Seq != uint64(i+1) || r.ID != chat.MessageID(conv, r.Seq) || r.Dup {
			t.Fatalf("reply %+v, want conv %s seq %d", r, conv, i+1)
		}
		replies = append(replies, r)
		for _, dev := range []*wsClient{b2, b3} {
			f := dev.await("chat.msg "+r.ID, 20*time.Second, func(f frame) bool {
				return f.Type == chat.TypeMsg && decode[chat.Message](t, f).ID == r.ID
			})
			m := decode[chat.Message](t, f)
			if m.From != alice || m.Text != text || m.Seq != r.Seq || m.Conv != conv || m.CMID != fmt.Sprintf("cm-%d", i) {
				t.Fatalf("bob on %s got %+v", dev.edge.srv.ID(), m)
			}
		}
	}
	// The second message reached both devices after the first on the same edge topics: a
	// duplicate of the first would have been handled before it.
	for _, dev := range []*wsClient{b2, b3} {
		ms := chatMsgs(t, dev)
		for _, r := range replies {
			if n := countID(ms, r.ID); n != 1 {
				t.Errorf("bob on %s received %s %d times, want once", dev.edge.srv.ID(), r.ID, n)
			}
		}
		if len(ms) != 2 {
			t.Errorf("bob on %s received %d chat.msg, want 2: %+v", dev.edge.srv.ID(), len(ms), ms)
		}
		envs := dev.edge.tap.count(func(d *protocol.Downstream) bool {
			return d.Kind == protocol.DownDeliver && d.Frame.Type == chat.TypeMsg
		})
		if envs != 2 {
			t.Errorf("edge %s handled %d chat.msg envelopes for 2 messages, want 2", dev.edge.srv.ID(), envs)
		}
	}
	if ms := chatMsgs(t, a); len(ms) != 0 {
		t.Errorf("alice's own connection got her messages back: %+v", ms)
	}
	// Alice's edge holds only her sending connection, which every delivery excludes: no
	// envelope for it may cross the bus at all.
	if n := e1.tap.count(func(d *protocol.Downstream) bool {
		return d.Kind == protocol.DownDeliver && d.Frame.Type == chat.TypeMsg
	}); n != 0 {
		t.Errorf("alice's edge handled %d chat.msg envelopes; her only connection is excluded, want 0", n)
	}
	if n := len(a.frames(func(f frame) bool { return f.Type == protocol.TypeAck })); n != 2 {
		t.Errorf("alice got %d edge acks for 2 frames", n)
	}
}

// TestRoomMessageCrossesBusOncePerEdge: a danmaku room with two members on each of three edges.
// A message crosses the bus once per edge (each edge's downstream counter grows by one per
// message; the sender's edge also handles the sender's own echo), never once per member, and
// every member receives it exactly once; the sender gets its echo and no room copy.
func TestRoomMessageCrossesBusOncePerEdge(t *testing.T) {
	c := newCluster(t)
	edges := []*edgeNode{c.addEdge(), c.addEdge(), c.addEdge()}
	c.addLogic()
	room := "live:" + suffix()
	var members []*wsClient
	for i, e := range edges {
		for j := range 2 {
			members = append(members, dial(t, e, fmt.Sprintf("viewer%d%d-%s", i, j, suffix())))
		}
	}
	for _, m := range members {
		id := m.send(danmaku.TypeJoin, map[string]string{"room": room})
		m.reply(danmaku.TypeJoin, id)
	}
	eventually(t, 10*time.Second, "the router to see two members of the room on each edge", func() bool {
		re, err := c.store.RoomEdges(context.Background(), room)
		if err != nil || len(re) != 3 {
			return false
		}
		for _, r := range re {
			if r.Members != 2 {
				return false
			}
		}
		return true
	})
	before := make([]uint64, len(edges))
	for i, e := range edges {
		before[i] = e.srv.Stats().Downstream
	}
	sender := members[0] // on edge 1
	texts := []string{"666", "second"}
	for _, text := range texts {
		id := sender.send(danmaku.TypeSend, map[string]string{"room": room, "text": text})
		sender.await("edge ack", 20*time.Second, isAck(id))
		echo := sender.await("echo of "+id, 20*time.Second, func(f frame) bool { return f.Type == danmaku.TypeDanmu && f.ID == id })
		if d := decode[danmaku.Danmu](t, echo); d.Text != text || d.Room != room || d.User != sender.user {
			t.Fatalf("echo %+v", d)
		}
		for _, m := range members[1:] {
			m.await("danmaku "+text, 20*time.Second, func(f frame) bool {
				return f.Type == danmaku.TypeDanmu && decode[danmaku.Danmu](t, f).Text == text
			})
		}
	}
	// Both messages reached every member; the second left the bus after the first on each
	// edge topic.
	for i, e := range edges {
		want := uint64(len(texts))
		if i == 0 {
			want *= 2 // the sender's echo is an envelope of its own, to its connection
		}
		if got := e.srv.Stats().Downstream - before[i]; got != want {
			t.Errorf("edge %d handled %d downstream envelopes for %d room messages, want %d", i+1, got, len(texts), want)
		}
		roomEnvs := e.tap.count(func(d *protocol.Downstream) bool {
			return d.Kind == protocol.DownDeliver && d.Target == protocol.TargetRoom && d.Room == room
		})
		if roomEnvs != len(texts) {
			t.Errorf("edge %d handled %d room envelopes for %d messages, want exactly one per message", i+1, roomEnvs, len(texts))
		}
	}
	for _, text := range texts {
		for k, m := range members {
			n := len(m.frames(func(f frame) bool {
				return f.Type == danmaku.TypeDanmu && decode[danmaku.Danmu](t, f).Text == text
			}))
			if n != 1 {
				t.Errorf("member %d (%s) received %q %d times, want once (the sender: its echo only)", k, m.user, text, n)
			}
		}
	}
}

// TestSyncAfterReconnectReturnsExactlyTheMissed: bob reads and acks a first message, goes
// offline, alice sends three, bob reconnects to another edge and chat.sync (from his last ack,
// and from an explicit seq) returns exactly the three he missed.
func TestSyncAfterReconnectReturnsExactlyTheMissed(t *testing.T) {
	c := newCluster(t)
	e1, e2, e3 := c.addEdge(), c.addEdge(), c.addEdge()
	c.addLogic()
	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	a := dial(t, e1, alice)
	b := dial(t, e2, bob)
	c.waitOnline(bob, 1)
	conv := chat.DirectConv(alice, bob)

	id := sendChat(a, bob, "seen", "cm-0")
	r0 := decode[sendReply](t, a.reply(chat.TypeSend, id))
	b.await("the first message", 20*time.Second, func(f frame) bool {
		return f.Type == chat.TypeMsg && decode[chat.Message](t, f).ID == r0.ID
	})
	ackID := b.send(chat.TypeAck, map[string]any{"conv": conv, "seq": r0.Seq})
	b.await("edge ack of chat.ack", 20*time.Second, isAck(ackID))
	b.close()
	c.waitOnline(bob, 0)

	var missed []sendReply
	for i := 1; i <= 3; i++ {
		id := sendChat(a, bob, "missed "+strconv.Itoa(i), "cm-"+strconv.Itoa(i))
		a.await("edge ack", 20*time.Second, isAck(id))
		missed = append(missed, decode[sendReply](t, a.reply(chat.TypeSend, id)))
	}

	b = dial(t, e3, bob)
	check := func(what string, req map[string]any) {
		t.Helper()
		id := b.send(chat.TypeSync, req)
		s := decode[syncReply](t, b.reply(chat.TypeSync, id))
		if s.Conv != conv || s.More || len(s.Messages) != len(missed) {
			t.Fatalf("sync %s: %+v, want the %d missed messages", what, s, len(missed))
		}
		for i, m := range s.Messages {
			if m.ID != missed[i].ID || m.Seq != missed[i].Seq || m.Text != "missed "+strconv.Itoa(i+1) || m.From != alice {
				t.Fatalf("sync %s: message %d is %+v, want %+v", what, i, m, missed[i])
			}
		}
	}
	check("from the last ack", map[string]any{"conv": conv})
	check("since the seen seq", map[string]any{"conv": conv, "since": r0.Seq})
	if ms := chatMsgs(t, b); len(ms) != 0 {
		t.Errorf("the new connection got live deliveries of messages sent before it connected: %+v", ms)
	}
}

// TestLogicReplicaKilledMidStream: two logic replicas share the upstream subscription; while
// alice streams N numbered messages to bob, the replica handling alice's frames dies abruptly
// (no more publishes, acks or nacks; its consumers and client closed). Every message alice's
// edge acknowledged (the bus accepted it) is stored and reaches bob — live or through
// chat.sync — with sequence numbers in alice's sending order, none lost, none stored twice.
func TestLogicReplicaKilledMidStream(t *testing.T) { replicaLoss(t, false) }

// TestLogicReplicaShutdownMidStream is the same with a graceful Shutdown of the replica (a
// rolling deploy): its in-flight frames finish, the rest is redelivered to the other.
func TestLogicReplicaShutdownMidStream(t *testing.T) { replicaLoss(t, true) }

func replicaLoss(t *testing.T, graceful bool) {
	const n = 150
	c := newCluster(t)
	e1, e2 := c.addEdge(), c.addEdge()
	l1, l2 := c.addLogic(), c.addLogic()
	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	a := dial(t, e1, alice)
	b := dial(t, e2, bob)
	c.waitOnline(bob, 1)
	conv := chat.DirectConv(alice, bob)

	ids := make([]string, n)
	var victim, survivor *logicNode
	tick := time.NewTicker(4 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		ids[i] = sendChat(a, bob, strconv.Itoa(i), "n-"+strconv.Itoa(i))
		if i == n/3 {
			eventually(t, 20*time.Second, "a replica to handle alice's frames", func() bool {
				return l1.bus.handledFor(alice) > 0 || l2.bus.handledFor(alice) > 0
			})
			victim, survivor = l1, l2
			if l2.bus.handledFor(alice) > l1.bus.handledFor(alice) {
				victim, survivor = l2, l1
			}
			t.Logf("stopping (graceful %v) the replica that handled %d of alice's frames (the other: %d) after %d sent",
				graceful, victim.bus.handledFor(alice), survivor.bus.handledFor(alice), i+1)
			if graceful {
				victim.killed.Store(true)
				go func() { _ = victim.rt.Shutdown(context.Background()); close(victim.closed) }()
			} else {
				victim.kill()
			}
		}
	}

	// Every frame is answered by the edge: ack (accepted by the bus) or error.
	acked := map[int]bool{}
	for i, id := range ids {
		f := a.await("edge answer of "+id, 20*time.Second, func(f frame) bool {
			return f.ID == id && (f.Type == protocol.TypeAck || f.Type == protocol.TypeError && f.Code != 0)
		})
		if f.Type == protocol.TypeAck {
			acked[i] = true
		}
	}
	if len(acked) < n {
		t.Logf("%d of %d frames were refused by the edge (not acknowledged): not counted", n-len(acked), n)
	}
	// Every acknowledged frame gets the plugin's reply (from the survivor if need be).
	seqOf := map[int]uint64{}
	replied := func(i int) []frame {
		return a.frames(func(f frame) bool { return f.ID == ids[i] && (f.Type == chat.TypeSend || f.Type == protocol.TypeError) })
	}
	waitReplies := func(d time.Duration) (missing int) {
		deadline := time.Now().Add(d)
		for i := range n {
			for acked[i] && len(replied(i)) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if acked[i] && len(replied(i)) == 0 {
				missing++
			}
		}
		return missing
	}
	if missing := waitReplies(10 * time.Second); missing > 0 {
		// Seen with Pulsar 4.0.8 standalone in about one run in seven or eight: the dead
		// replica's unacknowledged frames sit in the subscription's replay queue, every
		// consumer has permits, and the broker dispatches them to nobody (compare
		// apache/pulsar#23845, #24736). Not lost: they are still in the backlog.
		up := protocol.UpstreamTopic(c.ns)
		t.Logf("BROKER STALL: %d acknowledged frames unanswered 10s after the kill; upstream subscription: %s; cursor: %s; survivor %+v, victim %+v",
			missing, c.subStats(up, "sb-logic"), c.cursorStats(up, "sb-logic"), survivor.rt.Stats(), victim.rt.Stats())
		nudge := a.send(chat.TypeConvs, map[string]any{}) // one more frame on the topic
		if missing := waitReplies(5 * time.Second); missing > 0 {
			t.Logf("BROKER STALL: a new frame on the topic did not release them (%d unanswered): %s", missing, c.subStats(up, "sb-logic"))
			// What a supervisor does with a dead replica: start another. New consumers join the
			// subscription.
			c.addLogic()
			if missing := waitReplies(20 * time.Second); missing > 0 {
				t.Fatalf("BROKER STALL: %d acknowledged frames still unanswered 20s after a new replica joined; upstream subscription: %s; cursor: %s",
					missing, c.subStats(up, "sb-logic"), c.cursorStats(up, "sb-logic"))
			}
			t.Logf("BROKER STALL: a replacement replica joining released them")
		} else {
			t.Logf("BROKER STALL: a new frame on the topic released them")
		}
		a.reply(chat.TypeConvs, nudge)
	}
	for i := range n {
		if !acked[i] {
			continue
		}
		f := replied(i)[0]
		if f.Type == protocol.TypeError {
			t.Fatalf("message %d answered with error %d %s", i, f.Code, f.Message)
		}
		seqOf[i] = decode[sendReply](t, f).Seq
	}
	var prev uint64
	for i := range n {
		if s, ok := seqOf[i]; ok {
			if s <= prev {
				t.Errorf("message %d got seq %d after seq %d: alice's order not kept", i, s, prev)
			}
			prev = s
		}
	}

	// What bob has: live deliveries plus everything chat.sync returns.
	got := map[string]chat.Message{}
	live := chatMsgs(t, b)
	for _, m := range live {
		got[m.ID] = m
	}
	var since uint64
	for {
		id := b.send(chat.TypeSync, map[string]any{"conv": conv, "since": since})
		s := decode[syncReply](t, b.reply(chat.TypeSync, id))
		for _, m := range s.Messages {
			if old, ok := got[m.ID]; ok && (old.Text != m.Text || old.Seq != m.Seq) {
				t.Errorf("message %s delivered live as %+v, synced as %+v", m.ID, old, m)
			}
			got[m.ID] = m
			since = m.Seq
		}
		if !s.More {
			break
		}
	}
	all := make([]chat.Message, 0, len(got))
	for _, m := range got {
		all = append(all, m)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Seq < all[j].Seq })
	seen := map[int]uint64{}
	last := -1
	for k, m := range all {
		if m.Seq != uint64(k+1) {
			t.Errorf("seq %d at position %d: the conversation has a gap", m.Seq, k)
		}
		num, err := strconv.Atoi(m.Text)
		if err != nil || m.CMID != "n-"+m.Text || m.From != alice {
			t.Fatalf("unexpected message %+v", m)
		}
		if s, dup := seen[num]; dup {
			t.Errorf("message %d stored twice (seq %d and %d)", num, s, m.Seq)
		}
		seen[num] = m.Seq
		if num <= last {
			t.Errorf("message %d stored (seq %d) after message %d: alice's order not kept", num, m.Seq, last)
		}
		last = num
	}
	for i := range n {
		if acked[i] {
			if _, ok := seen[i]; !ok {
				t.Errorf("message %d was acknowledged to alice but never reached bob", i)
			}
		}
	}
	// Live order at bob (after dropping repeats by message id, as clients do).
	outOfOrder, dups := 0, 0
	var hi uint64
	ids2 := map[string]bool{}
	for _, m := range live {
		if ids2[m.ID] {
			dups++
			continue
		}
		ids2[m.ID] = true
		if m.Seq < hi {
			outOfOrder++
		}
		hi = max(hi, m.Seq)
	}
	t.Logf("%d acknowledged, %d stored; bob got %d live (%d repeats, %d out of order), the rest by sync; survivor handled %d, victim %d",
		len(acked), len(all), len(live), dups, outOfOrder, survivor.bus.handledFor(alice), victim.bus.handledFor(alice))
	if outOfOrder > 0 {
		t.Errorf("%d live deliveries arrived after a later message of the same conversation", outOfOrder)
	}
}
