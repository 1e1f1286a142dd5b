package edge

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet's default goroutine pool (ants) is process-wide and lives forever.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// fakePub is a Publisher that records decoded upstream envelopes and completes each publish
// from another goroutine with err (nil = accepted).
type fakePub struct {
	mu   sync.Mutex
	ups  []protocol.Upstream
	keys []string
	err  error
	wg   sync.WaitGroup
}

func (p *fakePub) Publish(_ context.Context, key string, payload []byte, _ map[string]string, done func(error)) {
	var u protocol.Upstream
	if err := protocol.DecodeUpstream(payload, &u); err != nil {
		panic(err)
	}
	p.mu.Lock()
	p.ups = append(p.ups, u)
	p.keys = append(p.keys, key)
	err := p.err
	p.mu.Unlock()
	p.wg.Add(1)
	go func() { defer p.wg.Done(); done(err) }()
}

func (p *fakePub) setErr(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

// messages returns the UpMessage envelopes so far.
func (p *fakePub) find(kind protocol.UpKind) []protocol.Upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []protocol.Upstream
	for _, u := range p.ups {
		if u.Kind == kind {
			out = append(out, u)
		}
	}
	return out
}

// checkFor polls fn until it returns nil or the deadline passes (nats-server's checkFor).
func checkFor(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", d, err)
}

func testConfig() Config {
	return Config{
		Addr:            "127.0.0.1:0",
		ID:              "edge-test",
		Loops:           2,
		InsecureDevAuth: true,
		CloseTimeout:    500 * time.Millisecond,
		DrainWindow:     50 * time.Millisecond,
		DrainGrace:      50 * time.Millisecond,
		MoveJitter:      100 * time.Millisecond,
		Tick:            10 * time.Millisecond,
	}
}

// startEdge runs an edge for the test; it is stopped (Run's ctx cancelled) at cleanup.
func startEdge(t testing.TB, cfg Config) *Server {
	t.Helper()
	if os.Getenv("EDGE_TEST_LOG") != "" {
		cfg.Logger = nil
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("edge did not start")
	}
	if s.Addr() == "" {
		cancel()
		t.Fatalf("run: %v", <-errc)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("edge did not stop")
		}
	})
	return s
}

func wsURL(s *Server, user string) string {
	u := url.URL{Scheme: "ws", Host: s.Addr(), Path: "/ws"}
	if user != "" {
		u.RawQuery = "user=" + url.QueryEscape(user)
	}
	return u.String()
}

// dialGorilla connects a gorilla client as user and reads the welcome frame.
func dialGorilla(t testing.TB, s *Server, user string) (*websocket.Conn, protocol.ServerFrame) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(wsURL(s, user), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", user, err, status)
	}
	t.Cleanup(func() { c.Close() })
	w := readFrame(t, c)
	if w.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v, want welcome", w)
	}
	return c, w
}

// readFrame reads one JSON server frame.
func readFrame(t testing.TB, c *websocket.Conn) protocol.ServerFrame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("message type %d, want text", typ)
	}
	var f protocol.ServerFrame
	if err := protocol.JSON.DecodeServerFrame(b, &f); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return f
}

// readClose reads until the connection fails and returns the close code the server sent.
func readClose(t testing.TB, c *websocket.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		t.Fatalf("read: %v (want a close frame)", err)
	}
}

func connID(t testing.TB, welcome protocol.ServerFrame) uint64 {
	t.Helper()
	var id uint64
	var user, edge string
	if _, err := fmt.Sscanf(string(welcome.Data), `{"conn":"%d","user":%q,"edge":%q}`, &id, &user, &edge); err != nil {
		t.Fatalf("welcome data %s: %v", welcome.Data, err)
	}
	return id
}
