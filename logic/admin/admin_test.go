package admin_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/admin"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "s3cret"

type env struct {
	h   *logictest.Harness
	srv *httptest.Server
}

func setup(t *testing.T, tok string) *env {
	t.Helper()
	h := logictest.New(t, logic.Config{})
	api, err := admin.New(admin.Config{Token: tok, Sender: h.Runtime.Sender(), Presence: h.Presence})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &env{h: h, srv: srv}
}

// do calls the API with the token and decodes a JSON answer into out (when not nil).
func (e *env) do(t *testing.T, tok, method, path, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func TestAuth(t *testing.T) {
	e := setup(t, token)
	calls := []struct{ method, path, body string }{
		{"GET", "/admin/online", ""},
		{"GET", "/admin/edges", ""},
		{"GET", "/admin/users/alice", ""},
		{"POST", "/admin/kick", `{"user":"alice"}`},
		{"POST", "/admin/broadcast", `{"type":"sys.notice"}`},
	}
	for _, c := range calls {
		for _, tok := range []string{"", "wrong", token + "x"} {
			if got := e.do(t, tok, c.method, c.path, c.body, nil); got != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: status %d, want 401", c.method, c.path, tok, got)
			}
		}
	}
	// Nothing reached the bus.
	if n := len(e.h.Broadcasts()); n != 0 {
		t.Fatalf("unauthenticated broadcast went out: %d", n)
	}
	// The page needs no token and holds none.
	resp, err := e.srv.Client().Get(e.srv.URL + "/admin/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("Switchboard admin")) || bytes.Contains(b, []byte(token)) {
		t.Fatalf("page: %d %q", resp.StatusCode, b)
	}
}

func TestNoTokenIsOpen(t *testing.T) {
	e := setup(t, "")
	var o admin.Online
	if got := e.do(t, "", "GET", "/admin/online", "", &o); got != 200 {
		t.Fatalf("status %d", got)
	}
}

func TestCheckBind(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:9102": true, "[::1]:9102": true, "localhost:1": true,
		":9102": false, "0.0.0.0:9102": false, "10.0.0.5:9102": false, "example.com:80": false,
	} {
		err := admin.CheckBind(addr, "")
		if (err == nil) != ok {
			t.Errorf("CheckBind(%q, \"\") = %v", addr, err)
		}
		if err != nil && !errors.Is(err, admin.ErrExposed) {
			t.Errorf("CheckBind(%q): %v is not ErrExposed", addr, err)
		}
		if err := admin.CheckBind(addr, token); err != nil {
			t.Errorf("CheckBind(%q, token) = %v", addr, err)
		}
	}
	if admin.CheckBind("nonsense", "") == nil {
		t.Error("bad address accepted")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := admin.New(admin.Config{}); !errors.Is(err, admin.ErrConfig) {
		t.Fatalf("New(zero) = %v", err)
	}
}

func TestOnlineAndUser(t *testing.T) {
	e := setup(t, token)
	e1, e2 := e.h.Edge("e1"), e.h.Edge("e2")
	a1 := e1.Connect("alice", map[string]string{"device": "web"})
	a2 := e2.Connect("alice", nil)
	e2.Connect("bob", nil)
	e1.JoinDirect(a1, "lobby")
	e2.JoinDirect(a2, "lobby")

	var o admin.Online
	if got := e.do(t, token, "GET", "/admin/online?room=lobby&room=empty", "", &o); got != 200 {
		t.Fatalf("online: %d", got)
	}
	if o.Connections != 3 || o.Users != 2 || o.Edges["e1"] != 1 || o.Edges["e2"] != 2 {
		t.Fatalf("online = %+v", o)
	}
	if o.Rooms["lobby"] != 2 || o.Rooms["empty"] != 0 || len(o.Rooms) != 2 {
		t.Fatalf("rooms = %+v", o.Rooms)
	}
	var o2 admin.Online
	e.do(t, token, "GET", "/admin/online?room=lobby,empty", "", &o2)
	if o2.Rooms["lobby"] != 2 || len(o2.Rooms) != 2 {
		t.Fatalf("comma-separated rooms = %+v", o2.Rooms)
	}

	var edges struct{ Edges map[string]uint64 }
	if got := e.do(t, token, "GET", "/admin/edges", "", &edges); got != 200 || edges.Edges["e1"] != e1.Epoch || edges.Edges["e2"] != e2.Epoch {
		t.Fatalf("edges: %d %+v", got, edges)
	}

	var u admin.User
	if got := e.do(t, token, "GET", "/admin/users/alice", "", &u); got != 200 {
		t.Fatalf("user: %d", got)
	}
	if !u.Online || len(u.Connections) != 2 {
		t.Fatalf("user = %+v", u)
	}
	c := u.Connections[0]
	if c.Edge != "e1" || c.Conn != a1.ID || c.Epoch != e1.Epoch || c.Meta["device"] != "web" || c.ConnectedAt.IsZero() {
		t.Fatalf("conn = %+v", c)
	}
	if u.Connections[1].Edge != "e2" || u.Connections[1].Conn != a2.ID {
		t.Fatalf("conn = %+v", u.Connections[1])
	}
	var nobody admin.User
	if got := e.do(t, token, "GET", "/admin/users/nobody", "", &nobody); got != 200 || nobody.Online || len(nobody.Connections) != 0 {
		t.Fatalf("nobody: %d %+v", got, nobody)
	}
}

func TestKickUser(t *testing.T) {
	e := setup(t, token)
	e1, e2 := e.h.Edge("e1"), e.h.Edge("e2")
	e1.Connect("alice", nil)
	e2.Connect("alice", nil)
	var res admin.KickResult
	if got := e.do(t, token, "POST", "/admin/kick", `{"user":"alice","reason":"spam"}`, &res); got != 200 {
		t.Fatalf("kick: %d", got)
	}
	if res.Kicked != 2 || res.Code != 4003 {
		t.Fatalf("kick = %+v", res)
	}
	for _, edge := range []*logictest.Edge{e1, e2} {
		d := edge.Expect(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownClose }, "close")
		if d.Code != uint32(protocol.CloseKicked) || d.Reason != "spam" || len(d.Users) != 1 || d.Users[0] != "alice" {
			t.Fatalf("edge %s close = %s", edge.ID, logictest.Describe([]protocol.Downstream{d}))
		}
	}
	if got := e.do(t, token, "POST", "/admin/kick", `{"user":"ghost"}`, nil); got != http.StatusNotFound {
		t.Fatalf("kick offline user: %d", got)
	}
}

func TestKickConn(t *testing.T) {
	e := setup(t, token)
	e1 := e.h.Edge("e1")
	e1.Connect("alice", nil)
	c2 := e1.Connect("alice", nil)
	var res admin.KickResult
	body := `{"user":"alice","edge":"e1","conn":` + jsonNum(c2.ID) + `,"code":4006}`
	if got := e.do(t, token, "POST", "/admin/kick", body, &res); got != 200 || res.Kicked != 1 || res.Code != 4006 {
		t.Fatalf("kick conn: %d %+v", got, res)
	}
	d := e1.Expect(func(d *protocol.Downstream) bool { return d.Kind == protocol.DownClose }, "close")
	if d.Target != protocol.TargetConns || len(d.Conns) != 1 || d.Conns[0] != c2.ID || d.Code != 4006 || d.Epoch != e1.Epoch {
		t.Fatalf("close = %s", logictest.Describe([]protocol.Downstream{d}))
	}
	if got := e.do(t, token, "POST", "/admin/kick", `{"user":"alice","edge":"e1","conn":999}`, nil); got != http.StatusNotFound {
		t.Fatalf("kick unknown conn: %d", got)
	}
}

func TestKickBadRequests(t *testing.T) {
	e := setup(t, token)
	for _, body := range []string{
		``, `{`, `{}`, `{"user":""}`, `{"user":"a","code":3000}`, `{"user":"a","code":1001}`,
		`{"user":"a","edge":"e1"}`, `{"user":"a","conn":3}`, `{"user":"a","extra":1}`,
		`{"user":"a","reason":"` + strings.Repeat("x", 121) + `"}`,
	} {
		if got := e.do(t, token, "POST", "/admin/kick", body, nil); got != http.StatusBadRequest {
			t.Errorf("kick %q: status %d, want 400", body, got)
		}
	}
}

func TestBroadcast(t *testing.T) {
	e := setup(t, token)
	if got := e.do(t, token, "POST", "/admin/broadcast", `{"type":"sys.notice","data":{"text":"maintenance at 14:00"}}`, nil); got != 200 {
		t.Fatalf("broadcast: %d", got)
	}
	logictest.Eventually(t, "broadcast envelope", func() bool { return len(e.h.Broadcasts()) == 1 })
	d := e.h.Broadcasts()[0]
	if d.Kind != protocol.DownDeliver || d.Frame.Type != "sys.notice" || string(d.Frame.Data) != `{"text":"maintenance at 14:00"}` ||
		d.Priority != protocol.PrioritySystem {
		t.Fatalf("broadcast = %s", logictest.Describe([]protocol.Downstream{d}))
	}

	e1 := e.h.Edge("e1")
	c := e1.Connect("alice", nil)
	e1.JoinDirect(c, "lobby")
	if got := e.do(t, token, "POST", "/admin/broadcast", `{"type":"sys.notice","room":"lobby"}`, nil); got != 200 {
		t.Fatalf("room broadcast: %d", got)
	}
	r := e1.ExpectFrame("sys.notice")
	if r.Target != protocol.TargetRoom || r.Room != "lobby" || r.Priority != protocol.PrioritySystem || r.Frame.Data != nil {
		t.Fatalf("room broadcast = %s", logictest.Describe([]protocol.Downstream{r}))
	}

	for _, body := range []string{``, `{}`, `{"type":""}`, `{"type":"x","data":nope}`, `{"type":"` + strings.Repeat("t", 65) + `"}`} {
		if got := e.do(t, token, "POST", "/admin/broadcast", body, nil); got != http.StatusBadRequest {
			t.Errorf("broadcast %q: status %d, want 400", body, got)
		}
	}
}

func TestMethods(t *testing.T) {
	e := setup(t, token)
	if got := e.do(t, token, "GET", "/admin/kick", "", nil); got != http.StatusMethodNotAllowed {
		t.Fatalf("GET kick: %d", got)
	}
	if got := e.do(t, token, "POST", "/admin/online", "{}", nil); got != http.StatusMethodNotAllowed {
		t.Fatalf("POST online: %d", got)
	}
}

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }
