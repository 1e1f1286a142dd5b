package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

type okPub struct{}

// frameJSON is a server frame in its JSON form.
type frameJSON struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func (okPub) Publish(_ context.Context, _ string, _ []byte, _ map[string]string, done func(error)) {
	go done(nil)
}

// startEdge runs an edge with the metrics handler mounted on its HTTP address.
func startEdge(t *testing.T) *edge.Server {
	t.Helper()
	mux := http.NewServeMux()
	s, err := edge.New(edge.Config{Addr: "127.0.0.1:0", ID: "edge-metrics", Loops: 2, InsecureDevAuth: true,
		Publisher: okPub{}, HTTPHandler: mux, CloseTimeout: 500 * time.Millisecond, Tick: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/metrics", MetricsHandler(s))
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

func scrape(t *testing.T, s *edge.Server) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// value returns the value of the series name whose labels contain every one of labels
// (`k="v"`), or -1 when there is none.
func value(body, name string, labels ...string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			return v
		}
	}
	return -1
}

func dial(t *testing.T, s *edge.Server, user string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+s.Addr()+"/ws?user="+url.QueryEscape(user), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	var f frameJSON
	if err := c.ReadJSON(&f); err != nil || f.Type != protocol.TypeWelcome {
		t.Fatalf("welcome: %+v %v", f, err)
	}
	return c
}

// poll scrapes until cond holds for the body, or fails after a deadline.
func poll(t *testing.T, s *edge.Server, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := scrape(t, s)
		if cond(body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached; last scrape:\n%s", what, body)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func TestMetricsScrapeSeriesExistAndMove(t *testing.T) {
	s := startEdge(t)
	edgeL := `edge="edge-metrics"`
	before := scrape(t, s)
	for _, name := range []string{"sb_edge_connections", "sb_edge_frames_in_total", "sb_edge_frames_out_total",
		"sb_edge_bytes_in_bytes_total", "sb_edge_bytes_out_bytes_total", "sb_edge_downstream_total",
		"sb_edge_acks_total", "sb_edge_publish_errors_total", "sb_edge_shed_total", "sb_edge_frames_published_total",
		"sb_edge_handshake_timeouts_total", "sb_edge_handshakes_total", "sb_edge_publish_latency_seconds_count",
		"sb_edge_delivery_latency_seconds_count", "go_goroutines"} {
		if value(before, name) < 0 {
			t.Errorf("series %s missing from:\n%s", name, before)
		}
	}
	if t.Failed() {
		return
	}
	if v := value(before, "sb_edge_connections", edgeL, `state="open"`); v != 0 {
		t.Fatalf("open connections %v before any client", v)
	}

	const n = 3
	var cs []*websocket.Conn
	for i := 0; i < n; i++ {
		cs = append(cs, dial(t, s, fmt.Sprintf("user%d", i)))
	}
	poll(t, s, "3 open connections", func(b string) bool {
		return value(b, "sb_edge_connections", edgeL, `state="open"`) == n
	})

	// Client frames in, acks out.
	for i, c := range cs {
		if err := c.WriteJSON(map[string]any{"type": "chat.send", "id": strconv.Itoa(i), "data": map[string]string{"t": "hello"}}); err != nil {
			t.Fatal(err)
		}
		var ack frameJSON
		if err := c.ReadJSON(&ack); err != nil || ack.Type != protocol.TypeAck {
			t.Fatalf("ack: %+v %v", ack, err)
		}
	}
	// A delivery to every user.
	d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"user0", "user1", "user2"},
		TimeUnixNano: time.Now().Add(-3 * time.Millisecond).UnixNano(), Frame: protocol.ServerFrame{Type: "chat", Data: []byte(`{"t":"hi"}`)}}
	if err := s.HandleDownstream(protocol.AppendDownstream(nil, d)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		var f frameJSON
		if err := c.ReadJSON(&f); err != nil || f.Type != "chat" {
			t.Fatalf("delivery: %+v %v", f, err)
		}
	}
	// A rejected handshake: an upgrade without any identity.
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+s.Addr()+"/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous dial: %v, want 401", err)
	}
	// A kick: close code 4003 sent.
	kick := &protocol.Downstream{Kind: protocol.DownClose, Target: protocol.TargetUsers, Users: []string{"user0"}, Code: uint32(protocol.CloseKicked)}
	if err := s.HandleDownstream(protocol.AppendDownstream(nil, kick)); err != nil {
		t.Fatal(err)
	}

	code := strconv.Itoa(int(protocol.CloseKicked))
	after := poll(t, s, "counters moved", func(b string) bool {
		return value(b, "sb_edge_frames_in_total", edgeL) >= n &&
			value(b, "sb_edge_acks_total", edgeL) >= n &&
			value(b, "sb_edge_downstream_total", edgeL) >= 2 &&
			value(b, "sb_edge_frames_out_total", edgeL) >= n &&
			value(b, "sb_edge_handshake_rejections_total", edgeL, `status="401"`) == 1 &&
			value(b, "sb_edge_closes_total", edgeL, `code="`+code+`"`) == 1 &&
			value(b, "sb_edge_connections", edgeL, `state="open"`) == n-1
	})
	if v := value(after, "sb_edge_handshakes_total", edgeL); v != n {
		t.Errorf("sb_edge_handshakes_total %v, want %d", v, n)
	}
	if v := value(after, "sb_edge_publish_latency_seconds_count", edgeL); v != n {
		t.Errorf("publish latency count %v, want %d (one per client frame)", v, n)
	}
	if v := value(after, "sb_edge_delivery_latency_seconds_count", edgeL); v != 1 {
		t.Errorf("delivery latency count %v, want 1 (one delivery with a timestamp)", v)
	}
	// The delivery was stamped 3ms ago: it is above the 2ms bucket, within the 1s one.
	if v := value(after, "sb_edge_delivery_latency_seconds_bucket", edgeL, `le="0.002"`); v != 0 {
		t.Errorf("delivery latency le=0.002: %v, want 0", v)
	}
	if v := value(after, "sb_edge_delivery_latency_seconds_bucket", edgeL, `le="1"`); v != 1 {
		t.Errorf("delivery latency le=1: %v, want 1", v)
	}
	for _, name := range []string{"sb_edge_bytes_in_bytes_total", "sb_edge_bytes_out_bytes_total", "sb_edge_frames_published_total"} {
		if a, b := value(after, name, edgeL), value(before, name, edgeL); a <= b {
			t.Errorf("%s did not move: %v → %v", name, b, a)
		}
	}
}
