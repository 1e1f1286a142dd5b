package edge

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboard-io/switchboard/protocol"
)

// rawConn is a WebSocket client that writes arbitrary bytes: the edge's conformance tests need
// to send what no library would.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	rd io.Reader
}

func dialRaw(t testing.TB, s *Server, user string) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, wsURL(s, user))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, rd: c}
	if br != nil {
		rc.rd = io.MultiReader(br, c)
	}
	if f := rc.next(); f.Header.OpCode != ws.OpText || !strings.Contains(string(f.Payload), `"welcome"`) {
		t.Fatalf("first frame %v %q", f.Header.OpCode, f.Payload)
	}
	return rc
}

func (r *rawConn) next() ws.Frame {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(r.rd)
	if err != nil {
		r.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// closeCode reads frames (answering pings when pong is set) until a close frame.
func (r *rawConn) closeCode() (uint16, []ws.Frame) {
	r.t.Helper()
	var seen []ws.Frame
	for {
		f := r.next()
		if f.Header.OpCode == ws.OpClose {
			if len(f.Payload) < 2 {
				return 1005, seen
			}
			return binary.BigEndian.Uint16(f.Payload), seen
		}
		seen = append(seen, f)
	}
}

// frame builds a client frame: b0 is the first byte (FIN, RSV, opcode); masked with a fixed
// key unless unmasked.
func frame(b0 byte, payload []byte, unmasked bool) []byte {
	out := []byte{b0}
	mbit := byte(0x80)
	if unmasked {
		mbit = 0
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if !unmasked {
		key := [4]byte{1, 2, 3, 4}
		out = append(out, key[:]...)
		ws.Cipher(p, key, 0)
	}
	return append(out, p...)
}

func TestCloseCodes(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFrameSize = 1024
	cfg.MaxMessageSize = 2048
	cfg.MaxBadFrames = 1
	s := startEdge(t, cfg)

	big := make([]byte, 1500)
	for i := range big {
		big[i] = 'a'
	}
	cases := []struct {
		name string
		send [][]byte
		code protocol.CloseCode
	}{
		{"unmasked", [][]byte{frame(0x81, []byte(`{"type":"x"}`), true)}, protocol.CloseProtocolError},
		{"reserved bits", [][]byte{frame(0xC1, []byte(`{"type":"x"}`), false)}, protocol.CloseProtocolError},
		{"reserved opcode 3", [][]byte{frame(0x83, []byte("x"), false)}, protocol.CloseProtocolError},
		{"reserved opcode 11", [][]byte{frame(0x8B, nil, false)}, protocol.CloseProtocolError},
		{"fragmented ping", [][]byte{frame(0x09, []byte("p"), false)}, protocol.CloseProtocolError},
		{"control too long", [][]byte{frame(0x89, big[:126], false)}, protocol.CloseProtocolError},
		{"continuation first", [][]byte{frame(0x80, []byte("x"), false)}, protocol.CloseProtocolError},
		{"text inside fragmented", [][]byte{frame(0x01, []byte("{"), false), frame(0x81, []byte("{}"), false)}, protocol.CloseProtocolError},
		{"close payload of 1 byte", [][]byte{frame(0x88, []byte{3}, false)}, protocol.CloseProtocolError},
		{"close with invalid code", [][]byte{frame(0x88, []byte{0x03, 0xEC}, false)}, protocol.CloseProtocolError}, // 1004
		{"invalid UTF-8", [][]byte{frame(0x81, []byte{'"', 0xff, 0xfe, '"'}, false)}, protocol.CloseInvalidPayload},
		{"invalid UTF-8 fragmented", [][]byte{frame(0x01, []byte{'"', 0xe2}, false), frame(0x80, []byte{0x28, 0xa1, '"'}, false)}, protocol.CloseInvalidPayload},
		{"invalid UTF-8 close reason", [][]byte{frame(0x88, []byte{0x03, 0xE8, 0xff}, false)}, protocol.CloseInvalidPayload},
		{"frame too big", [][]byte{frame(0x81, big, false)}, protocol.CloseTooBig},
		{"frame too big (header only)", [][]byte{{0x81, 0x80 | 127, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4}}, protocol.CloseTooBig},
		{"message too big", [][]byte{frame(0x01, big[:1000], false), frame(0x00, big[:1000], false), frame(0x80, big[:1000], false)}, protocol.CloseTooBig},
		{"binary on JSON", [][]byte{frame(0x82, []byte{1, 2}, false)}, protocol.CloseUnsupported},
		{"bad frames", [][]byte{frame(0x81, []byte(`{}`), false), frame(0x81, []byte(`[`), false)}, protocol.CloseBadFrame},
		{"client close echoed", [][]byte{frame(0x88, []byte{0x0F, 0xA0, 'b', 'y', 'e'}, false)}, 4000},
		{"empty client close", [][]byte{frame(0x88, nil, false)}, protocol.CloseNormal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, s, "u")
			for _, b := range tc.send {
				r.write(b)
			}
			code, _ := r.closeCode()
			if code != uint16(tc.code) {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
			// The edge drops the TCP connection after its close (at once, or when we close).
			r.c.Close()
		})
	}
	checkFor(t, 5*time.Second, func() error {
		if st := s.Stats(); st.Conns != 0 {
			return fmt.Errorf("%d connections left", st.Conns)
		}
		return nil
	})
}

func TestFragmentedWithInterleavedPing(t *testing.T) {
	pub := &fakePub{}
	cfg := testConfig()
	cfg.Publisher = pub
	s := startEdge(t, cfg)
	defer pub.wg.Wait()
	r := dialRaw(t, s, "u")
	r.write(frame(0x01, []byte(`{"type":"chat.send",`), false))
	r.write(frame(0x89, []byte("hb"), false)) // ping between fragments
	r.write(frame(0x00, []byte(`"id":"f1",`), false))
	r.write(frame(0x8A, nil, false)) // unsolicited pong: ignored
	r.write(frame(0x80, []byte(`"data":{"t":"日本"}}`), false))
	if f := r.next(); f.Header.OpCode != ws.OpPong || string(f.Payload) != "hb" {
		t.Fatalf("got %v %q, want pong hb", f.Header.OpCode, f.Payload)
	}
	if f := r.next(); !strings.Contains(string(f.Payload), `"ack"`) || !strings.Contains(string(f.Payload), `"f1"`) {
		t.Fatalf("got %q, want ack f1", f.Payload)
	}
	m := pub.find(protocol.UpMessage)
	if len(m) != 1 || string(m[0].Data) != `{"t":"日本"}` {
		t.Fatalf("envelopes %+v", m)
	}
	// A frame split into single bytes is reassembled by the resumable parser.
	b := frame(0x81, []byte(`{"type":"x","id":"f2"}`), false)
	for i := range b {
		r.write(b[i : i+1])
	}
	if f := r.next(); !strings.Contains(string(f.Payload), `"f2"`) {
		t.Fatalf("got %q, want ack f2", f.Payload)
	}
}

func TestSlowConsumer4002(t *testing.T) {
	cfg := testConfig()
	cfg.MaxOutboundBytes = 256 << 10
	cfg.CloseTimeout = 10 * time.Second
	s := startEdge(t, cfg)
	r := dialRaw(t, s, "slow")
	if tc, ok := r.c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(16 << 10)
	}
	payload := `{"p":"` + strings.Repeat("x", 32<<10) + `"}`
	// Never read until the edge gave up on us.
	checkFor(t, 20*time.Second, func() error {
		down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: []string{"slow"}, Priority: protocol.PriorityPaid, Frame: deliver("d", payload)})
		if s.Stats().Closes[uint16(protocol.CloseSlowConsumer)] == 0 {
			return fmt.Errorf("not closed yet")
		}
		return nil
	})
	code, frames := r.closeCode()
	if code != uint16(protocol.CloseSlowConsumer) || len(frames) == 0 {
		t.Fatalf("close code %d after %d frames, want 4002", code, len(frames))
	}
}

func TestIdleTimeout4005AndHeartbeat(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 60 * time.Millisecond
	cfg.IdleTimeout = 200 * time.Millisecond
	s := startEdge(t, cfg)

	// A client that never answers pings is closed with 4005 after a ping.
	silent := dialRaw(t, s, "silent")
	code, seen := silent.closeCode()
	if code != uint16(protocol.CloseIdleTimeout) {
		t.Fatalf("close code %d, want 4005", code)
	}
	if len(seen) == 0 || seen[0].Header.OpCode != ws.OpPing {
		t.Fatalf("no ping before the idle close: %d frames", len(seen))
	}

	// A client that answers pings stays: after several idle timeouts it is still served.
	live := dialRaw(t, s, "live")
	pings := 0
	end := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(end) {
		f := live.next()
		if f.Header.OpCode != ws.OpPing {
			t.Fatalf("got %v, want ping", f.Header.OpCode)
		}
		pings++
		live.write(frame(0x8A, f.Payload, false))
	}
	live.write(frame(0x81, []byte(`{"type":"x","id":"alive"}`), false))
	for {
		f := live.next()
		if f.Header.OpCode == ws.OpPing {
			live.write(frame(0x8A, f.Payload, false))
			continue
		}
		if f.Header.OpCode != ws.OpText || !strings.Contains(string(f.Payload), `"alive"`) {
			t.Fatalf("got %v %q", f.Header.OpCode, f.Payload)
		}
		break
	}
	if pings < 2 {
		t.Fatalf("%d pings in 700ms", pings)
	}
}

func TestRateLimit4004(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit = 1
	cfg.RateBurst = 2
	cfg.RateStrikes = 3
	s := startEdge(t, cfg)
	r := dialRaw(t, s, "flood")
	for i := 0; i < 10; i++ {
		r.write(frame(0x81, []byte(`{"type":"x","id":"r"}`), false))
	}
	code, frames := r.closeCode()
	if code != uint16(protocol.CloseRateLimited) {
		t.Fatalf("close code %d, want 4004", code)
	}
	limited := 0
	for _, f := range frames {
		var sf protocol.ServerFrame
		if protocol.JSON.DecodeServerFrame(f.Payload, &sf) == nil && sf.Code == protocol.ErrRateLimited {
			limited++
		}
	}
	if limited != 3 {
		t.Fatalf("%d rate-limited error frames, want 3", limited)
	}
}

func TestTokenExpiry4001(t *testing.T) {
	cfg := testConfig()
	cfg.InsecureDevAuth = false
	cfg.JWTSecret = testSecret
	s := startEdge(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, "ws://"+s.Addr()+"/ws?token="+signHS(t, testSecret, "exp", 1500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &rawConn{t: t, c: c, rd: c}
	if br != nil {
		r.rd = io.MultiReader(br, c)
	}
	start := time.Now()
	code, _ := r.closeCode()
	if code != uint16(protocol.CloseTokenExpired) {
		t.Fatalf("close code %d, want 4001", code)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("closed after %v, before the token expired", el)
	}
}

func TestShutdownGoingAway1001(t *testing.T) {
	s, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	<-s.Ready()
	r := dialRaw(t, s, "u")
	cancel()
	if code, _ := r.closeCode(); code != uint16(protocol.CloseGoingAway) {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestDrainMoveThen1012(t *testing.T) {
	cfg := testConfig()
	cfg.DrainWindow = 100 * time.Millisecond
	cfg.DrainGrace = 300 * time.Millisecond
	cfg.MoveJitter = time.Second
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	<-s.Ready()
	var rs []*rawConn
	for i := 0; i < 4; i++ {
		rs = append(rs, dialRaw(t, s, "u"))
	}
	// One client moves on its own when told; the others stay until the edge closes them.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	for i, r := range rs {
		f := r.next()
		var sf protocol.ServerFrame
		if err := protocol.JSON.DecodeServerFrame(f.Payload, &sf); err != nil || sf.Type != protocol.TypeMove {
			t.Fatalf("conn %d: got %q, want move", i, f.Payload)
		}
		if !strings.Contains(string(sf.Data), `"delay_ms":`) {
			t.Fatalf("move data %s", sf.Data)
		}
		if i == 0 {
			r.write(frame(0x88, []byte{0x03, 0xE9}, false)) // 1001 going away
			if code, _ := r.closeCode(); code != 1001 {
				t.Fatalf("echoed close %d", code)
			}
			continue
		}
		if code, _ := r.closeCode(); code != uint16(protocol.CloseRestart) {
			t.Fatalf("conn %d: close code %d, want 1012", i, code)
		}
		r.write(frame(0x88, []byte{0x03, 0xF4}, false))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A new connection is refused once the edge drains.
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c, _ := net.Dial("tcp", s.Addr())
		if c != nil {
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := bufio.NewReader(c).ReadByte(); err == nil {
				t.Fatal("stopped edge answered")
			}
			c.Close()
		}
	}
}
