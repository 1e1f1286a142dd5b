// Package client is the Go client of the router service: a presence.Store over gRPC, used by
// edges (Register/Renew/Apply/Sync) and logic (ResolveUsers/RoomEdges/... with a cache).
//
// Errors are the presence sentinels: a lost lease is presence.ErrLeaseLost, a malformed request
// presence.ErrInvalid, anything else (router down, timeout, Redis down behind the router)
// presence.ErrUnavailable, all wrapped with the server's message.
//
// Tracing: calls run under the otelgrpc stats handler with the W3C trace-context and baggage
// propagators, so the span context in ctx travels in the gRPC metadata (traceparent,
// tracestate, baggage) to the router and on to its Store.
//
// # Resolve cache
//
// ResolveUsers answers (including "user offline") are cached for at most UserCacheTTL
// (default 5s), RoomEdges answers (including "room empty") for at most CacheTTL (default
// 200ms). Invalidation:
//   - a user is dropped from the cache as soon as any of its events (online, offline, or
//     changed: a connection added or removed while it stays online) arrives on the client's
//     own event watch (a background Events stream);
//   - an Apply through this client drops the users and rooms it touches; Register, Sync and
//     Deregister through it clear the cache;
//   - the cache is only used while the event watch is connected: when the stream breaks the
//     cache is cleared and bypassed until the watch is back;
//   - an answer fetched while one of its keys was invalidated is not stored (per-shard
//     invalidation sequence), so an invalidation is never undone by a slower read.
//
// Staleness bound: every change of a user's connections (a device connecting or leaving on
// any edge) is seen as soon as its event arrives; an edge's lease lapsing is seen when the
// router reaps it (its RefreshInterval after the lapse: the offline and changed events), or
// within UserCacheTTL; a room gaining or losing an edge is seen within CacheTTL. A router older
// than the changed events sends only online and offline: against one, set UserCacheTTL to
// CacheTTL. Set CacheTTL < 0 to disable the cache (every read goes to the router).
package client

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/switchboard-io/switchboard/router/api"
	"github.com/switchboard-io/switchboard/router/internal/wire"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Config configures a Client. Addr (or Conn) is required; zero values of the rest are defaults.
type Config struct {
	// Addr is the router's gRPC target: "host:port"; several comma-separated "host:port"
	// (a static list of router replicas) or "dns:///name:port" to balance round-robin over
	// replicas. Any replica serves any call (they share Redis).
	Addr string
	// Conn, when set, is used instead of dialling Addr. Not closed by Close.
	Conn grpc.ClientConnInterface
	// DialOptions are added to the client's defaults (insecure transport, otelgrpc, keepalive,
	// round_robin).
	DialOptions []grpc.DialOption
	// CallTimeout bounds a unary call whose ctx has no deadline. Zero means 5s.
	CallTimeout time.Duration
	// CacheTTL bounds how long a cached RoomEdges answer is used (see the package doc). Zero
	// means 200ms; negative disables the cache (users and rooms) and its event watch.
	CacheTTL time.Duration
	// UserCacheTTL bounds how long a cached ResolveUsers answer is used. Every change of a
	// user's connections invalidates it when the change's event arrives, so this only bounds
	// what no event reports (see the package doc). Zero means 5s. Measured through make
	// cluster at 100 chat messages/s (100 pairs): with 200ms most resolves missed, and the
	// router's ResolveUsers cost ~0.5ms of router CPU per chat frame.
	UserCacheTTL time.Duration
	// CacheSize bounds the number of cached users plus rooms; when full, new answers are not
	// cached until expired entries are swept. Zero means 1<<20.
	CacheSize int
	// EventBuffer is the capacity of each Events channel. Zero means 4096.
	EventBuffer int
	// SyncChunk is the largest number of connections sent in one call by Sync (see Sync).
	// Zero means 10000.
	SyncChunk int
	// Logger receives rare diagnostics (event watch reconnects, rate-limited). Nil means silent.
	Logger *slog.Logger
}

// Client is a presence.Store backed by the router service. Safe for concurrent use.
type Client struct {
	cfg  Config
	cc   *grpc.ClientConn // nil when Config.Conn was given
	rpc  api.RouterClient
	done chan struct{}
	wg   sync.WaitGroup

	closeOnce sync.Once
	mu        sync.Mutex // guards closed and wg.Add against Close's wg.Wait
	closed    bool
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc

	cache *cache // nil when disabled
}

var _ presence.Store = (*Client)(nil)

// ErrClosed is returned by calls on a closed Client (wrapped with presence.ErrUnavailable).
var ErrClosed = errors.New("router/client: closed")

// New validates cfg, creates the gRPC channel (connections are made lazily) and starts the
// cache's event watch.
func New(cfg Config) (*Client, error) {
	if cfg.Addr == "" && cfg.Conn == nil {
		return nil, fmt.Errorf("router/client: config: empty Addr: %w", presence.ErrInvalid)
	}
	if cfg.CallTimeout < 0 || cfg.UserCacheTTL < 0 || cfg.CacheSize < 0 || cfg.EventBuffer < 0 || cfg.SyncChunk < 0 {
		return nil, fmt.Errorf("router/client: config: negative value: %w", presence.ErrInvalid)
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 200 * time.Millisecond
	}
	if cfg.UserCacheTTL == 0 {
		cfg.UserCacheTTL = 5 * time.Second
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 1 << 20
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = 4096
	}
	if cfg.SyncChunk == 0 {
		cfg.SyncChunk = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, done: make(chan struct{})}
	conn := cfg.Conn
	if conn == nil {
		opts := append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(Propagator()))),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second}),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		}, cfg.DialOptions...)
		target := cfg.Addr
		if strings.Contains(target, ",") {
			r := manual.NewBuilderWithScheme("sbrouter")
			var addrs []resolver.Address
			for _, a := range strings.Split(target, ",") {
				if a = strings.TrimSpace(a); a != "" {
					addrs = append(addrs, resolver.Address{Addr: a})
				}
			}
			r.InitialState(resolver.State{Addresses: addrs})
			opts = append(opts, grpc.WithResolvers(r))
			target = r.Scheme() + ":///router"
		}
		cc, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, fmt.Errorf("router/client: dial %s: %w", cfg.Addr, err)
		}
		c.cc = cc
		conn = cc
	}
	c.rpc = api.NewRouterClient(conn)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.CacheTTL > 0 {
		c.cache = newCache(cfg.CacheSize)
		c.wg.Add(1)
		go c.watch(c.ctx)
	}
	return c, nil
}

// Propagator is the text-map propagator of the router API: W3C trace context and baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Close stops the event watch and closes the gRPC channel. Events channels are closed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		c.cancel()
		c.wg.Wait()
		if c.cc != nil {
			_ = c.cc.Close()
		}
	})
	return nil
}

func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc, error) {
	select {
	case <-c.done:
		return nil, nil, fmt.Errorf("%w: %w", ErrClosed, presence.ErrUnavailable)
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("router/client: %w: %w", presence.ErrUnavailable, err)
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	return ctx, cancel, nil
}

// Register implements presence.Store.
func (c *Client) Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error) {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	if ttl < 0 {
		return 0, fmt.Errorf("router/client: register %s: negative ttl: %w", edge, presence.ErrInvalid)
	}
	r, err := c.rpc.Register(cctx, &api.RegisterRequest{Edge: edge, TtlMs: ttl.Milliseconds()})
	if err != nil {
		return 0, wire.Error(cctx, "register "+edge, err)
	}
	c.cache.clear()
	return r.GetEpoch(), nil
}

// Renew implements presence.Store.
func (c *Client) Renew(ctx context.Context, edge string, epoch uint64) error {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = c.rpc.Renew(cctx, &api.RenewRequest{Edge: edge, Epoch: epoch})
	return wire.Error(cctx, "renew "+edge, err)
}

// Deregister implements presence.Store.
func (c *Client) Deregister(ctx context.Context, edge string, epoch uint64) error {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = c.rpc.Deregister(cctx, &api.DeregisterRequest{Edge: edge, Epoch: epoch})
	c.cache.clear()
	return wire.Error(cctx, "deregister "+edge, err)
}

// Apply implements presence.Store. The ops are validated locally first (a bad batch never
// crosses the network) and the touched users and rooms are dropped from the cache.
func (c *Client) Apply(ctx context.Context, edge string, epoch uint64, ops []presence.Op) error {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if err := presence.ValidateOps(ops); err != nil {
		return fmt.Errorf("router/client: apply %s: %w", edge, err)
	}
	if c.cache != nil {
		defer c.cache.invalidateOps(ops) // after the write too: a read racing it may refill
		c.cache.invalidateOps(ops)
	}
	_, err = c.rpc.Apply(cctx, &api.ApplyRequest{Edge: edge, Epoch: epoch, Ops: wire.Ops(ops)})
	return wire.Error(cctx, "apply "+edge, err)
}

// Sync implements presence.Store. A state of more than SyncChunk connections is sent as a
// Sync of the first SyncChunk connections (with their rooms) followed by Applies of the rest
// (connect + joins, SyncChunk connections per call): the same end state, with every call far
// below gRPC's message limit and within CallTimeout. While the calls run, the part not sent
// yet is not visible; for the usual anti-entropy Sync (a fresh epoch after ErrLeaseLost) that
// only means the edge's users come online in a few steps. The edge must not Apply
// concurrently with its own Sync.
func (c *Client) Sync(ctx context.Context, edge string, epoch uint64, conns []presence.Conn, rooms map[string][]uint64) error {
	chunk := c.cfg.SyncChunk
	if len(conns) <= chunk {
		return c.sync(ctx, edge, epoch, conns, rooms)
	}
	for i := range conns {
		if conns[i].User == "" {
			return fmt.Errorf("router/client: sync %s: conn %d without user: %w", edge, conns[i].ConnID, presence.ErrInvalid)
		}
	}
	member := make(map[uint64][]string, len(conns))
	for r, ids := range rooms {
		for _, id := range ids {
			member[id] = append(member[id], r)
		}
	}
	first := conns[:chunk]
	firstRooms := make(map[string][]uint64)
	for _, cn := range first {
		for _, r := range member[cn.ConnID] {
			firstRooms[r] = append(firstRooms[r], cn.ConnID)
		}
	}
	if err := c.sync(ctx, edge, epoch, first, firstRooms); err != nil {
		return err
	}
	for rest := conns[chunk:]; len(rest) > 0; {
		n := min(len(rest), chunk)
		ops := make([]presence.Op, 0, 2*n)
		for _, cn := range rest[:n] {
			ops = append(ops, presence.Op{Kind: presence.OpConnect, ConnID: cn.ConnID, User: cn.User, Meta: cn.Meta, At: cn.ConnectedAt})
			for _, r := range member[cn.ConnID] {
				ops = append(ops, presence.Op{Kind: presence.OpJoin, ConnID: cn.ConnID, Room: r})
			}
		}
		if err := c.Apply(ctx, edge, epoch, ops); err != nil {
			return fmt.Errorf("router/client: sync %s: %w", edge, err)
		}
		rest = rest[n:]
	}
	return nil
}

func (c *Client) sync(ctx context.Context, edge string, epoch uint64, conns []presence.Conn, rooms map[string][]uint64) error {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	req := &api.SyncRequest{Edge: edge, Epoch: epoch, Conns: wire.Conns(conns)}
	if len(rooms) > 0 {
		req.Rooms = make(map[string]*api.ConnIDs, len(rooms))
		for r, ids := range rooms {
			req.Rooms[r] = &api.ConnIDs{Ids: ids}
		}
	}
	c.cache.clear()
	defer c.cache.clear()
	_, err = c.rpc.Sync(cctx, req)
	return wire.Error(cctx, "sync "+edge, err)
}

// ResolveUsers implements presence.Store. Cached answers are used for the users the cache
// holds (see the package doc); the rest are resolved in one call. The returned slices are
// the caller's (copies), the Meta maps are shared and must not be modified.
func (c *Client) ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error) {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	out := make(map[string][]presence.Conn, len(users))
	missing := users
	var seqs []uint64
	if c.cache.active() {
		missing = make([]string, 0, len(users))
		seqs = make([]uint64, 0, len(users))
		now := time.Now()
		for _, u := range users {
			if cs, ok := c.cache.getUser(u, now); ok {
				if len(cs) > 0 {
					out[u] = append([]presence.Conn(nil), cs...)
				}
				continue
			}
			missing = append(missing, u)
			seqs = append(seqs, c.cache.seq(userKey(u)))
		}
		if len(missing) == 0 {
			return out, nil
		}
	}
	r, err := c.rpc.ResolveUsers(cctx, &api.ResolveUsersRequest{Users: missing})
	if err != nil {
		return nil, wire.Error(cctx, "resolve users", err)
	}
	for _, uc := range r.GetUsers() {
		out[uc.GetUser()] = wire.FromConns(uc.GetConns(), uc.GetUser())
	}
	if seqs != nil {
		exp := time.Now().Add(c.cfg.UserCacheTTL)
		for i, u := range missing {
			cs := out[u]
			if cs != nil {
				cs = append([]presence.Conn(nil), cs...)
			}
			c.cache.putUser(u, cs, seqs[i], exp)
		}
	}
	return out, nil
}

// RoomEdges implements presence.Store (cached, see the package doc). The returned slice is
// the caller's.
func (c *Client) RoomEdges(ctx context.Context, room string) ([]presence.RoomEdge, error) {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	var seq uint64
	active := c.cache.active()
	if active {
		if re, ok := c.cache.getRoom(room, time.Now()); ok {
			return append([]presence.RoomEdge(nil), re...), nil
		}
		seq = c.cache.seq(roomKey(room))
	}
	r, err := c.rpc.RoomEdges(cctx, &api.RoomEdgesRequest{Room: room})
	if err != nil {
		return nil, wire.Error(cctx, "room edges "+room, err)
	}
	out := make([]presence.RoomEdge, len(r.GetEdges()))
	for i, e := range r.GetEdges() {
		out[i] = presence.RoomEdge{Edge: e.GetEdge(), Epoch: e.GetEpoch(), Members: int(e.GetMembers())}
	}
	if active {
		c.cache.putRoom(room, append([]presence.RoomEdge(nil), out...), seq, time.Now().Add(c.cfg.CacheTTL))
	}
	return out, nil
}

// RoomCounts implements presence.Store (not cached).
func (c *Client) RoomCounts(ctx context.Context, rooms []string) (map[string]int, error) {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	r, err := c.rpc.RoomCounts(cctx, &api.RoomCountsRequest{Rooms: rooms})
	if err != nil {
		return nil, wire.Error(cctx, "room counts", err)
	}
	out := make(map[string]int, len(r.GetCounts()))
	for k, v := range r.GetCounts() {
		out[k] = int(v)
	}
	return out, nil
}

// Online implements presence.Store (not cached).
func (c *Client) Online(ctx context.Context) (presence.Counts, error) {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return presence.Counts{}, err
	}
	defer cancel()
	r, err := c.rpc.Online(cctx, &api.OnlineRequest{})
	if err != nil {
		return presence.Counts{}, wire.Error(cctx, "online", err)
	}
	out := presence.Counts{Connections: int(r.GetConnections()), Users: int(r.GetUsers()), PerEdge: make(map[string]int, len(r.GetPerEdge()))}
	for k, v := range r.GetPerEdge() {
		out.PerEdge[k] = int(v)
	}
	return out, nil
}

// Edges implements presence.Store (not cached).
func (c *Client) Edges(ctx context.Context) (map[string]uint64, error) {
	cctx, cancel, err := c.callCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	r, err := c.rpc.Edges(cctx, &api.EdgesRequest{})
	if err != nil {
		return nil, wire.Error(cctx, "edges", err)
	}
	out := r.GetEdges()
	if out == nil {
		out = map[string]uint64{}
	}
	return out, nil
}

// Events implements presence.Store. It returns once the router confirmed the subscription.
// If the stream breaks (router restart), it is re-opened with backoff; events in between are
// missed (events are at-most-once; ResolveUsers is the authority). The channel is closed when
// ctx ends or the client closes. A receiver slower than the stream holds the stream back
// (gRPC flow control); the router drops events for it once its own buffer is full.
func (c *Client) Events(ctx context.Context) (<-chan presence.Event, error) {
	select {
	case <-c.done:
		return nil, fmt.Errorf("%w: %w", ErrClosed, presence.ErrUnavailable)
	default:
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.openEvents(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	ch := make(chan presence.Event, c.cfg.EventBuffer)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrClosed, presence.ErrUnavailable)
	}
	c.wg.Add(1)
	c.mu.Unlock()
	stop := context.AfterFunc(c.ctx, cancel)
	go func() {
		defer c.wg.Done()
		defer close(ch)
		defer stop()
		defer cancel()
		c.pump(sctx, stream, func(ev presence.Event) bool {
			select {
			case ch <- ev:
				return true
			case <-sctx.Done():
				return false
			}
		}, nil)
	}()
	return ch, nil
}

// openEvents opens an Events stream and waits for the router's confirmation.
func (c *Client) openEvents(ctx context.Context) (grpc.ServerStreamingClient[api.EventBatch], error) {
	stream, err := c.rpc.Events(ctx, &api.EventsRequest{})
	if err != nil {
		return nil, wire.Error(ctx, "events", err)
	}
	if _, err := stream.Recv(); err != nil {
		return nil, wire.Error(ctx, "events", err)
	}
	return stream, nil
}

// pump forwards the events of stream to deliver, re-opening the stream with backoff when it
// breaks, until ctx ends or deliver returns false. connected, if not nil, is told whenever the
// stream is up (true) or down (false).
func (c *Client) pump(ctx context.Context, stream grpc.ServerStreamingClient[api.EventBatch], deliver func(presence.Event) bool, connected func(bool)) {
	backoff := 50 * time.Millisecond
	var lastLog time.Time
	for {
		if stream != nil {
			if connected != nil {
				connected(true)
			}
			backoff = 50 * time.Millisecond
			for {
				b, err := stream.Recv()
				if err != nil {
					if ctx.Err() == nil && time.Since(lastLog) > 10*time.Second {
						lastLog = time.Now()
						c.cfg.Logger.Warn("router/client: event stream broken, re-opening", "err", err)
					}
					break
				}
				for _, w := range b.GetEvents() {
					if !deliver(wire.FromEvent(w)) {
						return
					}
				}
			}
			if connected != nil {
				connected(false)
			}
		}
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
		var err error
		stream, err = c.openEvents(ctx)
		if err != nil {
			stream = nil
		}
	}
}

// watch keeps the cache's event subscription and invalidates users on their events.
func (c *Client) watch(ctx context.Context) {
	defer c.wg.Done()
	c.pump(ctx, nil, func(ev presence.Event) bool {
		c.cache.invalidate(userKey(ev.User))
		return true
	}, func(up bool) {
		// Going down: stop storing first, then drop what may miss invalidations. Going up:
		// drop what was stored before the stream confirmed, then allow storing.
		if up {
			c.cache.clear()
			c.cache.up.Store(true)
		} else {
			c.cache.up.Store(false)
			c.cache.clear()
		}
	})
}

// ---- cache ----

const cacheShards = 64

type cacheKey struct {
	room bool
	name string
}

func userKey(u string) cacheKey { return cacheKey{name: u} }
func roomKey(r string) cacheKey { return cacheKey{room: true, name: r} }

type cacheEntry struct {
	conns   []presence.Conn     // user entries; nil: offline
	edges   []presence.RoomEdge // room entries
	expires time.Time
}

type cacheShard struct {
	mu   sync.Mutex
	seq  uint64 // incremented by every invalidation of a key of this shard
	m    map[cacheKey]cacheEntry
	_pad [40]byte
}

type cache struct {
	max    int64
	size   atomic.Int64
	up     atomic.Bool // the event watch is connected
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

func newCache(size int) *cache {
	c := &cache{max: int64(size), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]cacheEntry)
	}
	return c
}

func (c *cache) shard(k cacheKey) *cacheShard {
	return &c.shards[maphash.String(c.seed, k.name)%cacheShards]
}

func (c *cache) active() bool { return c != nil && c.up.Load() }

func (c *cache) seq(k cacheKey) uint64 {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

func (c *cache) get(k cacheKey, now time.Time) (cacheEntry, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[k]
	if !ok {
		return e, false
	}
	if !now.Before(e.expires) {
		delete(s.m, k)
		c.size.Add(-1)
		return e, false
	}
	return e, true
}

func (c *cache) getUser(u string, now time.Time) ([]presence.Conn, bool) {
	e, ok := c.get(userKey(u), now)
	return e.conns, ok
}

func (c *cache) getRoom(r string, now time.Time) ([]presence.RoomEdge, bool) {
	e, ok := c.get(roomKey(r), now)
	return e.edges, ok
}

// put stores e unless the key's shard saw an invalidation since seq was read.
func (c *cache) put(k cacheKey, e cacheEntry, seq uint64) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq != seq || !c.up.Load() {
		return
	}
	if _, ok := s.m[k]; !ok {
		if c.size.Load() >= c.max {
			c.sweep(s, time.Now())
			if c.size.Load() >= c.max {
				return
			}
		}
		c.size.Add(1)
	}
	s.m[k] = e
}

// sweep drops the expired entries of s. s.mu held.
func (c *cache) sweep(s *cacheShard, now time.Time) {
	for k, e := range s.m {
		if !now.Before(e.expires) {
			delete(s.m, k)
			c.size.Add(-1)
		}
	}
}

func (c *cache) putUser(u string, conns []presence.Conn, seq uint64, exp time.Time) {
	c.put(userKey(u), cacheEntry{conns: conns, expires: exp}, seq)
}

func (c *cache) putRoom(r string, edges []presence.RoomEdge, seq uint64, exp time.Time) {
	c.put(roomKey(r), cacheEntry{edges: edges, expires: exp}, seq)
}

func (c *cache) invalidate(k cacheKey) {
	s := c.shard(k)
	s.mu.Lock()
	s.seq++
	if _, ok := s.m[k]; ok {
		delete(s.m, k)
		c.size.Add(-1)
	}
	s.mu.Unlock()
}

func (c *cache) invalidateOps(ops []presence.Op) {
	for i := range ops {
		if ops[i].User != "" {
			c.invalidate(userKey(ops[i].User))
		}
		if ops[i].Room != "" {
			c.invalidate(roomKey(ops[i].Room))
		}
	}
}

// clear drops everything (and bumps every shard's sequence). Nil-safe.
func (c *cache) clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.seq++
		c.size.Add(-int64(len(s.m)))
		clear(s.m)
		s.mu.Unlock()
	}
}
