// Package edge is Switchboard's connection tier: an RFC 6455 WebSocket server on gnet v2 event
// loops with gobwas/ws framing. It holds client connections, speaks client protocol v1
// (package protocol), keeps a sharded local index of connections, users and rooms, forwards
// client frames to logic through a Publisher, reports presence through a Presence, and fans
// out deliveries it receives with HandleDownstream.
//
// # Threading
//
// Every connection belongs to one gnet event loop, which owns its state and its index entries
// (no locks in callbacks). Other goroutines reach a loop only through its task queue
// (enqueue → gnet EventLoop.Execute). Nothing in an event loop blocks: Publish must not block,
// presence ops go to a bounded queue drained by one reporter goroutine, and plain HTTP
// requests (Config.HTTPHandler) run in a bounded set of goroutines.
//
// # Handshake
//
// A request is read from gnet's buffer once complete (at most MaxHeaderBytes, else 431; within
// HandshakeTimeout, else dropped). A WebSocket upgrade on Path is checked in this order: Origin
// against AllowedOrigins (403), then the token (401): "Authorization: Bearer <jwt>", the
// "token" query parameter, or a subprotocol "bearer.<jwt>" offered next to
// "switchboard.v1.json" / "switchboard.v1.proto". Tokens are JWTs signed with HS256
// (JWTSecret), EdDSA or RS256 (JWTPublicKey); the user id is the sub claim, "exp" closes the
// connection with 4001 when it passes. InsecureDevAuth accepts "?user=<id>" when no token is
// presented. Other requests go to HTTPHandler (or get 404/400).
//
// # Frames
//
// Frames are parsed in place from gnet's inbound buffer (Peek/Discard) by a resumable parser;
// payloads are unmasked in place, fragments are assembled per connection. Violations close the
// connection with the codes of package protocol: 1002 (unmasked, reserved bits or opcode,
// fragmented or long control frame, bad continuation), 1003 (text on a protobuf connection or
// binary on a JSON one), 1007 (invalid UTF-8, bad compressed data), 1009 (MaxFrameSize,
// MaxMessageSize), 4000 (more than MaxBadFrames undecodable frames, each answered with an
// ErrBadFrame error frame), 4002 (backlog over MaxOutboundBytes), 4004 (rate limit), 4005
// (no frame or pong within IdleTimeout; pings go out after PingInterval of silence, on a
// timing wheel). The first frame on a connection is "welcome". Every client frame becomes an
// Upstream envelope keyed by user; a frame with an id is answered "ack" once the Publisher
// accepted it, or "error" (ErrUnavailable) if it did not.
//
// # Fanout
//
// A delivery is encoded once per codec (and compressed once, with permessage-deflate without
// context takeover) and the same bytes are queued for every local target; a loop writes each
// connection's queued frames in one writev when its task queue is drained (or after
// WriteCoalesce). Sheddable deliveries skip connections with a backlog over ShedBytes.
//
// # Tracing
//
// With a TracerProvider (Config.TracerProvider, or otel's global one when nil) each client
// frame gets an edge.receive span (child of the frame's own traceparent, if it sent one: such
// frames are always sampled) and, when sampled, an edge.publish span that lasts until the
// Publisher acknowledged the frame; its traceparent travels in the Upstream envelope and in
// the message property protocol.PropTraceparent. Each delivery gets ONE edge.fanout span
// (child of Downstream.Traceparent) that ends after the last loop wrote it to its sockets,
// with the number of recipients (sb.recipients), never one span per recipient. A no-op
// provider costs nothing (no allocation); an unsampled frame costs three allocations.
// Package telemetry sets the provider up from OTEL_* variables and serves Stats as metrics.
//
// # Shutdown
//
// Shutdown stops accepting, sends every connection a "move" frame with a jittered reconnect
// delay, paced over DrainWindow, closes the rest with 1012 after DrainGrace, and deregisters
// from presence. Cancelling Run's context closes every connection with 1001 at once.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Publisher carries upstream envelopes to logic (the bus). Publish must not block; done is
// called exactly once, from another goroutine, when the bus accepted (nil) or refused (error)
// the message. payload and props are valid only until done is called.
type Publisher interface {
	Publish(ctx context.Context, key string, payload []byte, props map[string]string, done func(error))
}

// Presence is the subset of presence.Store the edge uses; a presence.Store satisfies it.
type Presence interface {
	Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error)
	Renew(ctx context.Context, edge string, epoch uint64) error
	Deregister(ctx context.Context, edge string, epoch uint64) error
	Apply(ctx context.Context, edge string, epoch uint64, ops []presence.Op) error
	Sync(ctx context.Context, edge string, epoch uint64, conns []presence.Conn, rooms map[string][]uint64) error
}

var _ Presence = (presence.Store)(nil)

func pid() int { return os.Getpid() }

const (
	stateNew = iota
	stateRunning
	stateDraining
	stateStopped
)

// Server is an edge. Create it with New, start it with Run, stop it with Shutdown.
type Server struct {
	gnet.BuiltinEventEngine

	cfg   Config
	log   *slog.Logger
	start time.Time
	auth  *authenticator

	state  atomic.Int32
	eng    gnet.Engine
	booted chan struct{}
	addr   atomic.Pointer[string]

	loopsMu   sync.Mutex
	loops     atomic.Pointer[[]*loop]
	userLoops *userLoops    // which loops hold each user's connections
	snapWait  time.Duration // how long a presence snapshot waits for each loop

	hellosWaiting atomic.Int64 // hellos held for presence, on all loops (hello.go)

	epoch      atomic.Uint64
	firstEpoch atomic.Uint64

	epochs atomic.Pointer[[]uint64] // every epoch this process has used

	ctx    context.Context // cancelled when Run returns; Publish and HTTP handlers get it
	cancel context.CancelFunc

	conns      atomic.Int64 // every accepted TCP connection (handshaking, open, closing)
	open       atomic.Int64 // upgraded connections
	downstream atomic.Uint64
	frames     atomic.Uint64
	upstream   atomic.Uint64
	acks       atomic.Uint64
	pubErrors  atomic.Uint64
	written    atomic.Uint64
	writes     atomic.Uint64
	shed       atomic.Uint64
	rejected   atomic.Uint64
	hsTimeouts atomic.Uint64
	bytesIn    atomic.Uint64
	bytesOut   atomic.Uint64
	upgrades   atomic.Uint64
	pubLat     latencyHist // Publish → its completion
	delivLat   latencyHist // origin edge's receive of the client frame → this edge's fanout
	fanLat     latencyHist // Dispatch → a loop's last socket write of a room delivery

	httpSem chan struct{}
	httpWG  sync.WaitGroup

	closeMu     sync.Mutex
	closeCounts map[uint16]uint64
	rejects     map[int]uint64 // handshake rejections by HTTP status; guarded by closeMu

	pres *reporter

	retrier       retrier // connect / disconnect events waiting for another attempt
	eventsRetried atomic.Uint64
	eventsDropped atomic.Uint64

	srcLim *sourceLimits // nil: no per-source limits
	trace  *tracing

	stopOnce sync.Once
	runDone  chan struct{}
	runErr   error
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         c,
		log:         c.Logger,
		start:       time.Now(),
		booted:      make(chan struct{}),
		runDone:     make(chan struct{}),
		closeCounts: make(map[uint16]uint64),
		rejects:     make(map[int]uint64),
		userLoops:   newUserLoops(),
		snapWait:    2 * time.Second,
	}
	s.auth = newAuthenticator(&s.cfg)
	s.srcLim = newSourceLimits(s.cfg.MaxConnsPerSource, s.cfg.SourceHandshakeRate, s.cfg.SourceHandshakeBurst)
	s.trace = newTracing(c.TracerProvider)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.httpSem = make(chan struct{}, c.HTTPWorkers)
	e := uint64(time.Now().UnixNano())
	s.epoch.Store(e)
	s.firstEpoch.Store(e)
	s.epochs.Store(&[]uint64{e})
	empty := []*loop{}
	s.loops.Store(&empty)
	if c.Presence != nil {
		s.pres = newReporter(s)
	}
	return s, nil
}

// ID returns the edge id.
func (s *Server) ID() string { return s.cfg.ID }

// Epoch returns the edge's current epoch (from presence registration, or a start-time value).
func (s *Server) Epoch() uint64 { return s.epoch.Load() }

// Addr returns the listen address once Run has started listening, or "" before.
func (s *Server) Addr() string {
	if p := s.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Ready is closed when the server listens.
func (s *Server) Ready() <-chan struct{} { return s.booted }

// Stats is a snapshot of the edge's counters.
type Stats struct {
	Conns      int64             // accepted TCP connections still open (any state)
	Open       int64             // upgraded WebSocket connections
	Closes     map[uint16]uint64 // close codes the edge sent, by code
	Downstream uint64            // downstream envelopes handled (HandleDownstream / Dispatch)
	Frames     uint64            // client frames decoded and accepted
	Upstream   uint64            // client frames handed to the Publisher
	Acks       uint64            // acks sent
	PubErrors  uint64            // Publish completions with an error
	Written    uint64            // frames written by fanout (per connection)
	Writes     uint64            // write/writev calls that wrote them (Written/Writes: frames per write)
	Shed       uint64            // sheddable deliveries skipped for backlogged connections
	Rejected   uint64            // handshakes answered with an HTTP error
	Rejects    map[int]uint64    // Rejected by HTTP status (401 token, 403 origin, 431 headers, …)
	BytesIn    uint64            // payload bytes of accepted client frames
	BytesOut   uint64            // bytes written to connections by the loops' batched writes
	Upgrades   uint64            // handshakes accepted (WebSocket connections opened)
	// PublishLatency is the time from Publish to its completion (the bus acknowledged the
	// upstream frame), per client frame.
	PublishLatency Histogram
	// DeliveryLatency is the time from the originating edge's receive of a client frame to
	// this edge's fanout of a delivery it caused (Downstream.TimeUnixNano; across hosts it
	// includes their clock offset), per delivery envelope.
	DeliveryLatency Histogram
	// FanoutLatency is the time from Dispatch (HandleDownstream) to a loop's last socket write
	// of a delivery to a room (or to everyone), per delivery and loop: the edge's own share of a delivery's latency,
	// including the WriteCoalesce hold and the wait behind other work on the loop.
	FanoutLatency Histogram
	HSTimeouts    uint64 // connections dropped by the handshake timeout
	// EventsRetried counts connect / disconnect envelopes published again after the bus
	// refused them; EventsDropped those given up after Config.EventRetry (or at shutdown):
	// logic never saw them.
	EventsRetried uint64
	EventsDropped uint64
	Epoch         uint64 // current epoch
}

// Stats returns a snapshot of the counters. Safe from any goroutine.
func (s *Server) Stats() Stats {
	s.closeMu.Lock()
	m := make(map[uint16]uint64, len(s.closeCounts))
	for k, v := range s.closeCounts {
		m[k] = v
	}
	rj := make(map[int]uint64, len(s.rejects))
	for k, v := range s.rejects {
		rj[k] = v
	}
	s.closeMu.Unlock()
	return Stats{Conns: s.conns.Load(), Open: s.open.Load(), Closes: m,
		Downstream: s.downstream.Load(), Frames: s.frames.Load(), Upstream: s.upstream.Load(),
		Acks: s.acks.Load(), PubErrors: s.pubErrors.Load(), Written: s.written.Load(), Writes: s.writes.Load(), Shed: s.shed.Load(),
		Rejected: s.rejected.Load(), Rejects: rj, HSTimeouts: s.hsTimeouts.Load(), Epoch: s.epoch.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Upgrades: s.upgrades.Load(),
		PublishLatency: s.pubLat.snapshot(), DeliveryLatency: s.delivLat.snapshot(), FanoutLatency: s.fanLat.snapshot(),
		EventsRetried: s.eventsRetried.Load(), EventsDropped: s.eventsDropped.Load()}
}

// sinceStartNs is a monotonic clock: nanoseconds since New.
func (s *Server) sinceStartNs() int64 { return int64(time.Since(s.start)) }

// sinceStartMs is the loops' clock: milliseconds since New.
func (s *Server) sinceStartMs() uint32 { return uint32(time.Since(s.start) / time.Millisecond) }

// addEpoch records a new epoch (from presence registration) and makes it current.
func (s *Server) addEpoch(e uint64) {
	s.epoch.Store(e)
	for {
		old := s.epochs.Load()
		next := append(append(make([]uint64, 0, len(*old)+1), *old...), e)
		if s.epochs.CompareAndSwap(old, &next) {
			return
		}
	}
}

// countReject counts a handshake answered with an HTTP error status.
func (s *Server) countReject(status int) {
	s.rejected.Add(1)
	s.closeMu.Lock()
	s.rejects[status]++
	s.closeMu.Unlock()
}

func (s *Server) countClose(code uint16) {
	s.closeMu.Lock()
	s.closeCounts[code]++
	s.closeMu.Unlock()
}

// Run listens and serves until ctx is cancelled (connections are closed with 1001 at once)
// or Shutdown drains the edge. It returns nil after a clean stop.
func (s *Server) Run(ctx context.Context) error {
	if !s.state.CompareAndSwap(stateNew, stateRunning) {
		return fmt.Errorf("%w: Run called twice", ErrClosed)
	}
	defer close(s.runDone)
	presCtx, presCancel := context.WithCancel(context.Background())
	var presWG sync.WaitGroup
	if s.pres != nil {
		presWG.Add(1)
		go func() { defer presWG.Done(); s.pres.run(presCtx) }()
	}
	retryCtx, retryCancel := context.WithCancel(context.Background())
	var retryWG sync.WaitGroup
	if s.cfg.Publisher != nil && s.cfg.EventRetry > 0 {
		s.retrier.start()
		retryWG.Add(1)
		go func() { defer retryWG.Done(); s.runRetrier(retryCtx) }()
	}
	watchDone := make(chan struct{})
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		select {
		case <-ctx.Done():
			s.stop(protocol.CloseGoingAway)
		case <-watchDone:
		}
	}()
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(s.cfg.Loops),
		gnet.WithTicker(true),
		gnet.WithReusePort(s.cfg.ReusePort),
		gnet.WithReuseAddr(true),
		gnet.WithLogger(gnetLogger{s.log}),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
	}
	if s.cfg.TCPKeepAlive > 0 {
		opts = append(opts, gnet.WithTCPKeepAlive(s.cfg.TCPKeepAlive))
	}
	err := gnet.Run(s, "tcp://"+s.cfg.Addr, opts...)
	close(watchDone)
	watchWG.Wait()
	retryCancel()
	retryWG.Wait()
	presCancel()
	presWG.Wait()
	s.cancel()
	s.httpWG.Wait()
	s.state.Store(stateStopped)
	select {
	case <-s.booted:
	default:
		close(s.booted) // never booted: unblock waiters
	}
	if err != nil {
		return fmt.Errorf("edge: run: %w", err)
	}
	return nil
}

// Shutdown drains the edge: it stops accepting, sends every client a "move" frame paced and
// jittered over DrainWindow, closes the rest with 1012 after DrainGrace, deregisters from
// presence and stops the engine. It returns when Run has returned or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.state.CompareAndSwap(stateNew, stateStopped) {
		return nil
	}
	if !s.state.CompareAndSwap(stateRunning, stateDraining) {
		select {
		case <-s.runDone:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("edge: shutdown: %w", ctx.Err())
		}
	}
	select {
	case <-s.booted:
	case <-ctx.Done():
		return fmt.Errorf("edge: shutdown: %w", ctx.Err())
	}
	s.broadcastTask(task{kind: tDrain})
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	var err error
wait:
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("edge: shutdown: %w", ctx.Err())
			break wait
		case <-poll.C:
		}
	}
	if s.pres != nil {
		dctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.pres.deregister(dctx)
		cancel()
	}
	s.stop(protocol.CloseRestart)
	select {
	case <-s.runDone:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("edge: shutdown: %w", ctx.Err())
		}
	}
	return err
}

// stop stops the engine; connections still open get a close frame with code first.
func (s *Server) stop(code protocol.CloseCode) {
	s.stopOnce.Do(func() {
		select {
		case <-s.booted:
		default:
			return
		}
		if s.Addr() == "" {
			return
		}
		s.state.Store(stateDraining)
		s.closeAllNow(code)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.eng.Stop(ctx); err != nil {
			s.log.Warn("edge: engine stop", "err", err)
		}
	})
}

// closeAllNow writes a close frame to every connection and waits (bounded) for the loops to
// have done it.
func (s *Server) closeAllNow(code protocol.CloseCode) {
	var wg sync.WaitGroup
	for _, l := range *s.loops.Load() {
		wg.Add(1)
		if !l.enqueue(task{kind: tCloseAll, code: uint16(code), wg: &wg}) {
			wg.Done()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// OnBoot records the engine and the bound address. gnet callback.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	addr := s.cfg.Addr
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				addr = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
			case *unix.SockaddrInet6:
				addr = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
			}
		}
		_ = unix.Close(fd)
	}
	s.addr.Store(&addr)
	close(s.booted)
	return gnet.None
}

// OnOpen creates the connection's state. gnet callback, on the connection's loop.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if s.state.Load() != stateRunning {
		return nil, gnet.Close
	}
	if s.srcLim != nil && !s.srcLim.admit(c.RemoteAddr(), time.Now()) {
		s.countReject(429)
		return tooManyFromSource, gnet.Close
	}
	l := s.loopFor(c.EventLoop())
	l.accept(c)
	return nil, gnet.None
}

// OnTraffic parses what the connection sent. gnet callback, on the connection's loop.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	wc, ok := c.Context().(*wsConn)
	if !ok {
		return gnet.Close
	}
	return wc.l.onTraffic(wc)
}

// OnClose releases the connection's state. gnet callback, on the connection's loop.
func (s *Server) OnClose(c gnet.Conn, _ error) gnet.Action {
	if wc, ok := c.Context().(*wsConn); ok {
		wc.l.onClose(wc)
		if s.srcLim != nil {
			s.srcLim.release(c.RemoteAddr())
		}
	}
	return gnet.None
}

// OnTick advances every loop's timing wheel. gnet callback, on the ticker goroutine.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.broadcastTask(task{kind: tTick})
	if s.srcLim != nil {
		s.srcLim.prune(time.Now())
	}
	return s.cfg.Tick, gnet.None
}

func (s *Server) loopFor(el gnet.EventLoop) *loop {
	for _, l := range *s.loops.Load() {
		if l.el == el {
			return l
		}
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	cur := *s.loops.Load()
	for _, l := range cur {
		if l.el == el {
			return l
		}
	}
	l := newLoop(s, el, len(cur))
	next := append(append([]*loop(nil), cur...), l)
	s.loops.Store(&next)
	return l
}

func (s *Server) loopByIdx(i int) *loop {
	ls := *s.loops.Load()
	if i < 0 || i >= len(ls) {
		return nil
	}
	return ls[i]
}

func (s *Server) broadcastTask(t task) {
	for _, l := range *s.loops.Load() {
		l.enqueue(t)
	}
}

// epochOK reports whether a downstream epoch addresses this process's connections.
func (s *Server) epochOK(e uint64) bool {
	if e == 0 {
		return true
	}
	for _, x := range *s.epochs.Load() {
		if x == e {
			return true
		}
	}
	return false
}

// HandleDownstream decodes a protocol.Downstream envelope and does the local work: deliver the
// frame (encoded once per codec, the same bytes written to every target), join or leave rooms,
// or close connections. Safe from any goroutine; it does not wait for the loops.
func (s *Server) HandleDownstream(payload []byte) error {
	d := new(protocol.Downstream)
	if err := protocol.DecodeDownstream(payload, d); err != nil {
		return fmt.Errorf("edge: downstream: %w", err)
	}
	return s.Dispatch(d)
}

// Dispatch does the local work of a decoded Downstream. d must not be modified afterwards.
func (s *Server) Dispatch(d *protocol.Downstream) error {
	st := s.state.Load()
	if st != stateRunning && st != stateDraining {
		return ErrNotReady
	}
	s.downstream.Add(1)
	if d.Target == protocol.TargetConns && !s.epochOK(d.Epoch) {
		return nil // connections of another life of this edge: none are here
	}
	t := task{d: d}
	switch d.Kind {
	case protocol.DownDeliver:
		t.kind = tDeliver
		t.at = s.sinceStartNs()
		t.frames = s.encodeDelivery(&d.Frame)
		if d.TimeUnixNano > 0 {
			s.delivLat.observe(time.Duration(time.Now().UnixNano() - d.TimeUnixNano))
		}
		if tr := s.trace.tracer(); tr != nil {
			t.ft = s.startFanout(tr, d)
		}
	case protocol.DownJoin:
		t.kind = tJoin
	case protocol.DownLeave:
		t.kind = tLeave
	case protocol.DownClose:
		t.kind = tKick
	default:
		return fmt.Errorf("edge: downstream: %w", protocol.ErrMalformed)
	}
	if d.Target == protocol.TargetConns {
		var mask uint64 // loops holding at least one target (≤ 64 loops tracked exactly)
		for _, id := range d.Conns {
			i := int(id & loopMask)
			if i < 64 {
				mask |= 1 << i
			} else {
				mask = ^uint64(0)
			}
		}
		for i, l := range *s.loops.Load() {
			if i >= 64 || mask&(1<<i) != 0 {
				s.enqueueTraced(l, t)
			}
		}
	} else if loops := *s.loops.Load(); d.Target == protocol.TargetUsers && len(loops) <= 64 {
		mask := s.userLoops.mask(d.Users) // only the loops holding some of the users
		for i, l := range loops {
			if mask&(1<<i) != 0 {
				s.enqueueTraced(l, t)
			}
		}
	} else {
		for _, l := range loops {
			s.enqueueTraced(l, t)
		}
	}
	if t.ft != nil {
		t.ft.done(0, false) // the dispatcher's reference
	}
	return nil
}

// enqueueTraced hands t to l, holding a reference on its fanout span until l has written.
func (s *Server) enqueueTraced(l *loop, t task) {
	if t.ft == nil {
		l.enqueue(t)
		return
	}
	t.ft.pending.Add(1)
	if !l.enqueue(t) {
		t.ft.done(0, false)
	}
}

// encoded holds a delivery's WebSocket frame, once per codec and compression (nil when no
// connection uses it). The JSON form is encoded at once; the others on first use by any loop.
type encoded struct {
	f         *protocol.ServerFrame
	json      []byte
	once      sync.Once
	proto     []byte
	zjsonOnce sync.Once
	zjson     []byte
	zprotoOne sync.Once
	zproto    []byte
	threshold int
}

func (s *Server) encodeDelivery(f *protocol.ServerFrame) *encoded {
	return &encoded{f: f, json: encodeServerFrame(make([]byte, 0, frameSizeHint(f)), protocol.JSON, f),
		threshold: s.cfg.CompressionThreshold}
}

// frameSizeHint is a capacity for f's WebSocket frame in either codec that usually needs no
// growing (growing a nil buffer field by field cost three allocations per delivery).
func frameSizeHint(f *protocol.ServerFrame) int {
	return 10 + 48 + len(f.Type) + len(f.ID) + len(f.Message) + len(f.Data) + (len(f.Type)+len(f.ID)+len(f.Message))/8
}

// encodeServerFrame appends a complete WebSocket frame carrying f in codec's form.
func encodeServerFrame(dst []byte, codec protocol.Codec, f *protocol.ServerFrame) []byte {
	// Reserve the largest header, encode the payload after it, then write the real header
	// right before the payload: one pass, no copy.
	start := len(dst)
	dst = append(dst, make([]byte, 10)...)
	dst = codec.AppendServerFrame(dst, f)
	n := len(dst) - start - 10
	op := opText
	if codec.Binary() {
		op = opBinary
	}
	var hdr [10]byte
	h := appendHeader(hdr[:0], op, n)
	off := start + 10 - len(h)
	copy(dst[off:], h)
	if off == start {
		return dst
	}
	return append(dst[:start], dst[off:]...)
}

// gnetLogger routes gnet's logs to slog at debug level (errors at warn).
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...)) }

var errNoBus = errors.New("edge: no publisher configured")
