package edge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/protocol"
)

func down(t testing.TB, s *Server, d *protocol.Downstream) {
	t.Helper()
	if err := s.HandleDownstream(protocol.AppendDownstream(nil, d)); err != nil {
		t.Fatalf("HandleDownstream: %v", err)
	}
}

func deliver(typ, data string) protocol.ServerFrame {
	return protocol.ServerFrame{Type: typ, Data: []byte(data)}
}

func TestGorillaUpstreamAndDownstream(t *testing.T) {
	pub := &fakePub{}
	cfg := testConfig()
	cfg.Publisher = pub
	s := startEdge(t, cfg)
	defer pub.wg.Wait()

	a, wa := dialGorilla(t, s, "alice")
	b1, wb1 := dialGorilla(t, s, "bob")
	b2, wb2 := dialGorilla(t, s, "bob")
	ida, idb1, idb2 := connID(t, wa), connID(t, wb1), connID(t, wb2)
	if ida == idb1 || idb1 == idb2 {
		t.Fatalf("connection ids not unique: %d %d %d", ida, idb1, idb2)
	}
	checkFor(t, 5*time.Second, func() error {
		if n := len(pub.find(protocol.UpConnect)); n != 3 {
			return fmt.Errorf("%d connect envelopes", n)
		}
		return nil
	})

	// Upstream: the frame reaches the publisher, keyed by user, and is acked after done(nil).
	if err := a.WriteMessage(websocket.TextMessage, []byte(`{"type":"chat.send","id":"1","data":{"to":"bob","text":"hi"}}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, a); f.Type != protocol.TypeAck || f.ID != "1" {
		t.Fatalf("got %+v, want ack 1", f)
	}
	msgs := pub.find(protocol.UpMessage)
	if len(msgs) != 1 {
		t.Fatalf("%d message envelopes, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Type != "chat.send" || m.ID != "1" || string(m.Data) != `{"to":"bob","text":"hi"}` ||
		m.User != "alice" || m.Conn != ida || m.Edge != "edge-test" || m.Epoch != s.Epoch() {
		t.Fatalf("envelope %+v", m)
	}

	// A refused publish answers the frame's id with an error frame.
	pub.setErr(errors.New("bus down"))
	if err := a.WriteMessage(websocket.TextMessage, []byte(`{"type":"chat.send","id":"2","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, a); f.Type != protocol.TypeError || f.ID != "2" || f.Code != protocol.ErrUnavailable {
		t.Fatalf("got %+v, want error 2 / ErrUnavailable", f)
	}
	// A publish whose outcome is unknown (a Timeout() error, like bus.ErrTimeout) is answered
	// with ErrTimeout, never with "not accepted".
	pub.setErr(timeoutErr{})
	if err := a.WriteMessage(websocket.TextMessage, []byte(`{"type":"chat.send","id":"3","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, a); f.Type != protocol.TypeError || f.ID != "3" || f.Code != protocol.ErrTimeout {
		t.Fatalf("got %+v, want error 3 / ErrTimeout", f)
	}
	pub.setErr(nil)

	// Room: alice and bob's first connection join; a room delivery reaches exactly them.
	down(t, s, &protocol.Downstream{Kind: protocol.DownJoin, Target: protocol.TargetConns, Conns: []uint64{ida, idb1}, Rooms: []string{"r1"}})
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "r1", Frame: deliver("danmaku", `{"n":1}`)})
	for _, c := range []*websocket.Conn{a, b1} {
		if f := readFrame(t, c); f.Type != "danmaku" || string(f.Data) != `{"n":1}` {
			t.Fatalf("room delivery: got %+v", f)
		}
	}
	// User: both of bob's connections.
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"bob"}, Frame: deliver("chat", `{"n":2}`)})
	for _, c := range []*websocket.Conn{b1, b2} {
		if f := readFrame(t, c); f.Type != "chat" || string(f.Data) != `{"n":2}` {
			t.Fatalf("user delivery: got %+v", f)
		}
	}
	// Connection: only b2, with the edge's epoch.
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetConns, Epoch: s.Epoch(), Conns: []uint64{idb2}, Frame: deliver("chat", `{"n":3}`)})
	// A stale epoch addresses nobody here.
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetConns, Epoch: 12345, Conns: []uint64{idb2}, Frame: deliver("chat", `{"n":"stale"}`)})
	// Everyone, except alice.
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetAll, ExcludeConn: ida, Frame: deliver("news", `{"n":4}`)})
	if f := readFrame(t, b2); f.Type != "chat" || string(f.Data) != `{"n":3}` {
		t.Fatalf("conn delivery: got %+v", f)
	}
	for _, c := range []*websocket.Conn{b1, b2} {
		if f := readFrame(t, c); f.Type != "news" {
			t.Fatalf("all delivery: got %+v", f)
		}
	}
	// Leave, then a room delivery reaches only bob's first connection; a's next frame is the
	// following user delivery.
	down(t, s, &protocol.Downstream{Kind: protocol.DownLeave, Target: protocol.TargetUsers, Users: []string{"alice"}, Rooms: []string{"r1"}})
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "r1", Frame: deliver("danmaku", `{"n":5}`)})
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"alice"}, Frame: deliver("chat", `{"n":6}`)})
	if f := readFrame(t, b1); string(f.Data) != `{"n":5}` {
		t.Fatalf("room after leave: got %+v", f)
	}
	if f := readFrame(t, a); string(f.Data) != `{"n":6}` {
		t.Fatalf("alice after leave: got %+v", f)
	}

	// Kick: b1 is closed with 4003.
	down(t, s, &protocol.Downstream{Kind: protocol.DownClose, Target: protocol.TargetConns, Conns: []uint64{idb1}})
	if code := readClose(t, b1); code != int(protocol.CloseKicked) {
		t.Fatalf("kick close code %d", code)
	}
	checkFor(t, 5*time.Second, func() error {
		if n := len(pub.find(protocol.UpDisconnect)); n != 1 {
			return fmt.Errorf("%d disconnect envelopes", n)
		}
		return nil
	})
	if d := pub.find(protocol.UpDisconnect)[0]; d.Conn != idb1 || d.CloseCode != uint32(protocol.CloseKicked) {
		t.Fatalf("disconnect envelope %+v", d)
	}
	if st := s.Stats(); st.Downstream != 10 || st.Open != 2 {
		t.Fatalf("stats %+v: want Downstream 10, Open 2", st)
	}
	if err := s.HandleDownstream([]byte{0xff}); err == nil {
		t.Fatal("HandleDownstream accepted garbage")
	}
}

func TestNoPublisherAnswersUnavailable(t *testing.T) {
	s := startEdge(t, testConfig())
	c, _ := dialGorilla(t, s, "u")
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"x","id":"9"}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, c); f.Type != protocol.TypeError || f.ID != "9" || f.Code != protocol.ErrUnavailable {
		t.Fatalf("got %+v", f)
	}
}

func TestBadFrameErrorThen4000(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBadFrames = 2
	s := startEdge(t, cfg)
	c, _ := dialGorilla(t, s, "u")
	for i := 0; i < 2; i++ {
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":"1"}`)); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, c); f.Type != protocol.TypeError || f.Code != protocol.ErrBadFrame {
			t.Fatalf("got %+v, want ErrBadFrame", f)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	if code := readClose(t, c); code != int(protocol.CloseBadFrame) {
		t.Fatalf("close code %d, want 4000", code)
	}
}

// TestWriteCoalescing: room chatter within WriteCoalesce of the last flush leaves in one write
// per connection; the first after a quiet interval, and chat to users, go at once.
func TestWriteCoalescing(t *testing.T) {
	cfg := testConfig()
	cfg.WriteCoalesce = 300 * time.Millisecond
	s, l := newFakeLoop(t, cfg)
	defer s.cancel()
	wc, fc := fakeOpen(l, "u", true)
	l.join(wc, "r")
	written := func(want uint64) func() error {
		return func() error {
			if n := s.Stats().Written; n != want {
				return fmt.Errorf("written %d frames, want %d", n, want)
			}
			return nil
		}
	}
	before := fc.writes.Load()
	for i := 0; i < 5; i++ {
		d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "r", Frame: deliver("d", fmt.Sprintf(`{"i":%d}`, i))}
		if err := s.Dispatch(d); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 5*time.Second, written(5))
	// The first went at once (nothing was flushed before), the other four together.
	if got := fc.writes.Load() - before; got != 2 {
		t.Fatalf("%d writes for 5 room deliveries, want 2", got)
	}
	// Chat to a user does not wait for held chatter: it is its own write, the three held
	// room deliveries leave together.
	for i := 0; i < 3; i++ {
		d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "r", Frame: deliver("d", `{}`)}
		if err := s.Dispatch(d); err != nil {
			t.Fatal(err)
		}
	}
	d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"u"}, Frame: deliver("chat", `{}`)}
	if err := s.Dispatch(d); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, written(9))
	if got := fc.writes.Load() - before; got != 4 {
		t.Fatalf("%d writes for 9 deliveries, want 4 (1 + 4 held, chat, 3 held)", got)
	}
	if h := s.Stats().FanoutLatency; h.Count == 0 {
		t.Fatal("no fanout latency observed")
	}
}

// TestLoadShedding: a backlogged connection misses sheddable deliveries but still gets
// privileged ones, until it is over MaxOutboundBytes (4002).
func TestLoadShedding(t *testing.T) {
	cfg := testConfig()
	cfg.MaxOutboundBytes = 1000
	cfg.ShedBytes = 100
	s, l := newFakeLoop(t, cfg)
	defer s.cancel()
	wc, fc := fakeOpen(l, "u", true)
	send := func(p protocol.Priority) {
		t.Helper()
		d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"u"}, Priority: p, Frame: deliver("d", `{}`)}
		if err := s.Dispatch(d); err != nil {
			t.Fatal(err)
		}
	}
	fc.backlog = 500
	w := fc.writes.Load()
	send(protocol.PriorityNormal)
	if fc.writes.Load() != w || s.Stats().Shed != 1 {
		t.Fatalf("normal delivery not shed: writes %d, stats %+v", fc.writes.Load()-w, s.Stats())
	}
	for _, p := range []protocol.Priority{protocol.PriorityEcho, protocol.PriorityPaid, protocol.PriorityModerator, protocol.PrioritySystem} {
		send(p)
	}
	if got := fc.writes.Load() - w; got != 4 {
		t.Fatalf("%d privileged deliveries written, want 4", got)
	}
	fc.backlog = 1000
	send(protocol.PriorityPaid)
	if wc.state != connClosing || s.Stats().Closes[uint16(protocol.CloseSlowConsumer)] != 1 {
		t.Fatalf("not closed as slow: state %d", wc.state)
	}
}

func TestKickCodes(t *testing.T) {
	s := startEdge(t, testConfig())
	for _, tc := range []struct {
		code uint32
		want int
	}{{0, 4003}, {4006, 4006}, {1005, 4003}, {70000, 4003}, {1012, 1012}} {
		c, w := dialGorilla(t, s, "k")
		down(t, s, &protocol.Downstream{Kind: protocol.DownClose, Target: protocol.TargetConns, Conns: []uint64{connID(t, w)}, Code: tc.code, Reason: "bye"})
		if got := readClose(t, c); got != tc.want {
			t.Fatalf("kick with %d: close %d, want %d", tc.code, got, tc.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "publish timed out" }
func (timeoutErr) Timeout() bool { return true }
