package danmaku_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T, cfg danmaku.Config) (*logictest.Harness, []*logictest.Edge, []logic.Conn) {
	t.Helper()
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{danmaku.New(cfg)}})
	edges := []*logictest.Edge{h.Edge("e1"), h.Edge("e2"), h.Edge("e3")}
	users := []string{"viewer", "paying", "mod", "other"}
	var conns []logic.Conn
	for i, u := range users {
		e := edges[i%3]
		c := e.Connect(u, nil)
		conns = append(conns, c)
		e.SendJSON(c, danmaku.TypeJoin, "j", map[string]string{"room": "live"})
		if f := e.ExpectReply(c, "j"); f.Type != danmaku.TypeJoin {
			t.Fatalf("join %s: %+v", u, f)
		}
	}
	logictest.Eventually(t, "members in presence", func() bool {
		n, err := h.Presence.RoomCounts(context.Background(), []string{"live"})
		return err == nil && n["live"] == len(users)
	})
	return h, edges, conns
}

func TestPriorityClassesAndFanout(t *testing.T) {
	_, edges, conns := setup(t, danmaku.Config{Moderators: []string{"mod"}, CountInterval: time.Hour})
	send := func(i int, id string, v map[string]any) {
		edges[i%3].SendJSON(conns[i], danmaku.TypeSend, id, v)
	}
	send(0, "a", map[string]any{"room": "live", "text": "hello"})
	send(1, "b", map[string]any{"room": "live", "text": "gift", "paid": 500})
	send(2, "c", map[string]any{"room": "live", "text": "be nice"})
	want := map[string]protocol.Priority{"hello": protocol.PriorityNormal, "gift": protocol.PriorityPaid, "be nice": protocol.PriorityModerator}
	senderEdge := map[string]int{"hello": 0, "gift": 1, "be nice": 2}
	for text, prio := range want {
		for i, e := range edges {
			d := e.Expect(func(d *protocol.Downstream) bool {
				var m danmaku.Danmu
				return d.Target == protocol.TargetRoom && d.Frame.Type == danmaku.TypeDanmu &&
					json.Unmarshal(d.Frame.Data, &m) == nil && m.Text == text
			}, "danmaku "+text)
			if d.Priority != prio || d.Room != "live" {
				t.Errorf("%s on %s: priority %d room %q, want %d", text, e.ID, d.Priority, d.Room, prio)
			}
			if (i == senderEdge[text]) != (d.ExcludeConn != 0) {
				t.Errorf("%s on %s: exclude %d", text, e.ID, d.ExcludeConn)
			}
		}
	}
	for i, id := range []string{"a", "b", "c"} {
		d := edges[i].Expect(func(d *protocol.Downstream) bool {
			return d.Target == protocol.TargetConns && d.Frame.ID == id
		}, "echo "+id)
		if d.Priority != protocol.PriorityEcho || d.Frame.Type != danmaku.TypeDanmu || d.Conns[0] != conns[i].ID {
			t.Errorf("echo %s: %+v", id, d)
		}
	}
	// Exactly one room envelope per edge per danmaku.
	for _, e := range edges {
		if n := e.Count(func(d *protocol.Downstream) bool { return d.Target == protocol.TargetRoom }); n != 3 {
			t.Errorf("%s: %d room envelopes, want 3", e.ID, n)
		}
	}
}

func TestRateLimitAndValidation(t *testing.T) {
	_, edges, conns := setup(t, danmaku.Config{Rate: 0.001, Burst: 2, CountInterval: time.Hour})
	e, c := edges[0], conns[0]
	for i := range 3 {
		e.SendJSON(c, danmaku.TypeSend, fmt.Sprint(i), map[string]any{"room": "live", "text": "spam"})
	}
	for i := range 3 {
		f := e.ExpectReply(c, fmt.Sprint(i))
		if limited := f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited; limited != (i == 2) {
			t.Fatalf("danmaku %d: %+v", i, f)
		}
	}
	// Paid messages are not limited.
	e.SendJSON(c, danmaku.TypeSend, "p", map[string]any{"room": "live", "text": "paid", "paid": 1})
	if f := e.ExpectReply(c, "p"); f.Type != danmaku.TypeDanmu {
		t.Fatalf("paid: %+v", f)
	}
	long := make([]rune, 201)
	for i := range long {
		long[i] = '啊'
	}
	for _, tc := range []struct {
		data string
		code protocol.ErrorCode
	}{
		{`{"room":"","text":"x"}`, protocol.ErrInvalidData},
		{`{"room":"live","text":""}`, protocol.ErrInvalidData},
		{`{"room":"live","text":"` + string(long) + `"}`, protocol.ErrTooLarge},
		{`{"room":"live","text":"x","paid":-1}`, protocol.ErrInvalidData},
		{`[1,2]`, protocol.ErrInvalidData},
		{``, protocol.ErrInvalidData},
	} {
		e.Send(c, danmaku.TypeSend, "v", tc.data)
		if f := e.ExpectReply(c, "v"); f.Type != protocol.TypeError || f.Code != tc.code {
			t.Errorf("%s: %+v, want %d", tc.data, f, tc.code)
		}
	}
	e.Send(c, danmaku.TypeJoin, "bad", `{"room":"a\u0001b"}`)
	if f := e.ExpectReply(c, "bad"); f.Code != protocol.ErrInvalidData {
		t.Errorf("bad room join: %+v", f)
	}
}

func TestOnlineCounts(t *testing.T) {
	_, edges, conns := setup(t, danmaku.Config{CountInterval: 20 * time.Millisecond})
	online := func(e *logictest.Edge, n int) {
		t.Helper()
		e.Expect(func(d *protocol.Downstream) bool {
			var o danmaku.Online
			return d.Frame.Type == danmaku.TypeOnline && json.Unmarshal(d.Frame.Data, &o) == nil &&
				o.Room == "live" && o.Online == n
		}, fmt.Sprintf("online=%d", n))
	}
	for _, e := range edges {
		online(e, 4)
	}
	edges[0].SendJSON(conns[0], danmaku.TypeLeave, "l", map[string]string{"room": "live"})
	for _, e := range edges[1:] {
		online(e, 3)
	}
}

func TestStaleDanmakuShed(t *testing.T) {
	_, edges, conns := setup(t, danmaku.Config{Moderators: []string{"mod"}, CountInterval: time.Hour, MaxAge: time.Second})
	old := time.Now().Add(-time.Minute).UnixNano()
	for i, text := range []string{"late chatter", "late but paid", "late moderator"} {
		e, c := edges[i%3], conns[i]
		data := `{"room":"live","text":"` + text + `"}`
		if i == 1 {
			data = `{"room":"live","text":"` + text + `","paid":100}`
		}
		user := []string{"viewer", "paying", "mod"}[i]
		e.Publish(&protocol.Upstream{Kind: protocol.UpMessage, Edge: e.ID, Epoch: e.Epoch, Conn: c.ID, User: user,
			Type: danmaku.TypeSend, ID: "x", Data: []byte(data), TimeUnixNano: old})
		f := e.ExpectReply(c, "x")
		if shed := f.Type == protocol.TypeError && f.Code == protocol.ErrTimeout; shed != (i == 0) {
			t.Errorf("%s: %+v", text, f)
		}
	}
	for _, e := range edges {
		for _, text := range []string{"late but paid", "late moderator"} {
			e.Expect(func(d *protocol.Downstream) bool {
				var m danmaku.Danmu
				return d.Target == protocol.TargetRoom && json.Unmarshal(d.Frame.Data, &m) == nil && m.Text == text
			}, text)
		}
		// The stale one was handled (and shed) before these were published.
		if n := e.Count(func(d *protocol.Downstream) bool { return d.Target == protocol.TargetRoom }); n != 2 {
			t.Errorf("%s: %d room envelopes, want 2 (the stale ordinary one shed)", e.ID, n)
		}
	}
}
