package edge

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/protocol"
)

func TestPermessageDeflate(t *testing.T) {
	pub := &fakePub{}
	cfg := testConfig()
	cfg.Publisher = pub
	cfg.Compression = true
	s := startEdge(t, cfg)
	defer pub.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// gorilla negotiates no-context-takeover deflate and compresses what it sends.
	d := websocket.Dialer{EnableCompression: true}
	g, resp, err := d.Dial(wsURL(s, "gz"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("extensions %q", ext)
	}
	readFrame(t, g) // welcome
	text := strings.Repeat("compress me ", 200)
	if err := g.WriteMessage(websocket.TextMessage, []byte(`{"type":"chat.send","id":"z1","data":{"t":"`+text+`"}}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, g); f.Type != protocol.TypeAck || f.ID != "z1" {
		t.Fatalf("got %+v", f)
	}
	if m := pub.find(protocol.UpMessage); len(m) != 1 || string(m[0].Data) != `{"t":"`+text+`"}` {
		t.Fatalf("envelope data not inflated: %d envelopes", len(m))
	}

	// coder too.
	c, _, err := coder.Dial(ctx, wsURL(s, "cz"), &coder.DialOptions{CompressionMode: coder.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}

	// A raw client sees the delivery compressed on the wire (RSV1), and small frames plain.
	raw, br := dialDeflateRaw(t, s.Addr(), "rz")
	big := `{"t":"` + strings.Repeat("danmaku ", 100) + `"}`
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"gz", "cz", "rz"}, Frame: deliver("danmaku", big)})
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"rz"}, Frame: deliver("tiny", `{}`)})
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.Rsv != rsv1 {
		t.Fatalf("delivery not compressed: rsv %d", f.Header.Rsv)
	}
	plain, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(f.Payload), bytes.NewReader(deflateTail))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(plain, []byte(big)) {
		t.Fatalf("inflated %q", plain)
	}
	f, err = ws.ReadFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.Rsv != 0 || !bytes.Contains(f.Payload, []byte(`"tiny"`)) {
		t.Fatalf("small frame: rsv %d %q", f.Header.Rsv, f.Payload)
	}
	if sf := readFrame(t, g); sf.Type != "danmaku" || string(sf.Data) != big {
		t.Fatalf("gorilla got %+v", sf)
	}
	_, b, err := c.Read(ctx)
	if err != nil || !bytes.Contains(b, []byte(big)) {
		t.Fatalf("coder got %q, %v", b, err)
	}

	// Corrupt compressed data: 1007. A compressed continuation frame: 1002.
	r := dialDeflate(t, s, "bad")
	r.write(frame(0xC1, []byte{0xff, 0xff, 0xff, 0xff}, false))
	if code, _ := r.closeCode(); code != uint16(protocol.CloseInvalidPayload) {
		t.Fatalf("corrupt data: close %d", code)
	}
	r = dialDeflate(t, s, "bad2")
	r.write(frame(0x01, []byte("{"), false))
	r.write(frame(0xC0, []byte("}"), false))
	if code, _ := r.closeCode(); code != uint16(protocol.CloseProtocolError) {
		t.Fatalf("RSV1 on continuation: close %d", code)
	}
}

func TestDeflateOffIgnoresOffer(t *testing.T) {
	s := startEdge(t, testConfig())
	d := websocket.Dialer{EnableCompression: true}
	g, resp, err := d.Dial(wsURL(s, "u"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("extensions %q with compression off", ext)
	}
	// RSV1 without negotiation is a protocol error.
	r := dialRaw(t, s, "v")
	r.write(frame(0xC1, []byte{0x01}, false))
	if code, _ := r.closeCode(); code != uint16(protocol.CloseProtocolError) {
		t.Fatalf("close %d", code)
	}
}

// dialDeflateRaw opens a connection offering permessage-deflate and reads the welcome frame.
func dialDeflateRaw(t *testing.T, addr, user string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /ws?user=" + user + " HTTP/1.1\r\nHost: e\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	if _, err := ws.ReadFrame(br); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, br
}

func dialDeflate(t *testing.T, s *Server, user string) *rawConn {
	c, br := dialDeflateRaw(t, s.Addr(), user)
	return &rawConn{t: t, c: c, rd: br}
}
