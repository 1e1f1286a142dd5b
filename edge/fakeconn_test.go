package edge

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// fakeConn is a gnet.Conn over byte slices: the loop's parser, state machine and fanout run
// without sockets (fuzzing, benchmarks). Methods the edge does not use panic (nil embed).
type fakeConn struct {
	gnet.Conn
	in      []byte
	out     []byte
	keep    bool // record writes in out (false: count only)
	written int
	writes  atomic.Int64 // Write and Writev calls
	backlog int          // what OutboundBuffered reports
	ctx     any
	closed  bool
	el      *fakeLoop
}

func (f *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		return f.in, nil
	}
	return f.in[:n], nil
}

func (f *fakeConn) Discard(n int) (int, error) {
	if n <= 0 || n >= len(f.in) {
		k := len(f.in)
		f.in = f.in[:0]
		return k, nil
	}
	f.in = f.in[n:]
	return n, nil
}

func (f *fakeConn) InboundBuffered() int  { return len(f.in) }
func (f *fakeConn) OutboundBuffered() int { return f.backlog }

func (f *fakeConn) Write(b []byte) (int, error) {
	f.written += len(b)
	f.writes.Add(1)
	if f.keep {
		f.out = append(f.out, b...)
	}
	return len(b), nil
}

func (f *fakeConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		k, _ := f.Write(b)
		n += k
	}
	f.writes.Add(1 - int64(len(bs)))
	return n, nil
}

func (f *fakeConn) AsyncWrite(b []byte, cb gnet.AsyncCallback) error {
	_, _ = f.Write(b)
	if cb != nil {
		return cb(f, nil)
	}
	return nil
}

func (f *fakeConn) Close() error {
	if !f.closed {
		f.closed = true
		if wc, ok := f.ctx.(*wsConn); ok {
			wc.l.onClose(wc)
		}
	}
	return nil
}

func (f *fakeConn) Context() any         { return f.ctx }
func (f *fakeConn) SetContext(ctx any)   { f.ctx = ctx }
func (f *fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (f *fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }

// fakeLoop is a gnet.EventLoop that runs tasks at once.
type fakeLoop struct{ gnet.EventLoop }

func (fakeLoop) Execute(ctx context.Context, r gnet.Runnable) error { return r.Run(ctx) }
func (fakeLoop) Close(c gnet.Conn) error                            { return c.Close() }

// newFakeLoop returns a server (marked running, never started) and one loop of it.
func newFakeLoop(t testing.TB, cfg Config) (*Server, *loop) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.state.Store(stateRunning)
	l := s.loopFor(fakeLoop{})
	return s, l
}

// fakeOpen returns an upgraded connection on l, with its handshake already done.
func fakeOpen(l *loop, user string, keep bool) (*wsConn, *fakeConn) {
	fc := &fakeConn{keep: keep}
	l.accept(fc)
	wc := fc.ctx.(*wsConn)
	l.open(wc, user, false, false, nil, zeroTime, nil)
	return wc, fc
}
