package edge

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// dialStatus dials s as user and returns the handshake's HTTP status (101 on success) and the
// connection, if any.
func dialStatus(t *testing.T, s *Server, user string) (int, *websocket.Conn) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"switchboard.v1.json"}, HandshakeTimeout: 5 * time.Second}
	c, res, err := d.Dial(wsURL(s, user), nil)
	if err != nil {
		if res == nil {
			t.Fatalf("dial %s: %v", user, err)
		}
		return res.StatusCode, nil
	}
	return res.StatusCode, c
}

func TestMaxConnsPerSource(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerSource = 2
	s := startEdge(t, cfg)
	var open []*websocket.Conn
	for i := range 2 {
		code, c := dialStatus(t, s, fmt.Sprint("u", i))
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("connection %d: HTTP %d, want 101", i, code)
		}
		open = append(open, c)
	}
	if code, _ := dialStatus(t, s, "u2"); code != http.StatusTooManyRequests {
		t.Fatalf("third connection from one source: HTTP %d, want 429", code)
	}
	if n := s.Stats().Rejects[http.StatusTooManyRequests]; n != 1 {
		t.Fatalf("429 rejections counted: %d, want 1", n)
	}
	// The others are unaffected, and a freed slot is usable again.
	_ = open[0].Close()
	checkFor(t, 5*time.Second, func() error {
		code, c := dialStatus(t, s, "u3")
		if code != http.StatusSwitchingProtocols {
			return fmt.Errorf("HTTP %d after a connection closed", code)
		}
		open = append(open, c)
		return nil
	})
	for _, c := range open[1:] {
		_ = c.Close()
	}
}

func TestSourceHandshakeRate(t *testing.T) {
	cfg := testConfig()
	cfg.SourceHandshakeRate = 0.5 // one new connection per 2 s after the burst
	cfg.SourceHandshakeBurst = 2
	s := startEdge(t, cfg)
	for i := range 2 {
		code, c := dialStatus(t, s, fmt.Sprint("r", i))
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("connection %d within the burst: HTTP %d, want 101", i, code)
		}
		_ = c.Close()
	}
	if code, _ := dialStatus(t, s, "r2"); code != http.StatusTooManyRequests {
		t.Fatalf("connection over the handshake rate: HTTP %d, want 429", code)
	}
}

func TestSourceLimitsConfig(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerSource = -1
	if _, err := New(cfg); err == nil {
		t.Fatal("negative MaxConnsPerSource accepted")
	}
}
