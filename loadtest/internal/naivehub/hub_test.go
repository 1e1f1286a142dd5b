package naivehub

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) string {
	t.Helper()
	h := New(Config{Addr: "127.0.0.1:0"})
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "ws://" + h.Addr() + "/ws"
}

type sframe struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func dial(t *testing.T, url, user string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url+"?user="+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if f := read(t, c); f.Type != "welcome" {
		t.Fatalf("first frame %+v, want welcome", f)
	}
	return c
}

func read(t *testing.T, c *websocket.Conn) sframe {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f sframe
	if err := c.ReadJSON(&f); err != nil {
		t.Fatal(err)
	}
	return f
}

func send(t *testing.T, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestRoomAndChat(t *testing.T) {
	url := start(t)
	a, b := dial(t, url, "a"), dial(t, url, "b")
	send(t, a, `{"type":"room.join","id":"1","data":{"room":"r"}}`)
	send(t, b, `{"type":"danmaku.join","id":"1","data":{"room":"r"}}`)
	for _, c := range []*websocket.Conn{a, b} {
		if f := read(t, c); f.Type != "ack" || f.ID != "1" {
			t.Fatalf("join answer %+v", f)
		}
	}
	send(t, a, `{"type":"danmaku.send","data":{"room":"r","text":"hello"}}`)
	for _, c := range []*websocket.Conn{a, b} {
		f := read(t, c)
		var d map[string]string
		_ = json.Unmarshal(f.Data, &d)
		if f.Type != "danmaku.message" || d["text"] != "hello" || d["user"] != "a" {
			t.Fatalf("delivery %+v", f)
		}
	}
	send(t, b, `{"type":"chat.send","id":"9","data":{"to":"a","text":"psst"}}`)
	if f := read(t, b); f.Type != "ack" || f.ID != "9" {
		t.Fatalf("chat ack %+v", f)
	}
	f := read(t, a)
	var d map[string]string
	_ = json.Unmarshal(f.Data, &d)
	if f.Type != "chat.message" || d["from"] != "b" || d["text"] != "psst" {
		t.Fatalf("chat delivery %+v", f)
	}
}

func TestBadInput(t *testing.T) {
	url := start(t)
	resp, err := http.Get("http" + url[2:]) // no ?user= and no upgrade
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no user: status %d, want 401", resp.StatusCode)
	}
	c := dial(t, url, "x")
	send(t, c, `{"type":`)
	if f := read(t, c); f.Type != "error" || f.Code != 1001 {
		t.Fatalf("malformed: %+v", f)
	}
	send(t, c, `{"type":"nope","id":"4"}`)
	if f := read(t, c); f.Type != "error" || f.Code != 1002 || f.ID != "4" {
		t.Fatalf("unknown type: %+v", f)
	}
	send(t, c, `{"type":"room.join","id":"5","data":{}}`)
	if f := read(t, c); f.Type != "error" || f.Code != 1007 {
		t.Fatalf("join without room: %+v", f)
	}
}

func TestTokenAuth(t *testing.T) {
	h := New(Config{Addr: "127.0.0.1:0", JWTSecret: []byte("k")})
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	base := "http://" + h.Addr()
	resp, err := http.Get(base + "/auth/dev-token?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || body.Token == "" {
		t.Fatalf("dev token: %v", err)
	}
	ws := "ws://" + h.Addr() + "/ws"
	if _, r, err := websocket.DefaultDialer.Dial(ws+"?user=alice", nil); err == nil || r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dev user accepted in token mode: %v", err)
	}
	if _, r, err := websocket.DefaultDialer.Dial(ws+"?token=garbage", nil); err == nil || r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token accepted: %v", err)
	}
	c, _, err := websocket.DefaultDialer.Dial(ws+"?token="+body.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := read(t, c)
	var d map[string]string
	_ = json.Unmarshal(f.Data, &d)
	if f.Type != "welcome" || d["user"] != "alice" {
		t.Fatalf("welcome %+v", f)
	}
}
