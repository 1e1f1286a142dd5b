package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet's package-level default worker pool (ants) lives for the process.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// start runs the binary's run() on a free port and returns its page and WebSocket URLs.
func start(t *testing.T) (page, ws string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-addr", "127.0.0.1:0", "-drain", "200ms"}, pw, io.Discard)
		pw.Close()
		errc <- err
	}()
	urls := make(chan [2]string, 1)
	go func() {
		re := regexp.MustCompile(`(https?|wss?)://\S+`)
		var got [2]string
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u := re.FindString(sc.Text()); strings.HasPrefix(u, "http") {
				got[0] = u
			} else if u != "" {
				got[1] = u
				urls <- got
			}
		}
		close(urls)
	}()
	stop = func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("run did not return after cancel")
			return nil
		}
	}
	select {
	case u, ok := <-urls:
		if !ok {
			t.Fatalf("run exited before printing its addresses: %v", <-errc)
		}
		return u[0], u[1], stop
	case <-time.After(20 * time.Second):
		_ = stop()
		t.Fatal("no addresses printed within 20s")
	}
	return "", "", nil
}

func TestEmbeddedServesPageAndWebSocket(t *testing.T) {
	page, wsURL, stop := start(t)
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()

	res, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "Switchboard") {
		t.Fatalf("GET %s: %d %.80q", page, res.StatusCode, body)
	}

	res, err = http.Get(page + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "sb_edge_connections") {
		t.Fatalf("GET %smetrics: %d %.200q", page, res.StatusCode, body)
	}

	d := websocket.Dialer{Subprotocols: []string{"switchboard.v1.json"}, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(wsURL+"?user=gopher", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != "switchboard.v1.json" {
		t.Errorf("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	type frame struct {
		Type string          `json:"type"`
		ID   string          `json:"id"`
		Code int             `json:"code"`
		Data json.RawMessage `json:"data"`
	}
	read := func() frame {
		t.Helper()
		var f frame
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		return f
	}
	if w := read(); w.Type != "welcome" || !strings.Contains(string(w.Data), `"user":"gopher"`) {
		t.Fatalf("first frame %+v", w)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"echo","id":"e1","data":{"hi":"there"}}`)); err != nil {
		t.Fatal(err)
	}
	var ack, reply bool
	for !ack || !reply {
		f := read()
		switch {
		case f.Type == "ack" && f.ID == "e1":
			ack = true
		case f.Type == "echo" && f.ID == "e1" && string(f.Data) == `{"hi":"there"}`:
			reply = true
		case f.Type == "error":
			t.Fatalf("error frame %+v", f)
		}
	}

	// A signal (here: ctx) drains the edge: the client is told to move, then run returns.
	stopped = true
	done := make(chan error, 1)
	go func() { done <- stop() }()
	for {
		f := frame{}
		if err := c.ReadJSON(&f); err != nil {
			break // closed after the move
		}
		if f.Type == "move" {
			_ = c.Close()
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestParseRejectsStrayArguments(t *testing.T) {
	if _, err := parse([]string{"extra"}, io.Discard); err == nil {
		t.Fatal("no error for a stray argument")
	}
	o, err := parse([]string{"-addr", ":0", "-id", "x1"}, io.Discard)
	if err != nil || o.addr != ":0" || o.id != "x1" {
		t.Fatalf("parse: %+v %v", o, err)
	}
}
