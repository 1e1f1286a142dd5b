package edge

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-io/switchboard/protocol"
)

var testSecret = []byte("switchboard-test-secret-0123456789")

func signHS(t testing.TB, key []byte, sub string, exp time.Duration) string {
	t.Helper()
	claims := jwt.RegisteredClaims{Subject: sub, Audience: jwt.ClaimStrings{"sb"}}
	if exp != 0 {
		claims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(exp))
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signWith(t testing.TB, m jwt.SigningMethod, key any, sub string) string {
	t.Helper()
	claims := jwt.RegisteredClaims{Subject: sub, Audience: jwt.ClaimStrings{"sb"}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	tok, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawRequest sends req on a fresh TCP connection and returns the response status (0 when the
// server closed the connection without answering).
func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func upgradeRequest(path string, headers ...string) string {
	h := map[string]string{
		"Host":                  "edge",
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key":     "dGhlIHNhbXBsZSBub25jZQ==",
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			delete(h, headers[i])
		} else {
			h[headers[i]] = headers[i+1]
		}
	}
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\n")
	for k, v := range h {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func TestHandshake(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	cfg := testConfig()
	cfg.InsecureDevAuth = false
	cfg.JWTSecret = testSecret
	cfg.JWTAudience = "sb"
	cfg.AllowedOrigins = []string{"https://app.example"}
	cfg.HandshakeTimeout = 200 * time.Millisecond
	cfg.MaxHeaderBytes = 2048
	sHS := startEdge(t, cfg)
	cfg.JWTSecret = nil
	cfg.JWTPublicKey = &rsaKey.PublicKey
	sRS := startEdge(t, cfg)
	cfg.JWTPublicKey = edPub
	sEd := startEdge(t, cfg)
	cfg.JWTPublicKey = nil
	cfg.InsecureDevAuth = true
	cfg.JWTSecret = testSecret
	sDev := startEdge(t, cfg)

	good := signHS(t, testSecret, "alice", time.Hour)
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice", Audience: jwt.ClaimStrings{"sb"}}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hsAsRS := signHS(t, []byte("whatever"), "alice", time.Hour) // HS256 to an RS256-only edge
	wrongAud, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "a", Audience: jwt.ClaimStrings{"other"}}).SignedString(testSecret)
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Audience: jwt.ClaimStrings{"sb"}}).SignedString(testSecret)

	cases := []struct {
		name   string
		s      *Server
		req    string
		status int
	}{
		{"HS256 header ok", sHS, upgradeRequest("/ws", "Authorization", "Bearer "+good), 101},
		{"HS256 query ok", sHS, upgradeRequest("/ws?token=" + good), 101},
		{"HS256 subprotocol ok", sHS, upgradeRequest("/ws", "Sec-WebSocket-Protocol", "switchboard.v1.json, bearer."+good), 101},
		{"RS256 ok", sRS, upgradeRequest("/ws?token=" + signWith(t, jwt.SigningMethodRS256, rsaKey, "bob")), 101},
		{"EdDSA ok", sEd, upgradeRequest("/ws?token=" + signWith(t, jwt.SigningMethodEdDSA, edPriv, "carol")), 101},
		{"origin allowed", sHS, upgradeRequest("/ws?token="+good, "Origin", "https://app.example"), 101},
		{"dev user ok", sDev, upgradeRequest("/ws?user=dave"), 101},

		{"bad path", sHS, upgradeRequest("/nope?token=" + good), 404},
		{"bad origin", sHS, upgradeRequest("/ws?token="+good, "Origin", "https://evil.example"), 403},
		{"missing token", sHS, upgradeRequest("/ws"), 401},
		{"dev mode without user", sDev, upgradeRequest("/ws"), 401},
		{"dev mode bad token", sDev, upgradeRequest("/ws?user=dave&token=garbage"), 401},
		{"expired token", sHS, upgradeRequest("/ws?token=" + signHS(t, testSecret, "alice", -time.Hour)), 401},
		{"wrong signature", sHS, upgradeRequest("/ws?token=" + signHS(t, []byte("not the secret"), "alice", time.Hour)), 401},
		{"alg none", sHS, upgradeRequest("/ws?token=" + noneTok), 401},
		{"HS256 on RS256 edge", sRS, upgradeRequest("/ws?token=" + hsAsRS), 401},
		{"RS256 wrong key", sRS, upgradeRequest("/ws?token=" + signWith(t, jwt.SigningMethodRS256, otherRSA, "bob")), 401},
		{"wrong audience", sHS, upgradeRequest("/ws?token=" + wrongAud), 401},
		{"no sub", sHS, upgradeRequest("/ws?token=" + noSub), 401},
		{"malformed token", sHS, upgradeRequest("/ws", "Authorization", "Bearer a.b.c"), 401},
		{"bad version", sHS, upgradeRequest("/ws?token="+good, "Sec-WebSocket-Version", "8"), 426},
		{"missing key", sHS, upgradeRequest("/ws?token="+good, "Sec-WebSocket-Key", ""), 400},
		{"missing upgrade", sHS, upgradeRequest("/ws?token="+good, "Upgrade", ""), 400},
		{"not GET", sHS, strings.Replace(upgradeRequest("/ws?token="+good), "GET", "POST", 1), 405},
		{"oversize header", sHS, upgradeRequest("/ws?token="+good, "X-Big", strings.Repeat("x", 3000)), 431},
		{"oversize header unterminated", sHS, "GET /ws HTTP/1.1\r\nX-Big: " + strings.Repeat("x", 3000), 431},
		{"garbage request line", sHS, "HELLO\r\n\r\n", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := rawRequest(t, tc.s.Addr(), tc.req)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, body, tc.status)
			}
		})
	}

	t.Run("handshake timeout", func(t *testing.T) {
		before := sHS.Stats().HSTimeouts
		c, err := net.Dial("tcp", sHS.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err == nil || isTimeout(err) {
			t.Fatalf("read %d, %v: want the server to drop the connection", n, err)
		}
		if el := time.Since(start); el < 100*time.Millisecond {
			t.Fatalf("dropped after %v, before the handshake timeout", el)
		}
		if got := sHS.Stats().HSTimeouts; got != before+1 {
			t.Fatalf("HSTimeouts %d, want %d", got, before+1)
		}
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestHTTPHandler(t *testing.T) {
	cfg := testConfig()
	cfg.HTTPHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<h1>switchboard</h1>")
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		case "/panic":
			panic("boom")
		default:
			http.NotFound(w, r)
		}
	})
	s := startEdge(t, cfg)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != 200 || body != "<h1>switchboard</h1>" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	if code, _ := get("/missing"); code != 404 {
		t.Fatalf("GET /missing = %d", code)
	}
	if code, _ := get("/panic"); code != 500 {
		t.Fatalf("GET /panic = %d", code)
	}
	resp, err := http.Post("http://"+s.Addr()+"/echo", "text/plain", strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ping" {
		t.Fatalf("POST /echo = %d %q", resp.StatusCode, b)
	}
	// The WebSocket path still upgrades on the same address.
	c, w := dialGorilla(t, s, "u")
	if w.Type != protocol.TypeWelcome {
		t.Fatal("no welcome")
	}
	c.Close()
}
func TestLongHeaderLineWithinLimit(t *testing.T) {
	s := startEdge(t, testConfig())
	status, body := rawRequest(t, s.Addr(), upgradeRequest("/ws?user=x", "X-Long", strings.Repeat("y", 6000)))
	if status != 101 {
		t.Fatalf("status %d %s", status, body)
	}
}

// TestHandshakeTrickle feeds the request one byte per read: the scan resumes where it stopped.
func TestHandshakeTrickle(t *testing.T) {
	s, l := newFakeLoop(t, testConfig())
	defer s.cancel()
	fc := &fakeConn{keep: true}
	l.accept(fc)
	wc := fc.ctx.(*wsConn)
	req := upgradeRequest("/ws?user=slow") + string(frame(0x81, []byte(`{"type":"x","id":"1"}`), false))
	for i := 0; i < len(req); i++ {
		fc.in = append(fc.in, req[i])
		l.onTraffic(wc)
	}
	if wc.state != connOpen {
		t.Fatalf("state %d, wrote %q", wc.state, fc.out)
	}
	if !strings.Contains(string(fc.out), `"welcome"`) || !strings.Contains(string(fc.out), `"error","id":"1"`) {
		t.Fatalf("wrote %q", fc.out)
	}
}

// TestAuthQuery: authQuery agrees with url.ParseQuery on the values and on what is malformed.
func TestAuthQuery(t *testing.T) {
	for _, q := range []string{"", "user=alice", "token=a.b.c&user=bob", "user=a%20b&user=c", "x=1&&token=t%2Bu",
		"user=%zz", "x=%zz&user=a", "a;b=1&user=x", "user", "=x&user=y", "user=%E2%9C%93"} {
		tok, user, ok := authQuery(q)
		v, err := url.ParseQuery(q)
		if ok != (err == nil) || ok && (tok != v.Get("token") || user != v.Get("user")) {
			t.Errorf("authQuery(%q) = %q %q %v; ParseQuery: %q %q %v", q, tok, user, ok, v.Get("token"), v.Get("user"), err)
		}
	}
}
