package edge

import (
	"context"
	"encoding/binary"
	"errors"
	"go.opentelemetry.io/otel/trace"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Connection states.
const (
	connHandshake uint8 = iota // waiting for a complete HTTP request
	connHTTP                   // a plain HTTP request is being served off the loop
	connOpen                   // upgraded; frames flow
	connClosing                // close frame sent; waiting for the peer's close or CloseTimeout
	connClosed                 // the TCP connection is gone
)

// Connection flags.
const (
	flagProto     uint16 = 1 << iota // the protobuf form was negotiated
	flagWheel                        // linked into the timing wheel
	flagPinged                       // a ping is outstanding
	flagFailed                       // protocol failure: input is discarded until the TCP close
	flagFrag                         // a fragmented message is being assembled
	flagFragText                     // ... and it is a text message
	flagDeflate                      // permessage-deflate was negotiated
	flagFragZ                        // the fragmented message is compressed
	flagConnRetry                    // the upstream connect is being retried (events.go)
	flagHello                        // upgrade response and welcome held until presence has it (hello.go)
)

// wsConn is one client connection. It is owned by its loop's goroutine: no field may be
// touched from another goroutine. Kept small: an idle connection costs this struct plus what
// gnet holds for the socket.
type wsConn struct {
	c     gnet.Conn
	l     *loop
	id    uint64 // seq<<loopBits | loop index; 0 until upgraded
	user  string
	state uint8
	flags uint16
	bad   uint8 // malformed application frames so far
	// strikes counts consecutive frames over the rate limit.
	strikes uint16

	pend     int32  // 1+index in the loop's pending-write arrays this turn; 0 = none
	need     int32  // parser: bytes that must be buffered before parsing can progress
	lastSeen uint32 // wheel tick of the last frame received
	due      uint32 // wheel tick the connection is scheduled for
	expTick  uint32 // wheel tick the auth token expires at; 0 = never
	openedS  uint32 // seconds since server start when upgraded

	tokens float32 // rate limiter bucket
	rateMs uint32  // rate limiter: last refill, ms since server start

	wnext, wprev *wsConn // timing wheel slot list
	nextUser     *wsConn // chain of the user's connections on this loop
	rooms        []roomRef
	msg          []byte // fragmented message being assembled
}

func (wc *wsConn) codec() protocol.Codec {
	if wc.flags&flagProto != 0 {
		return protocol.Protobuf
	}
	return protocol.JSON
}

// accept sets up the state of a new TCP connection.
func (l *loop) accept(c gnet.Conn) {
	wc := &wsConn{c: c, l: l, state: connHandshake}
	c.SetContext(wc)
	l.s.conns.Add(1)
	wc.lastSeen = l.now
	l.schedule(wc, l.now+l.ticks.hs)
}

// onClose releases the connection's state. Called by gnet once, on the loop.
func (l *loop) onClose(wc *wsConn) {
	if wc.state == connOpen {
		l.terminate(wc, 1006)
	}
	wc.state = connClosed
	l.unschedule(wc)
	wc.msg = nil
	l.s.conns.Add(-1)
}

// onTraffic handles the bytes the connection sent: the HTTP request, then frames.
func (l *loop) onTraffic(wc *wsConn) gnet.Action {
	l.nowMs = l.s.sinceStartMs()
	if wc.state == connHandshake {
		l.handshake(wc)
	}
	if wc.state == connOpen || wc.state == connClosing {
		l.readFrames(wc)
	}
	if wc.state == connHTTP || wc.state == connClosed {
		// Bytes after the request (or after the close) are not ours to read.
		_, _ = wc.c.Discard(-1)
	}
	l.flush()
	return gnet.None
}

// readFrames parses and handles every complete frame buffered for wc. The parser is
// resumable: an incomplete frame stays in gnet's inbound buffer, and wc.need remembers how many
// bytes it takes, so a frame trickling in is not re-parsed on every chunk. Payloads are
// unmasked in place and handled without a copy (fragments are the exception: they are
// assembled in wc.msg).
func (l *loop) readFrames(wc *wsConn) {
	c := wc.c
	maxFrame := int64(l.s.cfg.MaxFrameSize)
	for wc.state == connOpen || wc.state == connClosing {
		if wc.flags&flagFailed != 0 {
			_, _ = c.Discard(-1)
			return
		}
		buffered := c.InboundBuffered()
		if buffered == 0 || buffered < int(wc.need) {
			return
		}
		buf, err := c.Peek(-1)
		if err != nil {
			return
		}
		h, hn, err := parseHeader(buf)
		if err != nil {
			l.fail(wc, protocol.CloseProtocolError, "bad frame length")
			continue
		}
		if hn == 0 {
			wc.need = int32(len(buf) + 1)
			return
		}
		if code, reason := l.checkHeader(wc, &h); code != 0 {
			l.fail(wc, code, reason)
			continue
		}
		if h.Length > maxFrame && h.OpCode.IsData() || h.Length > maxFrame+125 {
			l.fail(wc, protocol.CloseTooBig, "frame too big")
			continue
		}
		total := hn + int(h.Length)
		if len(buf) < total {
			wc.need = int32(total)
			return
		}
		wc.need = 0
		payload := buf[hn:total]
		ws.Cipher(payload, h.Mask, 0)
		wc.lastSeen = l.now
		wc.flags &^= flagPinged
		l.handleFrame(wc, &h, payload)
		if wc.state == connClosed {
			return
		}
		_, _ = c.Discard(total)
	}
}

// checkHeader validates a client frame header against RFC 6455 and the connection's state.
func (l *loop) checkHeader(wc *wsConn, h *ws.Header) (protocol.CloseCode, string) {
	switch {
	case !h.Masked:
		return protocol.CloseProtocolError, "unmasked frame"
	case h.Rsv == rsv1 && wc.flags&flagDeflate != 0 && (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary):
		// RFC 7692: RSV1 on the first frame of a data message marks it compressed.
	case h.Rsv != 0:
		return protocol.CloseProtocolError, "reserved bits set"
	}
	switch h.OpCode {
	case ws.OpClose, ws.OpPing, ws.OpPong:
		if !h.Fin {
			return protocol.CloseProtocolError, "fragmented control frame"
		}
		if h.Length > 125 {
			return protocol.CloseProtocolError, "control frame too long"
		}
	case ws.OpText, ws.OpBinary:
		if wc.flags&flagFrag != 0 {
			return protocol.CloseProtocolError, "new message inside a fragmented one"
		}
	case ws.OpContinuation:
		if wc.flags&flagFrag == 0 {
			return protocol.CloseProtocolError, "continuation without a message"
		}
		if len(wc.msg)+int(h.Length) > l.s.cfg.MaxMessageSize {
			return protocol.CloseTooBig, "message too big"
		}
	default:
		return protocol.CloseProtocolError, "reserved opcode"
	}
	return 0, ""
}

func (l *loop) handleFrame(wc *wsConn, h *ws.Header, p []byte) {
	switch h.OpCode {
	case ws.OpPing:
		if wc.state == connOpen {
			l.writeControl(wc, ws.OpPong, p)
		}
	case ws.OpPong:
	case ws.OpClose:
		l.onCloseFrame(wc, p)
	case ws.OpText, ws.OpBinary:
		if wc.state != connOpen {
			return
		}
		text := h.OpCode == ws.OpText
		z := h.Rsv == rsv1
		if h.Fin {
			if z {
				var ok bool
				if p, ok = l.inflate(wc, p); !ok {
					return
				}
			}
			l.onMessage(wc, text, p)
			return
		}
		wc.flags |= flagFrag
		if text {
			wc.flags |= flagFragText
		}
		if z {
			wc.flags |= flagFragZ
		}
		wc.msg = append(wc.msg[:0], p...)
	case ws.OpContinuation:
		if wc.state != connOpen {
			return
		}
		wc.msg = append(wc.msg, p...)
		if !h.Fin {
			return
		}
		text := wc.flags&flagFragText != 0
		z := wc.flags&flagFragZ != 0
		wc.flags &^= flagFrag | flagFragText | flagFragZ
		msg := wc.msg
		wc.msg = nil
		if z {
			var ok bool
			if msg, ok = l.inflate(wc, msg); !ok {
				return
			}
		}
		l.onMessage(wc, text, msg)
	}
}

// onCloseFrame answers the peer's close: echo its code and drop the TCP connection (the
// server closes TCP first, RFC 6455 7.1.1). In state closing it completes our own close.
func (l *loop) onCloseFrame(wc *wsConn, p []byte) {
	if wc.state == connClosing {
		_ = l.el.Close(wc.c)
		return
	}
	code := uint16(protocol.CloseNormal)
	switch {
	case len(p) == 1:
		l.fail(wc, protocol.CloseProtocolError, "bad close payload")
		return
	case len(p) >= 2:
		code = binary.BigEndian.Uint16(p)
		if !validCloseCode(code) {
			l.fail(wc, protocol.CloseProtocolError, "bad close code")
			return
		}
		if !utf8.Valid(p[2:]) {
			l.fail(wc, protocol.CloseInvalidPayload, "invalid close reason")
			return
		}
	}
	l.terminate(wc, code)
	wc.state = connClosing
	l.flushConn(wc)
	l.wbuf = appendClose(l.wbuf[:0], code, "")
	_, _ = wc.c.Write(l.wbuf)
	if wc.state != connClosed {
		_ = l.el.Close(wc.c)
	}
}

// onMessage handles a complete client message: decode, rate-limit, publish.
func (l *loop) onMessage(wc *wsConn, text bool, p []byte) {
	s := l.s
	if len(p) > s.cfg.MaxMessageSize {
		l.fail(wc, protocol.CloseTooBig, "message too big")
		return
	}
	if text && !utf8.Valid(p) {
		l.fail(wc, protocol.CloseInvalidPayload, "invalid UTF-8")
		return
	}
	codec := wc.codec()
	if text == codec.Binary() {
		l.closeWith(wc, uint16(protocol.CloseUnsupported), "wrong message type for the subprotocol")
		return
	}
	f := &l.frame
	if err := codec.DecodeFrame(p, f); err != nil {
		f.Reset()
		wc.bad++
		if int(wc.bad) > s.cfg.MaxBadFrames {
			l.closeWith(wc, uint16(protocol.CloseBadFrame), protocol.CloseBadFrame.String())
			return
		}
		l.writeError(wc, "", protocol.ErrBadFrame, err.Error())
		return
	}
	defer f.Reset()
	if !l.allow(wc) {
		wc.strikes++
		if int(wc.strikes) > s.cfg.RateStrikes {
			l.closeWith(wc, uint16(protocol.CloseRateLimited), protocol.CloseRateLimited.String())
			return
		}
		l.writeErrorBytes(wc, f.ID, protocol.ErrRateLimited, "")
		return
	}
	wc.strikes = 0
	s.frames.Add(1)
	s.bytesIn.Add(uint64(len(p)))
	pub := s.cfg.Publisher
	if pub == nil {
		if len(f.ID) > 0 {
			l.writeErrorBytes(wc, f.ID, protocol.ErrUnavailable, errNoBus.Error())
		}
		return
	}
	req := getReq()
	req.l, req.conn = l, wc.id
	if len(f.ID) > 0 {
		req.id = string(f.ID)
	}
	var tp string
	var props map[string]string
	ctx := s.ctx
	var receive trace.Span
	if tr := s.trace.tracer(); tr != nil {
		ctx, receive, req.span, tp = s.traceUpstream(tr, f, wc.user, wc.id)
		// An unsampled frame's traceparent travels in the envelope only (logic reads it
		// there): the properties map would cost two allocations on 99% of the frames, and
		// the Publisher gets no span in ctx so that it does not add one either.
		if req.span != nil {
			props = map[string]string{protocol.PropTraceparent: tp}
		} else {
			ctx = s.ctx
		}
	} else if len(f.Traceparent) > 0 {
		tp = string(f.Traceparent)
		props = map[string]string{protocol.PropTraceparent: tp}
	}
	req.start = time.Now().UnixNano()
	req.buf = protocol.AppendUpstreamFrame(req.buf[:0], s.cfg.ID, s.epoch.Load(), wc.id, wc.user, f, tp, req.start)
	s.upstream.Add(1)
	pub.Publish(ctx, wc.user, req.buf, props, req.doneFn)
	if receive != nil {
		receive.End()
	}
}

// allow is the per-connection token bucket.
func (l *loop) allow(wc *wsConn) bool {
	cfg := &l.s.cfg
	if el := l.nowMs - wc.rateMs; el > 0 {
		wc.tokens = min(wc.tokens+float32(float64(el)*cfg.RateLimit/1000), float32(cfg.RateBurst))
		wc.rateMs = l.nowMs
	}
	if wc.tokens < 1 {
		return false
	}
	wc.tokens--
	return true
}

// pubReq is one upstream frame in flight to the Publisher. Its buffer is the payload handed
// to Publish and stays untouched until done is called.
type pubReq struct {
	l      *loop
	conn   uint64
	id     string
	buf    []byte
	err    error
	span   trace.Span // edge.publish, when traced; ended by done
	start  int64      // when Publish was called (unix ns)
	doneFn func(error)

	// Connect / disconnect events (events.go).
	ev    uint8  // evConnect, evDisconnect; 0 for client frames
	tries uint8  // retries so far
	key   string // the Publish key
	first int64  // first attempt (unix ns)
	due   int64  // next attempt (unix ns), while waiting in the retrier
}

var reqPool sync.Pool

func getReq() *pubReq {
	if r, ok := reqPool.Get().(*pubReq); ok {
		return r
	}
	r := new(pubReq)
	r.doneFn = r.done
	return r
}

func putReq(r *pubReq) {
	r.l, r.conn, r.id, r.err, r.span, r.start = nil, 0, "", nil, nil, 0
	r.ev, r.tries, r.key, r.first, r.due = 0, 0, "", 0, 0
	if cap(r.buf) > 64<<10 {
		r.buf = nil
	}
	reqPool.Put(r)
}

// done is the Publisher's completion callback: the frame's ack or error goes back to the
// connection's loop. Frames without an id that were accepted need no answer.
func (r *pubReq) done(err error) {
	if r.ev != 0 {
		r.l.s.eventDone(r, err)
		return
	}
	if r.start != 0 { // client frames only (not connect / disconnect events)
		r.l.s.pubLat.observe(time.Duration(time.Now().UnixNano() - r.start))
	}
	if r.span != nil {
		endPublish(r.span, err)
		r.span = nil
	}
	if err == nil && r.id == "" {
		putReq(r)
		return
	}
	r.err = err
	if !r.l.enqueue(task{kind: tAck, req: r}) {
		putReq(r)
	}
}

// answer sends the ack or error of a published frame, if its connection is still open.
func (l *loop) answer(r *pubReq) {
	defer putReq(r)
	if r.err != nil {
		l.s.pubErrors.Add(1)
	}
	wc := l.conns[r.conn]
	if wc == nil || wc.state != connOpen || r.id == "" {
		return
	}
	if r.err != nil {
		// A publish that timed out may still have been stored (its outcome is unknown): the
		// client is told "timeout" (resend with the same id is safe), never "not accepted".
		code := protocol.ErrUnavailable
		if t, ok := errors.AsType[interface {
			error
			Timeout() bool
		}](r.err); ok && t.Timeout() {
			code = protocol.ErrTimeout
		}
		l.writeError(wc, r.id, code, "")
		return
	}
	l.s.acks.Add(1)
	f := protocol.ServerFrame{Type: protocol.TypeAck, ID: r.id}
	l.writeServerFrame(wc, &f)
}

func (l *loop) writeError(wc *wsConn, id string, code protocol.ErrorCode, msg string) {
	if msg == "" {
		msg = code.String()
	}
	f := protocol.ServerFrame{Type: protocol.TypeError, ID: id, Code: code, Message: msg}
	l.writeServerFrame(wc, &f)
}

func (l *loop) writeErrorBytes(wc *wsConn, id []byte, code protocol.ErrorCode, msg string) {
	l.writeError(wc, string(id), code, msg)
}

// writeServerFrame encodes f in the connection's form and writes it now (after any frames
// already pending for the connection).
func (l *loop) writeServerFrame(wc *wsConn, f *protocol.ServerFrame) {
	l.wbuf = encodeServerFrame(l.wbuf[:0], wc.codec(), f)
	l.writeNow(wc, l.wbuf)
}

// writeControl writes a control frame now.
func (l *loop) writeControl(wc *wsConn, op ws.OpCode, payload []byte) {
	l.wbuf = appendFrame(l.wbuf[:0], op, payload)
	l.writeNow(wc, l.wbuf)
}

// writeNow writes b (copied by gnet if the socket is not ready) after wc's pending frames.
func (l *loop) writeNow(wc *wsConn, b []byte) {
	if wc.state != connOpen {
		return
	}
	if wc.flags&flagHello != 0 {
		l.sendHello(wc)
	}
	l.flushConn(wc)
	if wc.state != connOpen {
		return
	}
	if wc.c.OutboundBuffered()+len(b) > l.s.cfg.MaxOutboundBytes {
		l.closeWith(wc, uint16(protocol.CloseSlowConsumer), protocol.CloseSlowConsumer.String())
		return
	}
	_, _ = wc.c.Write(b)
}

// flushConn writes wc's pending coalesced frames now (to keep order before a direct write).
func (l *loop) flushConn(wc *wsConn) {
	if wc.pend == 0 {
		return
	}
	if wc.flags&flagHello != 0 {
		l.sendHello(wc)
	}
	i := wc.pend - 1
	vec, n := l.pvecs[i], l.pbytes[i]
	if len(vec) == 0 {
		return
	}
	l.pbytes[i] = 0
	l.writeVec(wc, vec, n)
	clear(vec)
	l.pvecs[i] = vec[:0]
}

func (l *loop) writeVec(wc *wsConn, vec [][]byte, n int) {
	if wc.state != connOpen {
		return
	}
	if wc.flags&flagHello != 0 {
		l.sendHello(wc)
	}
	if wc.c.OutboundBuffered()+n > l.s.cfg.MaxOutboundBytes {
		l.closeWith(wc, uint16(protocol.CloseSlowConsumer), protocol.CloseSlowConsumer.String())
		return
	}
	l.s.written.Add(uint64(len(vec)))
	l.s.writes.Add(1)
	l.s.bytesOut.Add(uint64(n))
	if len(vec) == 1 {
		_, _ = wc.c.Write(vec[0])
	} else {
		_, _ = wc.c.Writev(vec)
	}
}

// fail closes the connection after a protocol violation: the close frame is sent, further
// input is discarded, and the TCP connection is dropped when the peer closes or after
// CloseTimeout.
func (l *loop) fail(wc *wsConn, code protocol.CloseCode, reason string) {
	l.closeWith(wc, uint16(code), reason)
	wc.flags |= flagFailed
}

// closeWith starts the closing handshake: it sends a close frame with code and waits for the
// peer's close (or CloseTimeout). The connection leaves the indexes at once.
func (l *loop) closeWith(wc *wsConn, code uint16, reason string) {
	if wc.state != connOpen {
		return
	}
	l.terminate(wc, code)
	l.s.countClose(code)
	wc.state = connClosing
	wc.msg = nil
	wc.flags &^= flagFrag | flagFragText | flagFragZ
	// Frames already pending go first, unless the connection is closed for being slow.
	if code != uint16(protocol.CloseSlowConsumer) && wc.pend != 0 {
		i := wc.pend - 1
		if vec := l.pvecs[i]; len(vec) > 0 {
			_, _ = wc.c.Writev(vec)
			clear(vec)
			l.pvecs[i] = vec[:0]
			l.pbytes[i] = 0
		}
	} else if wc.pend != 0 {
		i := wc.pend - 1
		clear(l.pvecs[i])
		l.pvecs[i] = l.pvecs[i][:0]
		l.pbytes[i] = 0
	}
	if wc.state == connClosed {
		return
	}
	l.cbuf = appendClose(l.cbuf[:0], code, reason)
	_, _ = wc.c.Write(l.cbuf)
	if wc.state == connClosed {
		return
	}
	l.schedule(wc, l.now+l.ticks.close)
}

// terminate takes an open connection out of service: indexes, presence, upstream disconnect.
func (l *loop) terminate(wc *wsConn, code uint16) {
	if wc.state != connOpen {
		return
	}
	s := l.s
	if wc.flags&flagHello != 0 {
		l.sendHello(wc) // the client sees the upgrade and the welcome before the close
	}
	l.unindex(wc)
	s.open.Add(-1)
	s.presenceOp(presence.Op{Kind: presence.OpDisconnect, ConnID: wc.id, User: wc.user})
	if pub := s.cfg.Publisher; pub != nil {
		u := protocol.Upstream{Kind: protocol.UpDisconnect, Edge: s.cfg.ID, Epoch: s.epoch.Load(), Conn: wc.id,
			User: wc.user, CloseCode: uint32(code), TimeUnixNano: time.Now().UnixNano()}
		req := l.eventReq(evDisconnect, wc.id, wc.user, &u)
		if wc.flags&flagConnRetry != 0 {
			l.deferDisconnect(req) // published once logic has the connect
			return
		}
		pub.Publish(s.ctx, wc.user, req.buf, nil, req.doneFn)
	}
}

// eventReq builds a connect or disconnect publish request.
func (l *loop) eventReq(ev uint8, conn uint64, user string, u *protocol.Upstream) *pubReq {
	req := getReq()
	req.l, req.ev, req.conn, req.key, req.first = l, ev, conn, user, u.TimeUnixNano
	req.buf = protocol.AppendUpstream(req.buf[:0], u)
	return req
}

// open completes an upgrade: the connection gets its id, joins the indexes and is announced;
// resp (the handshake's 101 response) and the welcome frame are written together.
func (l *loop) open(wc *wsConn, user string, proto, deflate bool, meta map[string]string, exp time.Time, resp []byte) {
	s := l.s
	l.seq++
	wc.id = l.seq<<loopBits | uint64(l.idx)
	wc.user = user
	wc.state = connOpen
	wc.need = 0
	if proto {
		wc.flags |= flagProto
	}
	if deflate {
		wc.flags |= flagDeflate
	}
	wc.lastSeen = l.now
	wc.rateMs = l.nowMs
	wc.tokens = float32(s.cfg.RateBurst)
	wc.openedS = l.nowMs / 1000
	if !exp.IsZero() {
		d := time.Until(exp)
		wc.expTick = l.now + uint32(max(1, (d+s.cfg.Tick-1)/s.cfg.Tick))
	}
	l.index(wc)
	s.open.Add(1)
	s.upgrades.Add(1)
	pseq := s.presenceOp(presence.Op{Kind: presence.OpConnect, ConnID: wc.id, User: user, Meta: meta})
	if pub := s.cfg.Publisher; pub != nil {
		u := protocol.Upstream{Kind: protocol.UpConnect, Edge: s.cfg.ID, Epoch: s.epoch.Load(), Conn: wc.id,
			User: user, Meta: meta, TimeUnixNano: time.Now().UnixNano()}
		req := l.eventReq(evConnect, wc.id, user, &u)
		pub.Publish(s.ctx, user, req.buf, nil, req.doneFn)
	}
	data := append(l.cbuf[:0], `{"conn":"`...)
	data = strconv.AppendUint(data, wc.id, 10)
	data = append(data, `","user":`...)
	data = appendJSONString(data, user)
	data = append(data, `,"edge":`...)
	data = appendJSONString(data, s.cfg.ID)
	data = append(data, '}')
	l.cbuf = data
	f := protocol.ServerFrame{Type: protocol.TypeWelcome, Data: data}
	l.wbuf = encodeServerFrame(append(l.wbuf[:0], resp...), wc.codec(), &f)
	if pseq != 0 && s.cfg.WelcomeWait > 0 {
		l.holdHello(wc, pseq, l.wbuf)
	} else {
		l.writeNow(wc, l.wbuf)
	}
	if wc.state == connOpen {
		l.schedule(wc, l.nextDue(wc))
	}
}

// nextDue is the wheel tick at which an open connection must be looked at next.
func (l *loop) nextDue(wc *wsConn) uint32 {
	due := wc.lastSeen + l.ticks.ping
	if wc.flags&flagPinged != 0 {
		due = wc.lastSeen + l.ticks.idle
	}
	if wc.expTick != 0 && int32(wc.expTick-due) < 0 {
		due = wc.expTick
	}
	if int32(due-l.now) <= 0 {
		due = l.now + 1
	}
	return due
}

var bg = context.Background()

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
