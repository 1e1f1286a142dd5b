package wire

import (
	"encoding/json"
	"net/url"
	"reflect"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func parseAll(t *testing.T, a Adapter, msg string) []Event {
	t.Helper()
	var out []Event
	if err := a.Parse([]byte(msg), func(ev *Event) {
		e := *ev
		e.Texts = append([]string(nil), ev.Texts...)
		out = append(out, e)
	}); err != nil {
		t.Fatalf("parse %s: %v", msg, err)
	}
	return out
}

func TestSwitchboardParse(t *testing.T) {
	a, err := For("switchboard", Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		msg  string
		want Event
	}{
		{`{"type":"welcome","data":{"conn":"c1","user":"u","edge":"e"}}`, Event{Kind: KindWelcome}},
		{`{"type":"ack","id":"7"}`, Event{Kind: KindAck, ID: 7}},
		{`{"type":"error","id":"2","code":1006,"message":"no"}`, Event{Kind: KindError, ID: 2, Err: "1006 no"}},
		{`{"type":"danmaku.batch","data":{"room":"r","items":[{"user":"a","text":"x"},{"user":"b","text":"y"}]}}`,
			Event{Kind: KindRoom, Texts: []string{"x", "y"}}},
		{`{"type":"danmaku.message","data":{"room":"r","user":"a","text":"x"}}`, Event{Kind: KindRoom, Texts: []string{"x"}}},
		{`{"type":"danmaku","data":{"room":"r","text":"z"}}`, Event{Kind: KindRoom, Texts: []string{"z"}}},
		{`{"type":"chat.message","data":{"from":"a","to":"b","text":"hi"}}`, Event{Kind: KindChat, From: "a", Text: "hi"}},
		{`{"type":"chat.msg","data":{"conv":"d:1:a:b","seq":3,"id":"m","from":"a","cmid":"c","text":"yo","ts":1}}`,
			Event{Kind: KindChat, From: "a", Text: "yo"}},
		{`{"type":"room.join","id":"2","data":{"room":"r"}}`, Event{Kind: KindAck, ID: 2}},
		{`{"type":"danmaku.count","data":{"room":"r","n":3}}`, Event{Kind: KindOther}},
		{`{"type":"move","data":{"delay_ms":10,"reason":"drain"}}`, Event{Kind: KindMove}},
	}
	for _, c := range cases {
		got := parseAll(t, a, c.msg)
		if len(got) != 1 {
			t.Fatalf("%s: %d events", c.msg, len(got))
		}
		if got[0].Texts == nil {
			got[0].Texts = c.want.Texts[:0:0]
		}
		if c.want.Texts == nil {
			c.want.Texts = got[0].Texts[:0:0]
		}
		if !reflect.DeepEqual(got[0], c.want) {
			t.Errorf("%s: got %+v, want %+v", c.msg, got[0], c.want)
		}
	}
	if err := a.Parse([]byte(`{"type":`), func(*Event) {}); err == nil {
		t.Error("malformed frame parsed")
	}
}

func TestSwitchboardFrames(t *testing.T) {
	a, _ := For("switchboard", Options{JoinType: "room.join", SendType: "room.send"})
	var f struct {
		Type string            `json:"type"`
		ID   string            `json:"id"`
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(a.Join("r1", 2), &f); err != nil || f.Type != "room.join" || f.ID != "2" || f.Data["room"] != "r1" {
		t.Fatalf("join = %+v, %v", f, err)
	}
	f.ID = ""
	if err := json.Unmarshal(a.Send("r1", "u", "hello", 0), &f); err != nil || f.Type != "room.send" || f.ID != "" || f.Data["text"] != "hello" {
		t.Fatalf("send = %+v, %v", f, err)
	}
	d, _ := For("naive", Options{})
	if err := json.Unmarshal(d.Join("r1", 2), &f); err != nil || f.Type != TypeRoomJoin {
		t.Fatalf("naive default join = %+v, %v", f, err)
	}
}

func TestCentrifugoParse(t *testing.T) {
	a, _ := For("centrifugo", Options{})
	msg := `{"id":1,"connect":{"client":"c","version":"5.4.9"}}
{"push":{"channel":"lt-room","pub":{"data":{"user":"p","text":"F|1|2|xx"}}}}
{"push":{"channel":"u_b","pub":{"data":{"from":"a","text":"C|1|2|xx"}}}}
{"id":3,"error":{"code":103,"message":"permission denied"}}
{}
{"id":2,"subscribe":{}}`
	got := parseAll(t, a, msg)
	kinds := []Kind{KindWelcome, KindRoom, KindChat, KindError, KindPing, KindAck}
	if len(got) != len(kinds) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(kinds), got)
	}
	for i, k := range kinds {
		if got[i].Kind != k {
			t.Errorf("event %d kind %d, want %d", i, got[i].Kind, k)
		}
	}
	if got[2].From != "a" || got[3].ID != 3 || got[1].Texts[0] != "F|1|2|xx" {
		t.Errorf("fields: %+v", got)
	}
	if string(a.Pong()) != "{}" {
		t.Error("pong")
	}
}

func TestForUnknown(t *testing.T) {
	if _, err := For("mqtt", Options{}); err == nil {
		t.Fatal("unknown protocol accepted")
	}
}

func TestSwitchboardTokenURL(t *testing.T) {
	secret := []byte("s3cret")
	a, _ := For("switchboard", Options{JWTSecret: secret, JWTAudience: "switchboard"})
	u, err := a.URL("ws://127.0.0.1:1/ws", "alice")
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	if pu.Query().Get("user") != "" {
		t.Fatalf("dev user leaked into %s", u)
	}
	var claims jwt.RegisteredClaims
	if _, err := jwt.ParseWithClaims(pu.Query().Get("token"), &claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("switchboard")); err != nil || claims.Subject != "alice" {
		t.Fatalf("token: %v, sub %q", err, claims.Subject)
	}
	plain, _ := For("switchboard", Options{})
	if u, _ := plain.URL("ws://127.0.0.1:1/ws", "bob"); u != "ws://127.0.0.1:1/ws?user=bob" {
		t.Fatalf("dev url %s", u)
	}
}
