package edge

import (
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/panjf2000/gnet/v2"

	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

const (
	opText   = ws.OpText
	opBinary = ws.OpBinary

	loopBits = 8
	loopMask = 1<<loopBits - 1
)

// Task kinds run on a loop.
const (
	tDeliver = iota + 1
	tJoin
	tLeave
	tKick
	tAck
	tTick
	tDrain
	tCloseAll
	tSnapshot
	tEvent
	tHello // presence acknowledged more connections: send their held hellos (hello.go)
)

// task is a unit of work handed to a loop by another goroutine.
type task struct {
	kind   uint8
	code   uint16
	d      *protocol.Downstream
	frames *encoded
	req    *pubReq
	ft     *fanoutTrace // the delivery's span, when traced
	at     int64        // tDeliver: when Dispatch handed it over (Server.sinceStartNs)
	wg     *sync.WaitGroup
	snap   chan<- snapshot
}

// room is one loop's members of a room.
type room struct {
	name    string
	members []*wsConn
}

type roomRef struct {
	r *room
	i int32 // index in r.members
}

// loop is the edge's state for one gnet event loop. Every field below mu is owned by the
// loop's goroutine; mu guards only the task queue.
type loop struct {
	s   *Server
	el  gnet.EventLoop
	idx int

	mu        sync.Mutex
	queue     []task
	scheduled bool
	timer     *time.Timer // WriteCoalesce > 0: runs runHeld when held chatter is due
	held      []task      // room chatter waiting for WriteCoalesce
	heldSpare []task
	armed     bool  // runHeld is scheduled (timer or Execute)
	lastFlush int64 // when held room chatter was last flushed (Server.sinceStartNs)

	// Owned by the loop goroutine.
	traced   []*fanoutTrace // fanout spans delivered this turn, ended after flush
	tracedN  []int32        // their recipients on this loop
	spare    []task
	conns    map[uint64]*wsConn
	users    map[string]*wsConn // head of a chain through wsConn.nextUser
	rooms    map[string]*room
	seq      uint64
	wheel    []*wsConn
	now      uint32 // wheel time in ticks
	nowMs    uint32 // milliseconds since server start, refreshed per OnTraffic and tick
	ticks    struct{ ping, idle, hs, close uint32 }
	pconns   []*wsConn  // connections with pending (coalesced) writes this turn
	pvecs    [][][]byte // their pending frames
	pbytes   []int
	wbuf     []byte // scratch for control and reply frames
	cbuf     []byte // scratch for close frames
	frame    protocol.Frame
	flateExt *wsflate.Extension // Compression: negotiation state of the current handshake
	zr       io.ReadCloser      // Compression: inflater, reset per message
	zin      []byte
	zout     []byte
	hs       hsState
	upg      ws.Upgrader
	hsio     hsConn
	drainOn  bool
	drain    drainState
	rng      *rand.Rand
	fanAt    []int64            // dispatch times of the deliveries run this turn
	deferred map[uint64]*pubReq // disconnects held while their connect is retried (events.go)
	hellos   helloQueue         // connections whose upgrade and welcome wait for presence (hello.go)
	helloN   atomic.Int32       // len of hellos still waiting, for other goroutines
}

type drainState struct {
	list  []*wsConn
	sent  int
	start uint32
}

func newLoop(s *Server, el gnet.EventLoop, idx int) *loop {
	l := &loop{
		s:     s,
		el:    el,
		idx:   idx,
		conns: make(map[uint64]*wsConn),
		users: make(map[string]*wsConn),
		rooms: make(map[string]*room),
		rng:   rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(idx))),
	}
	tk := s.cfg.Tick
	ticks := func(d time.Duration) uint32 { return uint32(max(1, (d+tk-1)/tk)) }
	l.ticks.ping = ticks(s.cfg.PingInterval)
	l.ticks.idle = ticks(s.cfg.IdleTimeout)
	l.ticks.hs = ticks(s.cfg.HandshakeTimeout)
	l.ticks.close = ticks(s.cfg.CloseTimeout)
	l.wheel = make([]*wsConn, max(l.ticks.idle, l.ticks.hs, l.ticks.close, l.ticks.ping)+2)
	l.initUpgrader()
	if s.cfg.WriteCoalesce > 0 {
		l.lastFlush = -int64(s.cfg.WriteCoalesce) // nothing flushed yet: the first goes at once
		l.timer = time.AfterFunc(time.Hour, func() { l.fire() })
		l.timer.Stop()
	}
	return l
}

// enqueue hands t to the loop. Safe from any goroutine. It reports false when the engine no
// longer runs tasks.
//
// With WriteCoalesce, room chatter (see holdable) is paced like Nagle's algorithm in time: the
// first after a quiet WriteCoalesce goes at once; those that follow within WriteCoalesce of
// the loop's last flush of chatter are held (in their own queue, in order) until then, so
// that a connection gets one writev of several frames instead of one write per frame. Other
// tasks (acks, chat, echoes, joins) run at once and never wait for held chatter.
func (l *loop) enqueue(t task) bool {
	if l.timer != nil && t.kind == tDeliver && holdable(t.d) {
		return l.hold(t)
	}
	l.mu.Lock()
	l.queue = append(l.queue, t)
	if l.scheduled {
		l.mu.Unlock()
		return true
	}
	l.scheduled = true
	l.mu.Unlock()
	return l.execute0()
}

// holdable reports whether a delivery may wait for WriteCoalesce: ordinary chatter
// (protocol.PriorityNormal) to a room or to everyone. Chat to users or connections, echoes,
// paid, moderator and system deliveries never wait.
func holdable(d *protocol.Downstream) bool {
	return d.Priority.Sheddable() && (d.Target == protocol.TargetRoom || d.Target == protocol.TargetAll)
}

// hold queues room chatter and makes sure runHeld runs when it is due.
func (l *loop) hold(t task) bool {
	l.mu.Lock()
	l.held = append(l.held, t)
	if l.armed {
		l.mu.Unlock()
		return true
	}
	l.armed = true
	if wait := l.lastFlush + int64(l.s.cfg.WriteCoalesce) - l.s.sinceStartNs(); wait > 0 {
		l.timer.Reset(time.Duration(wait))
		l.mu.Unlock()
		return true
	}
	l.mu.Unlock()
	return l.fire()
}

// fire schedules runHeld on the loop (the timer's function).
func (l *loop) fire() bool {
	if err := l.el.Execute(context.Background(), gnet.RunnableFunc(l.runHeld)); err != nil {
		l.mu.Lock()
		clear(l.held)
		l.held = l.held[:0]
		l.armed = false
		l.mu.Unlock()
		return false
	}
	return true
}

// runHeld delivers the held room chatter and flushes: one write per connection.
func (l *loop) runHeld(context.Context) error {
	l.mu.Lock()
	q := l.held
	l.held = l.heldSpare[:0]
	l.armed = false
	l.lastFlush = l.s.sinceStartNs()
	l.mu.Unlock()
	for i := range q {
		l.run(&q[i])
		q[i] = task{}
	}
	l.heldSpare = q[:0]
	l.afterRun()
	return nil
}

func (l *loop) execute0() bool {
	if err := l.el.Execute(context.Background(), gnet.RunnableFunc(l.runTasks)); err != nil {
		l.mu.Lock()
		l.queue = l.queue[:0]
		l.scheduled = false
		l.mu.Unlock()
		return false
	}
	return true
}

// runTasks drains the task queue on the loop goroutine and flushes coalesced writes.
func (l *loop) runTasks(context.Context) error {
	l.mu.Lock()
	q := l.queue
	l.queue = l.spare[:0]
	l.scheduled = false
	l.mu.Unlock()
	for i := range q {
		l.run(&q[i])
		q[i] = task{}
	}
	l.spare = q[:0]
	l.afterRun()
	return nil
}

// afterRun flushes the turn's writes, then records the fanout latencies and ends the spans
// they cover.
func (l *loop) afterRun() {
	l.flush()
	if len(l.fanAt) > 0 {
		now := l.s.sinceStartNs()
		for _, at := range l.fanAt {
			l.s.fanLat.observe(time.Duration(now - at))
		}
		l.fanAt = l.fanAt[:0]
	}
	if len(l.traced) > 0 {
		// The fanout spans end after the socket writes they cover.
		for i, ft := range l.traced {
			ft.done(int(l.tracedN[i]), true)
			l.traced[i] = nil
		}
		l.traced, l.tracedN = l.traced[:0], l.tracedN[:0]
	}
}

func (l *loop) run(t *task) {
	switch t.kind {
	case tDeliver:
		n := l.deliver(t)
		if t.d.Target == protocol.TargetRoom || t.d.Target == protocol.TargetAll {
			l.fanAt = append(l.fanAt, t.at)
		}
		if t.ft != nil {
			l.traced = append(l.traced, t.ft)
			l.tracedN = append(l.tracedN, int32(n))
		}
	case tJoin, tLeave, tKick:
		l.forTargets(t.d, func(wc *wsConn) {
			switch t.kind {
			case tJoin:
				for _, r := range t.d.Rooms {
					l.join(wc, r)
				}
			case tLeave:
				for _, r := range t.d.Rooms {
					l.leave(wc, r, true)
				}
			case tKick:
				code := uint16(t.d.Code)
				if t.d.Code > 0xffff || !validCloseCode(code) {
					code = uint16(protocol.CloseKicked)
				}
				reason := t.d.Reason
				if reason == "" {
					reason = protocol.CloseCode(code).String()
				}
				l.closeWith(wc, code, reason)
			}
		})
	case tAck:
		l.answer(t.req)
	case tTick:
		l.tick()
		l.helloDue()
	case tHello:
		l.helloDue()
	case tDrain:
		l.startDrain()
	case tCloseAll:
		for _, wc := range l.conns {
			if wc.state == connOpen {
				l.closeWith(wc, t.code, protocol.CloseCode(t.code).String())
			}
		}
		l.flush()
		t.wg.Done()
	case tSnapshot:
		t.snap <- l.snapshot()
	case tEvent:
		l.connectDone(t.req)
	}
}

// forTargets calls fn for every open local connection addressed by d (minus ExcludeConn).
func (l *loop) forTargets(d *protocol.Downstream, fn func(*wsConn)) {
	ok := func(wc *wsConn) bool { return wc.state == connOpen && wc.id != d.ExcludeConn }
	switch d.Target {
	case protocol.TargetConns:
		for _, id := range d.Conns {
			if wc := l.conns[id]; wc != nil && ok(wc) {
				fn(wc)
			}
		}
	case protocol.TargetUsers:
		for _, u := range d.Users {
			for wc := l.users[u]; wc != nil; wc = wc.nextUser {
				if ok(wc) {
					fn(wc)
				}
			}
		}
	case protocol.TargetRoom:
		if r := l.rooms[d.Room]; r != nil {
			// fn may leave rooms or close connections: iterate over a stable copy.
			for _, wc := range append([]*wsConn(nil), r.members...) {
				if ok(wc) {
					fn(wc)
				}
			}
		}
	case protocol.TargetAll:
		for _, wc := range l.conns {
			if ok(wc) {
				fn(wc)
			}
		}
	}
}

// deliver queues the delivery's bytes for every local target. The hot path: no allocation
// per recipient. A sheddable delivery (protocol.PriorityNormal) is skipped for a connection
// whose backlog is over ShedBytes; other classes always go out (and a connection over
// MaxOutboundBytes is closed with 4002 by flush).
func (l *loop) deliver(t *task) (written int) {
	d := t.d
	shedAt := -1
	if d.Priority.Sheddable() {
		shedAt = l.s.cfg.ShedBytes
	}
	shed := 0
	one := func(wc *wsConn) {
		if wc.state != connOpen || wc.id == d.ExcludeConn {
			return
		}
		if shedAt >= 0 && l.backlog(wc) > shedAt {
			shed++
			return
		}
		l.queueWrite(wc, t.frames.of(wc))
		written++
	}
	switch d.Target {
	case protocol.TargetRoom:
		if r := l.rooms[d.Room]; r != nil {
			for _, wc := range r.members {
				one(wc)
			}
		}
	case protocol.TargetConns:
		for _, id := range d.Conns {
			if wc := l.conns[id]; wc != nil {
				one(wc)
			}
		}
	case protocol.TargetUsers:
		for _, u := range d.Users {
			for wc := l.users[u]; wc != nil; wc = wc.nextUser {
				one(wc)
			}
		}
	case protocol.TargetAll:
		for _, wc := range l.conns {
			one(wc)
		}
	}
	if shed > 0 {
		l.s.shed.Add(uint64(shed))
	}
	return written
}

// backlog is wc's unsent bytes: gnet's outbound buffer plus what is queued this turn.
func (l *loop) backlog(wc *wsConn) int {
	n := wc.c.OutboundBuffered()
	if wc.pend != 0 {
		n += l.pbytes[wc.pend-1]
	}
	return n
}

func (e *encoded) of(wc *wsConn) []byte {
	if wc.flags&flagProto != 0 {
		e.once.Do(func() { e.proto = encodeServerFrame(make([]byte, 0, frameSizeHint(e.f)), protocol.Protobuf, e.f) })
		if wc.flags&flagDeflate != 0 && len(e.proto) >= e.threshold {
			e.zprotoOne.Do(func() { e.zproto = compressFrame(e.proto) })
			if e.zproto != nil {
				return e.zproto
			}
		}
		return e.proto
	}
	if wc.flags&flagDeflate != 0 && len(e.json) >= e.threshold {
		e.zjsonOnce.Do(func() { e.zjson = compressFrame(e.json) })
		if e.zjson != nil {
			return e.zjson
		}
	}
	return e.json
}

// queueWrite adds b to wc's pending writes of this turn; flush sends them in one writev.
// Frames shared by many connections are never copied here.
func (l *loop) queueWrite(wc *wsConn, b []byte) {
	if b == nil {
		return
	}
	if wc.pend == 0 {
		l.pconns = append(l.pconns, wc)
		if len(l.pvecs) < len(l.pconns) {
			l.pvecs = append(l.pvecs, nil)
			l.pbytes = append(l.pbytes, 0)
		}
		wc.pend = int32(len(l.pconns))
	}
	i := wc.pend - 1
	l.pvecs[i] = append(l.pvecs[i], b)
	l.pbytes[i] += len(b)
}

// flush writes every connection's pending frames: one write or writev per connection. A
// connection whose unsent bytes would exceed MaxOutboundBytes is closed with 4002 instead.
func (l *loop) flush() {
	for i, wc := range l.pconns {
		vec := l.pvecs[i]
		n := l.pbytes[i]
		wc.pend = 0
		if len(vec) > 0 {
			l.writeVec(wc, vec, n)
		}
		clear(vec)
		l.pvecs[i] = vec[:0]
		l.pbytes[i] = 0
		l.pconns[i] = nil
	}
	l.pconns = l.pconns[:0]
}

// --- indexes -------------------------------------------------------------------------------

func (l *loop) join(wc *wsConn, name string) {
	for _, ref := range wc.rooms {
		if ref.r.name == name {
			return
		}
	}
	r := l.rooms[name]
	if r == nil {
		r = &room{name: name}
		l.rooms[name] = r
	}
	wc.rooms = append(wc.rooms, roomRef{r: r, i: int32(len(r.members))})
	r.members = append(r.members, wc)
	l.s.presenceOp(presence.Op{Kind: presence.OpJoin, ConnID: wc.id, User: wc.user, Room: name})
}

func (l *loop) leave(wc *wsConn, name string, report bool) {
	for k, ref := range wc.rooms {
		if ref.r.name != name {
			continue
		}
		l.removeMember(wc, ref)
		last := len(wc.rooms) - 1
		wc.rooms[k] = wc.rooms[last]
		wc.rooms[last] = roomRef{}
		wc.rooms = wc.rooms[:last]
		if len(wc.rooms) == 0 {
			wc.rooms = nil
		}
		if report {
			l.s.presenceOp(presence.Op{Kind: presence.OpLeave, ConnID: wc.id, User: wc.user, Room: name})
		}
		return
	}
}

// removeMember swap-removes wc from ref.r and fixes the moved member's index.
func (l *loop) removeMember(wc *wsConn, ref roomRef) {
	r := ref.r
	last := len(r.members) - 1
	moved := r.members[last]
	r.members[ref.i] = moved
	r.members[last] = nil
	r.members = r.members[:last]
	if moved != wc {
		for k := range moved.rooms {
			if moved.rooms[k].r == r {
				moved.rooms[k].i = ref.i
				break
			}
		}
	}
	if len(r.members) == 0 {
		delete(l.rooms, r.name)
	}
}

func (l *loop) index(wc *wsConn) {
	l.conns[wc.id] = wc
	head := l.users[wc.user]
	if head == nil {
		l.s.userLoops.add(wc.user, l.idx) // before the connection can be looked up
	}
	wc.nextUser = head
	l.users[wc.user] = wc
}

func (l *loop) unindex(wc *wsConn) {
	delete(l.conns, wc.id)
	head := l.users[wc.user]
	if head == wc {
		if wc.nextUser == nil {
			delete(l.users, wc.user)
			l.s.userLoops.remove(wc.user, l.idx) // after the last connection left the index
		} else {
			l.users[wc.user] = wc.nextUser
		}
	} else {
		for p := head; p != nil; p = p.nextUser {
			if p.nextUser == wc {
				p.nextUser = wc.nextUser
				break
			}
		}
	}
	wc.nextUser = nil
	for _, ref := range wc.rooms {
		l.removeMember(wc, ref)
	}
	wc.rooms = nil
}

// snapshot is one loop's full local state, for presence Sync.
type snapshot struct {
	conns []presence.Conn
	rooms map[string][]uint64
}

func (l *loop) snapshot() snapshot {
	sn := snapshot{rooms: make(map[string][]uint64, len(l.rooms))}
	for _, wc := range l.conns {
		if wc.state == connOpen {
			sn.conns = append(sn.conns, presence.Conn{ConnID: wc.id, User: wc.user,
				ConnectedAt: l.s.start.Add(time.Duration(wc.openedS) * time.Second)})
		}
	}
	for name, r := range l.rooms {
		ids := make([]uint64, 0, len(r.members))
		for _, wc := range r.members {
			if wc.state == connOpen {
				ids = append(ids, wc.id)
			}
		}
		sn.rooms[name] = ids
	}
	return sn
}

// --- timing wheel --------------------------------------------------------------------------

func (l *loop) schedule(wc *wsConn, due uint32) {
	l.unschedule(wc)
	wc.due = due
	slot := int(due % uint32(len(l.wheel)))
	wc.wnext = l.wheel[slot]
	if wc.wnext != nil {
		wc.wnext.wprev = wc
	}
	wc.wprev = nil
	l.wheel[slot] = wc
	wc.flags |= flagWheel
}

func (l *loop) unschedule(wc *wsConn) {
	if wc.flags&flagWheel == 0 {
		return
	}
	if wc.wprev != nil {
		wc.wprev.wnext = wc.wnext
	} else {
		slot := int(wc.due % uint32(len(l.wheel)))
		if l.wheel[slot] == wc {
			l.wheel[slot] = wc.wnext
		}
	}
	if wc.wnext != nil {
		wc.wnext.wprev = wc.wprev
	}
	wc.wnext, wc.wprev = nil, nil
	wc.flags &^= flagWheel
}

// tick advances the wheel by one slot and handles the connections due in it.
func (l *loop) tick() {
	l.now++
	l.nowMs = l.s.sinceStartMs()
	slot := int(l.now % uint32(len(l.wheel)))
	head := l.wheel[slot]
	l.wheel[slot] = nil
	for wc := head; wc != nil; {
		next := wc.wnext
		wc.wnext, wc.wprev = nil, nil
		wc.flags &^= flagWheel
		if int32(wc.due-l.now) > 0 {
			l.schedule(wc, wc.due)
		} else {
			l.expire(wc)
		}
		wc = next
	}
	if l.drainOn {
		l.drainStep()
	}
	l.flush()
}

func (l *loop) expire(wc *wsConn) {
	switch wc.state {
	case connHandshake:
		l.s.hsTimeouts.Add(1)
		_ = l.el.Close(wc.c)
	case connClosing:
		_ = l.el.Close(wc.c)
	case connOpen:
		if wc.expTick != 0 && int32(l.now-wc.expTick) >= 0 {
			l.closeWith(wc, uint16(protocol.CloseTokenExpired), protocol.CloseTokenExpired.String())
			return
		}
		idle := l.now - wc.lastSeen
		if idle >= l.ticks.idle {
			l.closeWith(wc, uint16(protocol.CloseIdleTimeout), protocol.CloseIdleTimeout.String())
			return
		}
		if idle >= l.ticks.ping && wc.flags&flagPinged == 0 {
			wc.flags |= flagPinged
			l.writeControl(wc, ws.OpPing, nil)
			if wc.state != connOpen {
				return
			}
		}
		l.schedule(wc, l.nextDue(wc))
	}
}

// --- drain ---------------------------------------------------------------------------------

func (l *loop) startDrain() {
	if l.drainOn {
		return
	}
	l.drainOn = true
	l.drain.start = l.now
	for _, wc := range l.conns {
		if wc.state == connOpen {
			l.drain.list = append(l.drain.list, wc)
		}
	}
	l.rng.Shuffle(len(l.drain.list), func(i, j int) {
		l.drain.list[i], l.drain.list[j] = l.drain.list[j], l.drain.list[i]
	})
	l.drainStep()
}

// drainStep sends "move" to the share of connections due by now (paced over DrainWindow),
// and after DrainWindow+DrainGrace closes the rest with 1012.
func (l *loop) drainStep() {
	cfg := &l.s.cfg
	window := uint32(max(1, cfg.DrainWindow/cfg.Tick))
	grace := uint32(cfg.DrainGrace / cfg.Tick)
	elapsed := l.now - l.drain.start + 1
	due := len(l.drain.list)
	if elapsed < window {
		due = int(uint64(len(l.drain.list)) * uint64(elapsed) / uint64(window))
	}
	var data []byte
	for ; l.drain.sent < due; l.drain.sent++ {
		wc := l.drain.list[l.drain.sent]
		if wc.state != connOpen {
			continue
		}
		delay := l.rng.Int64N(max(1, cfg.MoveJitter.Milliseconds()))
		data = protocol.AppendMoveData(data[:0], delay, "drain")
		f := protocol.ServerFrame{Type: protocol.TypeMove, Data: data}
		l.writeServerFrame(wc, &f)
	}
	if elapsed >= window+grace {
		for _, wc := range l.drain.list {
			if wc.state == connOpen {
				l.closeWith(wc, uint16(protocol.CloseRestart), protocol.CloseRestart.String())
			}
		}
		for _, wc := range l.conns { // late handshakes
			if wc.state == connOpen {
				l.closeWith(wc, uint16(protocol.CloseRestart), protocol.CloseRestart.String())
			}
		}
		l.drain.list = nil
	}
}
