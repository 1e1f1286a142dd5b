package chat_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

func decode[T any](t *testing.T, f protocol.ServerFrame) T {
	t.Helper()
	var v T
	if f.Type == protocol.TypeError {
		t.Fatalf("error frame: %d %s", f.Code, f.Message)
	}
	if err := json.Unmarshal(f.Data, &v); err != nil {
		t.Fatalf("%s: %v", f.Data, err)
	}
	return v
}

func isMsg(id string) func(d *protocol.Downstream) bool {
	return func(d *protocol.Downstream) bool {
		var m chat.Message
		return d.Frame.Type == chat.TypeMsg && json.Unmarshal(d.Frame.Data, &m) == nil && m.ID == id
	}
}

// TestDirectTwoDevices: alice on e1 writes to bob, who has devices on e2 and e3: each edge gets
// the message once; a retry with the same cmid gets the same id; sync recovers history.
func TestDirectTwoDevices(t *testing.T) {
	runChat(t, chat.NewMemoryStore(0, 0))
}

func runChat(t *testing.T, store chat.Store) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{chat.New(chat.Config{Store: store})}})
	e1, e2, e3 := h.Edge("e1"), h.Edge("e2"), h.Edge("e3")
	alice := e1.Connect("alice", nil)
	aliceTab := e1.Connect("alice", nil)
	bob2 := e2.Connect("bob", nil)
	e3.Connect("bob", nil)

	e1.SendJSON(alice, chat.TypeSend, "s1", map[string]string{"to": "bob", "text": "hi", "cmid": "c1"})
	r := decode[sendReply](t, e1.ExpectReply(alice, "s1"))
	if r.Seq != 1 || r.Conv != chat.DirectConv("alice", "bob") || r.Dup {
		t.Fatalf("reply %+v", r)
	}
	for _, e := range []*logictest.Edge{e2, e3} {
		d := e.Expect(isMsg(r.ID), "chat.msg on "+e.ID)
		if d.Target != protocol.TargetUsers || len(d.Users) != 1 || d.Users[0] != "bob" || d.Priority.Sheddable() {
			t.Fatalf("%s: %+v", e.ID, d)
		}
	}
	// alice's other tab gets it too (the sending connection is excluded on its edge).
	d := e1.Expect(isMsg(r.ID), "chat.msg to alice's other tab")
	if d.ExcludeConn != alice.ID || d.Users[0] != "alice" {
		t.Fatalf("sender edge: %+v (tab %d)", d, aliceTab.ID)
	}
	// A client retry: same cmid, same message id, delivered again (clients drop by id).
	e1.SendJSON(alice, chat.TypeSend, "s1b", map[string]string{"to": "bob", "text": "hi", "cmid": "c1"})
	r2 := decode[sendReply](t, e1.ExpectReply(alice, "s1b"))
	if r2.ID != r.ID || !r2.Dup {
		t.Fatalf("retry reply %+v", r2)
	}
	for i := 2; i <= 4; i++ {
		e2.SendJSON(bob2, chat.TypeSend, fmt.Sprint("b", i), map[string]string{"to": "alice", "text": fmt.Sprint("m", i), "cmid": fmt.Sprint("b", i)})
		decode[sendReply](t, e2.ExpectReply(bob2, fmt.Sprint("b", i)))
	}
	// bob reconnects elsewhere knowing seq 1: sync returns 2..4.
	bob4 := h.Edge("e4").Connect("bob", nil)
	h.Edge("e4").SendJSON(bob4, chat.TypeSync, "y", map[string]any{"conv": r.Conv, "since": 1})
	sr := decode[syncReply](t, h.Edge("e4").ExpectReply(bob4, "y"))
	if len(sr.Messages) != 3 || sr.Messages[0].Seq != 2 || sr.Messages[2].Text != "m4" || sr.More {
		t.Fatalf("sync: %+v", sr)
	}
	// Paged sync and sync from the last ack.
	e1.SendJSON(alice, chat.TypeSync, "p", map[string]any{"conv": r.Conv, "since": 0, "limit": 2})
	if sr := decode[syncReply](t, e1.ExpectReply(alice, "p")); len(sr.Messages) != 2 || !sr.More {
		t.Fatalf("paged: %+v", sr)
	}
	e1.SendJSON(alice, chat.TypeAck, "", map[string]any{"conv": r.Conv, "seq": 3})
	e1.SendJSON(alice, chat.TypeSync, "q", map[string]any{"conv": r.Conv})
	if sr := decode[syncReply](t, e1.ExpectReply(alice, "q")); len(sr.Messages) != 1 || sr.Messages[0].Seq != 4 {
		t.Fatalf("sync from ack: %+v", sr)
	}
	// Nobody else may read the conversation.
	eve := e3.Connect("eve", nil)
	e3.SendJSON(eve, chat.TypeSync, "x", map[string]any{"conv": r.Conv, "since": 0})
	if f := e3.ExpectReply(eve, "x"); f.Code != protocol.ErrForbidden {
		t.Fatalf("eve: %+v", f)
	}
}

func TestGroup(t *testing.T) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{chat.New(chat.Config{Store: chat.NewMemoryStore(0, 0)})}})
	e1, e2 := h.Edge("e1"), h.Edge("e2")
	a, b, c := e1.Connect("a", nil), e2.Connect("b", nil), e2.Connect("c", nil)
	out := e1.Connect("outsider", nil)
	for _, m := range []struct {
		e *logictest.Edge
		c logic.Conn
	}{{e1, a}, {e2, b}, {e2, c}} {
		m.e.SendJSON(m.c, chat.TypeJoin, "j", map[string]string{"group": "g1"})
		decode[map[string]string](t, m.e.ExpectReply(m.c, "j"))
	}
	e1.SendJSON(a, chat.TypeSend, "s", map[string]string{"group": "g1", "text": "hello all", "cmid": "x"})
	r := decode[sendReply](t, e1.ExpectReply(a, "s"))
	d := e2.Expect(isMsg(r.ID), "group msg on e2")
	if len(d.Users) != 2 {
		t.Fatalf("one envelope for b and c: %+v", d)
	}
	if n := e2.Count(isMsg(r.ID)); n != 1 {
		t.Fatalf("e2 got %d envelopes", n)
	}
	e1.SendJSON(out, chat.TypeSend, "o", map[string]string{"group": "g1", "text": "let me in"})
	if f := e1.ExpectReply(out, "o"); f.Code != protocol.ErrForbidden {
		t.Fatalf("outsider: %+v", f)
	}
	e2.SendJSON(b, chat.TypeConvs, "cv", map[string]string{})
	cv := decode[struct{ Convs []chat.ConvState }](t, e2.ExpectReply(b, "cv"))
	if len(cv.Convs) != 1 || cv.Convs[0].Conv != "g:g1" || cv.Convs[0].Last != 1 {
		t.Fatalf("convs: %+v", cv)
	}
}

func TestValidation(t *testing.T) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{chat.New(chat.Config{Store: chat.NewMemoryStore(0, 0), MaxText: 10})}})
	e := h.Edge("e1")
	a := e.Connect("a", nil)
	for i, data := range []string{
		`{"text":"x"}`,
		`{"to":"b","group":"g","text":"x"}`,
		`{"to":"b","text":""}`,
		`{"to":"b","text":"01234567890"}`,
		`{"group":"bad group","text":"x"}`,
		`"nope"`,
		``,
	} {
		e.Send(a, chat.TypeSend, fmt.Sprint(i), data)
		if f := e.ExpectReply(a, fmt.Sprint(i)); f.Type != protocol.TypeError {
			t.Errorf("%s accepted: %+v", data, f)
		}
	}
	e.Send(a, chat.TypeSync, "s", `{"conv":"d:99:x"}`)
	if f := e.ExpectReply(a, "s"); f.Type != protocol.TypeError {
		t.Errorf("bad conv accepted: %+v", f)
	}
}
