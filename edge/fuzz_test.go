package edge

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

var zeroTime time.Time

// laterPub collects Publish completions; the test completes them between traffic events, as
// a real bus would from its own goroutine.
type laterPub struct{ dones []func(error) }

func (p *laterPub) Publish(_ context.Context, _ string, _ []byte, _ map[string]string, done func(error)) {
	p.dones = append(p.dones, done)
}

func (p *laterPub) complete() {
	for i, d := range p.dones {
		var err error
		if i%3 == 2 {
			err = context.DeadlineExceeded
		}
		d(err)
	}
	p.dones = p.dones[:0]
}

func fuzzSeeds() [][]byte {
	return [][]byte{
		frame(0x81, []byte(`{"type":"chat.send","id":"1","data":{"a":1}}`), false),
		append(frame(0x01, []byte(`{"type":`), false), append(frame(0x89, []byte("p"), false), frame(0x80, []byte(`"x"}`), false)...)...),
		frame(0x82, []byte{0x0a, 0x01, 'x'}, false),
		frame(0x88, []byte{0x03, 0xe8}, false),
		frame(0x81, []byte(`{"type":"x"}`), true),
		frame(0xC1, []byte(`{}`), false),
		frame(0x81, []byte{0xff}, false),
		{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0, 1, 2, 3, 4},
		frame(0xC1, []byte{0xaa, 0x56, 0x2a, 0xa9, 0x2c, 0x48, 0x55, 0xb2, 0x52, 0xaa, 0x50, 0xaa, 0x05, 0x00}, false),
		frame(0xC1, []byte{0xff, 0xff}, false),
		frame(0x8A, nil, false),
		bytes.Repeat(frame(0x81, []byte(`{"type":"t","id":"i"}`), false), 30),
	}
}

// checkServerOutput asserts that out (what the edge wrote after the handshake) is a sequence of
// well-formed, unmasked, final server frames, with nothing after a close frame.
func checkServerOutput(t *testing.T, out []byte) {
	t.Helper()
	closed := false
	for len(out) > 0 {
		h, n, err := parseHeader(out)
		if err != nil || n == 0 || int64(len(out)-n) < h.Length {
			t.Fatalf("truncated or bad server frame % x", out[:min(len(out), 16)])
		}
		if closed {
			t.Fatalf("frame %v after close", h.OpCode)
		}
		if !h.Fin || h.Masked || h.Rsv != 0 {
			t.Fatalf("bad server header %+v", h)
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary, ws.OpPing, ws.OpPong:
		case ws.OpClose:
			closed = true
			if h.Length < 2 {
				t.Fatal("close frame without a code")
			}
		default:
			t.Fatalf("server opcode %v", h.OpCode)
		}
		out = out[n+int(h.Length):]
	}
}

// FuzzConn feeds arbitrary bytes, in chunks of arbitrary size, to an upgraded connection:
// nothing panics, buffered input stays bounded, and every byte the edge writes is a
// well-formed server frame.
func FuzzConn(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add(s, uint8(i*7), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, proto bool) {
		pub := &laterPub{}
		cfg := testConfig()
		cfg.MaxFrameSize = 1024
		cfg.MaxMessageSize = 4096
		cfg.MaxBadFrames = 3
		cfg.RateLimit = 5
		cfg.Publisher = pub
		cfg.Compression = true
		s, l := newFakeLoop(t, cfg)
		defer s.cancel()
		fc := &fakeConn{keep: true}
		l.accept(fc)
		wc := fc.ctx.(*wsConn)
		sub := ""
		if proto {
			sub = "Sec-WebSocket-Protocol: switchboard.v1.proto\r\n"
		}
		if chunk&1 == 1 {
			sub += "Sec-WebSocket-Extensions: permessage-deflate\r\n"
		}
		fc.in = append(fc.in, "GET /ws?user=f HTTP/1.1\r\nHost: e\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+sub+"\r\n"...)
		l.onTraffic(wc)
		if wc.state != connOpen {
			t.Fatalf("handshake failed: state %d, wrote %q", wc.state, fc.out)
		}
		end := bytes.Index(fc.out, []byte("\r\n\r\n")) + 4
		step := int(chunk) + 1
		for i := 0; i < len(data) && !fc.closed; i += step {
			fc.in = append(fc.in, data[i:min(i+step, len(data))]...)
			l.onTraffic(wc)
			pub.complete()
			l.tick()
			if len(fc.in) > 14+cfg.MaxFrameSize+125 {
				t.Fatalf("%d bytes buffered", len(fc.in))
			}
		}
		checkServerOutput(t, fc.out[end:])
		if !fc.closed {
			_ = fc.Close()
		}
		if st := s.Stats(); st.Conns != 0 || st.Open != 0 {
			t.Fatalf("stats after close %+v", st)
		}
		if len(l.conns) != 0 || len(l.users) != 0 || len(l.rooms) != 0 {
			t.Fatal("index not empty after close")
		}
	})
}

// FuzzHandshake feeds arbitrary request bytes: nothing panics, and the connection either
// upgrades, answers with an HTTP status, or waits for more.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte("GET /ws?user=a HTTP/1.1\r\nHost: e\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: e\r\n\r\n"))
	f.Add([]byte("GET /ws?token=a.b.c HTTP/1.1\r\nSec-WebSocket-Protocol: bearer.x, switchboard.v1.proto\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, req []byte) {
		cfg := testConfig()
		cfg.MaxHeaderBytes = 1024
		cfg.JWTSecret = testSecret
		s, l := newFakeLoop(t, cfg)
		defer s.cancel()
		fc := &fakeConn{keep: true}
		l.accept(fc)
		wc := fc.ctx.(*wsConn)
		// In two reads: the resumed scan must find what one read would.
		half := len(req) / 2
		fc.in = append(fc.in, req[:half]...)
		l.onTraffic(wc)
		if !fc.closed && wc.state == connHandshake {
			fc.in = append(fc.in, req[half:]...)
			l.onTraffic(wc)
		}
		switch {
		case wc.state == connOpen:
			if !bytes.HasPrefix(fc.out, []byte("HTTP/1.1 101 ")) {
				t.Fatalf("open without 101: %q", fc.out)
			}
		case fc.closed:
			if !bytes.HasPrefix(fc.out, []byte("HTTP/1.1 ")) {
				t.Fatalf("closed without an HTTP answer: %q", fc.out)
			}
		case wc.state == connHandshake:
			if len(fc.out) != 0 || len(fc.in) > cfg.MaxHeaderBytes {
				t.Fatalf("waiting, but wrote %q / buffered %d", fc.out, len(fc.in))
			}
		}
		if !fc.closed {
			_ = fc.Close()
		}
	})
}
