package edge

// A new connection's hello — its upgrade response and welcome frame, written together — is
// held until the presence store has the connection (the reporter's ack of its connect op), so
// that a welcomed client is reachable: a chat message resolved through the router in between
// would otherwise miss the new connection, and nothing would tell anybody (a second device
// that connected a moment before the message never got it). The wait is bounded by
// Config.WelcomeWait (the store may be slow or down: the client is then welcomed anyway,
// reachable once the op lands). Anything written to a held connection first releases its
// hello, so the welcome is always the client's first frame.

// helloWait is a held hello. The queue is in connect-op order, which is also deadline order.
type helloWait struct {
	wc  *wsConn
	id  uint64 // wc.id when held (the struct may serve another connection later)
	seq uint64 // the connect op's presence sequence number
	by  int64  // deadline, Server.sinceStartNs
	b   []byte // upgrade response + welcome frame
}

type helloQueue struct {
	q []helloWait
	i int // q[:i] are done
}

// holdHello keeps wc's hello (b, copied) until presence acknowledges op seq or WelcomeWait
// passes.
func (l *loop) holdHello(wc *wsConn, seq uint64, b []byte) {
	wc.flags |= flagHello
	l.hellos.q = append(l.hellos.q, helloWait{wc: wc, id: wc.id, seq: seq,
		by: l.s.sinceStartNs() + int64(l.s.cfg.WelcomeWait), b: append([]byte(nil), b...)})
	l.s.hellosWaiting.Add(1)
	l.helloN.Store(int32(len(l.hellos.q) - l.hellos.i))
	if seq <= l.s.pres.acked.Load() { // acknowledged already
		l.helloDue()
	}
}

// helloDue sends the held hellos whose connect op is acknowledged or whose wait is over.
func (l *loop) helloDue() {
	h := &l.hellos
	if h.i == len(h.q) {
		return
	}
	acked := l.s.pres.acked.Load()
	now := l.s.sinceStartNs()
	for h.i < len(h.q) {
		e := &h.q[h.i]
		if e.seq > acked && now < e.by {
			break
		}
		h.i++
		if e.wc.id == e.id && e.wc.flags&flagHello != 0 {
			l.writeHello(e)
		}
	}
	if h.i == len(h.q) {
		clear(h.q)
		h.q, h.i = h.q[:0], 0
	} else if h.i > len(h.q)/2 {
		n := copy(h.q, h.q[h.i:])
		clear(h.q[n:])
		h.q, h.i = h.q[:n], 0
	}
	l.helloN.Store(int32(len(h.q) - h.i))
}

// sendHello writes wc's held hello now (something else is about to be written to wc, or it
// closes). Rare: a held connection cannot have sent a frame yet.
func (l *loop) sendHello(wc *wsConn) {
	h := &l.hellos
	for k := h.i; k < len(h.q); k++ {
		if e := &h.q[k]; e.wc == wc && e.id == wc.id {
			l.writeHello(e)
			return
		}
	}
	wc.flags &^= flagHello // not found: cannot happen; never write it later
}

func (l *loop) writeHello(e *helloWait) {
	e.wc.flags &^= flagHello
	l.s.hellosWaiting.Add(-1)
	b := e.b
	e.b = nil
	if e.wc.state == connOpen {
		_, _ = e.wc.c.Write(b)
	}
}

// hellosAcked wakes the loops holding hellos after the reporter's ack moved.
func (s *Server) hellosAcked() {
	if s.hellosWaiting.Load() == 0 {
		return
	}
	for _, l := range *s.loops.Load() {
		if l.helloN.Load() > 0 {
			l.enqueue(task{kind: tHello})
		}
	}
}
