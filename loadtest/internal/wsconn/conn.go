// Package wsconn is a small, cheap WebSocket client for the load generator, on gobwas/ws.
//
// A Conn costs one reader goroutine, a 512-byte read buffer and a payload buffer that grows
// to the largest message seen; writes go straight to the socket under a mutex (no write
// buffer, no writer goroutine). It answers pings and handles close frames itself.
package wsconn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// ErrTooBig is returned by the reader for a message over MaxMessage.
var ErrTooBig = errors.New("wsconn: message too big")

// MaxMessage bounds a reassembled message.
const MaxMessage = 4 << 20

// DialConfig configures Dial. The zero value dials with a 10s timeout from any local address.
type DialConfig struct {
	// LocalIP is the source address to bind (e.g. 127.0.0.2). Empty means the kernel picks.
	LocalIP string
	// Timeout bounds the TCP connect and the HTTP upgrade. Zero means 10s.
	Timeout time.Duration
	// Protocols are offered as Sec-WebSocket-Protocol. Nil offers none.
	Protocols []string
}

// Conn is a client WebSocket connection.
type Conn struct {
	nc  net.Conn
	src io.Reader
	wmu sync.Mutex
	wb  []byte // write scratch, guarded by wmu
}

// Dial opens a WebSocket connection to url.
func Dial(ctx context.Context, url string, cfg DialConfig) (*Conn, error) {
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	nd := &net.Dialer{Timeout: timeout}
	if cfg.LocalIP != "" {
		ip := net.ParseIP(cfg.LocalIP)
		if ip == nil {
			return nil, fmt.Errorf("wsconn: bad local ip %q", cfg.LocalIP)
		}
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	d := ws.Dialer{
		Timeout:        timeout,
		ReadBufferSize: 1024,
		Protocols:      cfg.Protocols,
		NetDial:        nd.DialContext,
	}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("wsconn: dial: %w", err)
	}
	c := &Conn{nc: nc, src: nc}
	if br != nil {
		// The server wrote frames right behind its handshake response (a welcome frame).
		buffered, _ := br.Peek(br.Buffered())
		c.src = io.MultiReader(bytes.NewReader(append([]byte(nil), buffered...)), nc)
		ws.PutReader(br)
	}
	return c, nil
}

// LocalAddr is the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Close closes the socket without a close handshake (cheap; the server sees EOF).
func (c *Conn) Close() error { return c.nc.Close() }

// CloseGracefully sends a close frame with code 1000 then closes the socket.
func (c *Conn) CloseGracefully() error {
	_ = c.write(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	return c.nc.Close()
}

// WriteText sends one text message. Safe for concurrent use.
func (c *Conn) WriteText(p []byte) error { return c.write(ws.OpText, p) }

// Ping sends a ping control frame. Safe for concurrent use.
func (c *Conn) Ping() error { return c.write(ws.OpPing, nil) }

func (c *Conn) write(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Length: int64(len(p)), Mask: ws.NewMask()}
	buf := bytes.NewBuffer(c.wb[:0])
	if err := ws.WriteHeader(buf, h); err != nil {
		return fmt.Errorf("wsconn: header: %w", err)
	}
	off := buf.Len()
	buf.Write(p)
	b := buf.Bytes()
	ws.Cipher(b[off:], h.Mask, 0)
	if cap(b) <= 4096 {
		c.wb = b[:0] // keep small scratch buffers only
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("wsconn: write: %w", err)
	}
	return nil
}

// ReadLoop reads messages until the connection fails or closes, calling fn with each text or
// binary message. msg is valid only during the call. It answers pings. It returns nil on a
// close frame with a normal code, else the error; the socket is closed on return.
func (c *Conn) ReadLoop(fn func(msg []byte)) error {
	defer c.nc.Close()
	r := bufio.NewReaderSize(c.src, 512)
	var payload, msg []byte
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return fmt.Errorf("wsconn: read: %w", err)
		}
		if h.Length > MaxMessage {
			return ErrTooBig
		}
		n := int(h.Length)
		if cap(payload) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			return fmt.Errorf("wsconn: read: %w", err)
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			if err := c.write(ws.OpPong, payload); err != nil {
				return err
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			_ = c.write(ws.OpClose, ws.NewCloseFrameBody(code, ""))
			if code == ws.StatusNormalClosure || code == ws.StatusNoStatusRcvd {
				return nil
			}
			return &CloseError{Code: int(code), Reason: reason}
		}
		if !h.Fin || len(msg) > 0 {
			if len(msg)+n > MaxMessage {
				return ErrTooBig
			}
			msg = append(msg, payload...)
			if !h.Fin {
				continue
			}
			fn(msg)
			msg = msg[:0]
			continue
		}
		fn(payload)
		if cap(payload) > 64<<10 {
			payload = nil // do not pin large buffers on idle connections
		}
	}
}

// CloseError is a close frame received from the server.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("wsconn: closed by server: %d %s", e.Code, e.Reason)
}
