package presence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore is the Store on Redis (standalone or Cluster through redis.UniversalClient).
// Several router replicas may share one Redis: every cross-replica decision (lease, user
// online/offline transitions, reaping) is taken atomically inside Redis.
//
// # Schema
//
// P is RedisConfig.Prefix (default "sb:p:"). {…} is a Cluster hash tag: keys with the same
// tag live in one slot, so a Lua script may touch them together.
//
//	P{e.EDGE}:lease          string "EPOCH:TTLMS" with PX TTL — the lease; exists ⇔ edge live
//	P{e.EDGE}:epoch          string, last epoch handed out (no TTL)
//	P{e.EDGE}:EPOCH:c        hash conn id → user            (the edge/epoch's connections)
//	P{e.EDGE}:EPOCH:m        hash conn id → rooms joined    (length-prefixed list)
//	P{e.EDGE}:EPOCH:r        hash room → members on this edge/epoch
//	P{e.EDGE}:EPOCH:reap     string, reaper lock (SET NX PX)
//	P{u.USER}                hash "EDGE|EPOCH|CONNID" → conn record (connected-at, meta);
//	                         field "on" marks a user whose online event fired
//	P{r.ROOM}                hash "EDGE|EPOCH" → members
//	P{g}:edges               set "EDGE|EPOCH" of registrations not yet reaped
//	P{g}:users               integer, users online (moved by the online/offline transitions)
//	Pevents                  pub/sub channel of user events (binary batches)
//
// Apply runs one Lua script on the edge's slot (lease check + the edge's own keys, atomic),
// then pipelines the global effects: one small script per touched user key (HSET/HDEL plus
// the online/offline transition) and one HINCRBY-or-HDEL per touched room, then INCRBY of the
// users counter and one PUBLISH of the batch's events.
//
// Reads never trust entries alone: user and room entries carry EDGE|EPOCH and are filtered
// against a lease cache, so a lapsed edge disappears from queries the moment its lease
// deadline passes, without touching its entries. The cache holds each edge's epoch and lease
// deadline (computed from PTTL, measured from before the request, so it never outlives the
// real key); it is refreshed every RefreshInterval, on Renew/Register/Deregister through this
// store, and synchronously for an edge/epoch it has not seen (another replica's new
// registration). Staleness bound: a Deregister or re-Register done through another replica,
// or a FLUSHALL, is seen within RefreshInterval; a lapse is seen at the deadline.
//
// The background loop (every RefreshInterval) finds registrations in P{g}:edges whose lease is
// gone or held by a newer epoch and reaps them: under a SET NX lock (one replica reaps, a lock
// that expires lets another resume), it deletes each of the edge's user entries through the
// user script (emitting the offline events exactly once), deletes its room fields, then its
// own keys. A FLUSHALL removes the leases: Renew and Apply return ErrLeaseLost, the edge
// registers again and Syncs its full state.
//
// Known limits: if a router dies between the edge script and the global pipeline of an Apply,
// the user/room index may miss or keep entries of that batch until the edge's next Sync or
// reap (entries of dead epochs are still filtered at read time). User events are
// at-most-once per subscriber (pub/sub), but never lost without a word: a broken or silent
// pub/sub connection, or a failed PUBLISH of this replica's events, ends this replica's
// subscriptions (a PUBLISH that fails after the index was written is not seen by the other
// replicas' subscribers: their caches rely on their TTL for those changes); after a FLUSHALL the online events fire again when
// edges re-sync, without offline events before them. Counts.Users is a counter moved by the
// online/offline transitions: a loss that is not atomic across the keys (a failover that
// drops the last writes of one master, a FLUSHALL of some Cluster masters only, racing the
// edges' re-syncs) can leave it off by the users whose transitions were lost, until the
// counter itself is lost too; user resolution, room routing and Counts.Connections/PerEdge
// are not affected (they are re-derived from the edges' Syncs).
type RedisStore struct {
	cfg RedisConfig
	c   redis.UniversalClient

	kEdges, kUsers, chEvents string

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	leaseMu sync.RWMutex
	leases  map[string]leaseInfo

	subMu  sync.Mutex
	closed bool
	subs   map[*memSub]struct{}
	ps     *redis.PubSub
	psDone chan struct{}
}

var _ Store = (*RedisStore)(nil)

// RedisConfig configures a RedisStore. Client is required; zero values of the rest are defaults.
type RedisConfig struct {
	// Client is a *redis.Client or *redis.ClusterClient. Required. Not closed by Close.
	Client redis.UniversalClient
	// Prefix of every key. Zero means "sb:p:". Must not contain '{' or '}'.
	Prefix string
	// LeaseTTL is the lease when Register gets ttl 0. Zero means DefaultLeaseTTL (3s).
	LeaseTTL time.Duration
	// RefreshInterval is how often the lease cache is refreshed and lapsed edges are reaped.
	// Zero means 200ms. Must be below LeaseTTL/2.
	RefreshInterval time.Duration
	// NegativeCacheTTL is how long an edge/epoch found without a lease stays "not live" in the
	// cache before it is looked up again. Zero means 50ms.
	NegativeCacheTTL time.Duration
	// ApplyChunk is the number of ops per Lua call (bounds how long Redis is blocked). Zero
	// means 512.
	ApplyChunk int
	// EventBuffer is the capacity of each Events channel; an event that finds it full ends that
	// subscription (see Store.Events). Zero means 4096.
	EventBuffer int
	// EventPing is how long the events channel may stay silent before it is pinged, and how
	// long a ping may go unanswered before the connection is replaced (ending every
	// subscription: events may have been lost). Zero means 3s.
	EventPing time.Duration
	// DisableReaper turns the background reaper off (the lease cache is still refreshed). Zero
	// value (false) means reaping is on; at least one replica must reap.
	DisableReaper bool
	// Logger receives rare diagnostics (reap failures). Nil means silent.
	Logger *slog.Logger
}

type leaseInfo struct {
	epoch    uint64    // 0: no lease
	deadline time.Time // lease expiry as seen from here (conservative)
	checked  time.Time
}

// NewRedisStore validates cfg and starts the background loop.
func NewRedisStore(cfg RedisConfig) (*RedisStore, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("presence: redis config: nil Client: %w", ErrInvalid)
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("presence: redis config: prefix %q contains a brace: %w", cfg.Prefix, ErrInvalid)
	}
	if cfg.LeaseTTL < 0 || cfg.RefreshInterval < 0 || cfg.NegativeCacheTTL < 0 || cfg.ApplyChunk < 0 || cfg.EventBuffer < 0 || cfg.EventPing < 0 {
		return nil, fmt.Errorf("presence: redis config: negative value: %w", ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sb:p:"
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 200 * time.Millisecond
	}
	if cfg.NegativeCacheTTL == 0 {
		cfg.NegativeCacheTTL = 50 * time.Millisecond
	}
	if cfg.ApplyChunk == 0 {
		cfg.ApplyChunk = 512
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = 4096
	}
	if cfg.EventPing == 0 {
		cfg.EventPing = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RefreshInterval*2 > cfg.LeaseTTL {
		return nil, fmt.Errorf("presence: redis config: RefreshInterval %v not below LeaseTTL/2 (%v): %w",
			cfg.RefreshInterval, cfg.LeaseTTL, ErrInvalid)
	}
	s := &RedisStore{
		cfg:      cfg,
		c:        cfg.Client,
		kEdges:   cfg.Prefix + "{g}:edges",
		kUsers:   cfg.Prefix + "{g}:users",
		chEvents: cfg.Prefix + "events",
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		leases:   make(map[string]leaseInfo),
		subs:     make(map[*memSub]struct{}),
	}
	go s.loop()
	return s, nil
}

// ---- keys ----

func (s *RedisStore) kLease(edge string) string { return s.cfg.Prefix + "{e." + edge + "}:lease" }
func (s *RedisStore) kEpoch(edge string) string { return s.cfg.Prefix + "{e." + edge + "}:epoch" }
func (s *RedisStore) kEdge(edge string, epoch uint64, suffix string) string {
	return s.cfg.Prefix + "{e." + edge + "}:" + strconv.FormatUint(epoch, 10) + ":" + suffix
}
func (s *RedisStore) kUser(user string) string { return s.cfg.Prefix + "{u." + user + "}" }
func (s *RedisStore) kRoom(room string) string { return s.cfg.Prefix + "{r." + room + "}" }

func regMember(edge string, epoch uint64) string {
	return edge + "|" + strconv.FormatUint(epoch, 10)
}

func userField(edge string, epoch uint64, id uint64) string {
	return edge + "|" + strconv.FormatUint(epoch, 10) + "|" + strconv.FormatUint(id, 10)
}

// parseReg parses "EDGE|EPOCH".
func parseReg(f string) (string, uint64, bool) {
	i := strings.LastIndexByte(f, '|')
	if i < 0 {
		return "", 0, false
	}
	ep, err := strconv.ParseUint(f[i+1:], 10, 64)
	return f[:i], ep, err == nil
}

// parseUserField parses "EDGE|EPOCH|CONNID".
func parseUserField(f string) (string, uint64, uint64, bool) {
	i := strings.LastIndexByte(f, '|')
	if i < 0 {
		return "", 0, 0, false
	}
	id, err := strconv.ParseUint(f[i+1:], 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	edge, ep, ok := parseReg(f[:i])
	return edge, ep, id, ok
}

// ---- conn record and event encodings ----

func encodeRecord(at time.Time, meta map[string]string) string {
	b := make([]byte, 0, 16+32*len(meta))
	b = binary.AppendVarint(b, at.UnixNano())
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(meta[k])))
		b = append(b, meta[k]...)
	}
	return string(b)
}

func decodeRecord(s string) (time.Time, map[string]string, bool) {
	b := []byte(s)
	ns, n := binary.Varint(b)
	if n <= 0 {
		return time.Time{}, nil, false
	}
	b = b[n:]
	var meta map[string]string
	for len(b) > 0 {
		k, ok := readBytes(&b)
		if !ok {
			return time.Time{}, nil, false
		}
		v, ok := readBytes(&b)
		if !ok {
			return time.Time{}, nil, false
		}
		if meta == nil {
			meta = make(map[string]string)
		}
		meta[k] = v
	}
	return time.Unix(0, ns), meta, true
}

func readBytes(b *[]byte) (string, bool) {
	l, n := binary.Uvarint(*b)
	if n <= 0 || uint64(len(*b)-n) < l {
		return "", false
	}
	v := string((*b)[n : n+int(l)])
	*b = (*b)[n+int(l):]
	return v, true
}

func encodeEvents(evs []Event) string {
	var b []byte
	for _, ev := range evs {
		b = append(b, byte(ev.Kind))
		b = binary.AppendUvarint(b, uint64(len(ev.User)))
		b = append(b, ev.User...)
		b = binary.AppendUvarint(b, uint64(len(ev.Edge)))
		b = append(b, ev.Edge...)
		b = binary.AppendVarint(b, ev.At.UnixNano())
	}
	return string(b)
}

func decodeEvents(s string) []Event {
	b := []byte(s)
	var out []Event
	for len(b) > 0 {
		kind := EventKind(b[0])
		b = b[1:]
		u, ok := readBytes(&b)
		if !ok {
			return out
		}
		e, ok := readBytes(&b)
		if !ok {
			return out
		}
		ns, n := binary.Varint(b)
		if n <= 0 {
			return out
		}
		b = b[n:]
		out = append(out, Event{Kind: kind, User: u, Edge: e, At: time.Unix(0, ns)})
	}
	return out
}

// ---- helpers ----

func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("presence: redis %s: %w", op, err)
	}
	return fmt.Errorf("presence: redis %s: %w: %w", op, ErrUnavailable, err)
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// scriptCall is one EVALSHA queued in a pipeline, re-sent with EVAL on NOSCRIPT (a Redis
// restart or a new Cluster node empties the script cache).
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// runScripts runs calls in one pipeline (go-redis splits it per Cluster node), keeping per-key
// order, and retries NOSCRIPT failures with EVAL.
func (s *RedisStore) runScripts(ctx context.Context, calls []*scriptCall, extra func(redis.Pipeliner)) error {
	pipe := s.c.Pipeline()
	for _, c := range calls {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	if extra != nil {
		extra(pipe)
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	for _, cmd := range cmds { // a failure other than a script missing from the cache
		if e := cmd.Err(); e != nil && e != redis.Nil && !isNoScript(e) {
			return e
		}
	}
	var retry []*scriptCall
	for _, c := range calls {
		if isNoScript(c.cmd.Err()) {
			retry = append(retry, c)
		}
	}
	if len(retry) > 0 {
		pipe = s.c.Pipeline()
		for _, c := range retry {
			c.cmd = c.script.Eval(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil && err != redis.Nil {
			return err
		}
	}
	return nil
}

func (s *RedisStore) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	return sc.Run(ctx, s.c, keys, args...)
}

// ---- lease cache ----

// liveness answers from the cache: live, and whether the answer is known.
func (s *RedisStore) liveness(edge string, epoch uint64, now time.Time) (live, known bool) {
	s.leaseMu.RLock()
	li, ok := s.leases[edge]
	s.leaseMu.RUnlock()
	if !ok {
		return false, false
	}
	switch {
	case li.epoch > epoch:
		return false, true
	case li.epoch == epoch && now.Before(li.deadline):
		return true, true
	default: // older epoch cached, no lease, or deadline passed: re-check unless checked lately
		return false, now.Sub(li.checked) < s.cfg.NegativeCacheTTL
	}
}

func (s *RedisStore) setLease(edge string, li leaseInfo) {
	s.leaseMu.Lock()
	if cur, ok := s.leases[edge]; !ok || !cur.checked.After(li.checked) || li.epoch > cur.epoch {
		s.leases[edge] = li
	}
	s.leaseMu.Unlock()
}

// lookupLeases reads the leases of edges from Redis into the cache.
func (s *RedisStore) lookupLeases(ctx context.Context, edges []string) error {
	if len(edges) == 0 {
		return nil
	}
	before := time.Now()
	pipe := s.c.Pipeline()
	gets := make([]*redis.StringCmd, len(edges))
	ttls := make([]*redis.DurationCmd, len(edges))
	for i, e := range edges {
		gets[i] = pipe.Get(ctx, s.kLease(e))
		ttls[i] = pipe.PTTL(ctx, s.kLease(e))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return unavailable("lease lookup", err)
	}
	for i, e := range edges {
		li := leaseInfo{checked: before}
		if v, err := gets[i].Result(); err == nil {
			if j := strings.IndexByte(v, ':'); j > 0 {
				li.epoch, _ = strconv.ParseUint(v[:j], 10, 64)
			}
			if d, err := ttls[i].Result(); err == nil && d > 0 {
				li.deadline = before.Add(d)
			}
		}
		s.setLease(e, li)
	}
	return nil
}

// liveFilter returns a function reporting liveness of edge/epoch pairs, after looking up every
// pair in regs the cache cannot answer.
func (s *RedisStore) liveFilter(ctx context.Context, regs map[string]uint64Set) (func(string, uint64) bool, error) {
	now := time.Now()
	var unknown []string
	for edge, eps := range regs {
		for ep := range eps {
			if _, known := s.liveness(edge, ep, now); !known {
				unknown = append(unknown, edge)
				break
			}
		}
	}
	if err := s.lookupLeases(ctx, unknown); err != nil {
		return nil, err
	}
	return func(edge string, ep uint64) bool {
		live, _ := s.liveness(edge, ep, now)
		return live
	}, nil
}

type uint64Set map[uint64]struct{}

func addReg(m map[string]uint64Set, edge string, ep uint64) {
	set := m[edge]
	if set == nil {
		set = make(uint64Set, 1)
		m[edge] = set
	}
	set[ep] = struct{}{}
}

// ---- lease methods ----

// Register implements Store.
func (s *RedisStore) Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error) {
	if edge == "" || ttl < 0 || (ttl > 0 && ttl < time.Millisecond) {
		return 0, fmt.Errorf("presence: register %q ttl %v: %w", edge, ttl, ErrInvalid)
	}
	if ttl == 0 {
		ttl = s.cfg.LeaseTTL
	}
	before := time.Now()
	res, err := s.run(ctx, scriptRegister, []string{s.kLease(edge), s.kEpoch(edge)}, ttl.Milliseconds()).Text()
	if err != nil {
		return 0, unavailable("register", err)
	}
	epoch, err := strconv.ParseUint(res, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("presence: redis register: bad epoch %q: %w", res, ErrUnavailable)
	}
	s.setLease(edge, leaseInfo{epoch: epoch, deadline: before.Add(ttl), checked: before})
	if err := s.c.SAdd(ctx, s.kEdges, regMember(edge, epoch)).Err(); err != nil {
		return 0, unavailable("register", err)
	}
	return epoch, nil
}

// Renew implements Store. It also re-adds the registration to P{g}:edges, so a registration
// survives a router dying between the register script and the SADD.
func (s *RedisStore) Renew(ctx context.Context, edge string, epoch uint64) error {
	if edge == "" {
		return fmt.Errorf("presence: renew: empty edge id: %w", ErrInvalid)
	}
	before := time.Now()
	ttl, err := s.run(ctx, scriptRenew, []string{s.kLease(edge)}, strconv.FormatUint(epoch, 10)).Int64()
	if err != nil {
		return unavailable("renew", err)
	}
	if ttl == 0 {
		return fmt.Errorf("presence: edge %s epoch %d: %w", edge, epoch, ErrLeaseLost)
	}
	s.setLease(edge, leaseInfo{epoch: epoch, deadline: before.Add(time.Duration(ttl) * time.Millisecond), checked: before})
	if err := s.c.SAdd(ctx, s.kEdges, regMember(edge, epoch)).Err(); err != nil {
		return unavailable("renew", err)
	}
	return nil
}

// Deregister implements Store: it drops the lease and reaps the edge/epoch synchronously.
func (s *RedisStore) Deregister(ctx context.Context, edge string, epoch uint64) error {
	if edge == "" {
		return fmt.Errorf("presence: deregister: empty edge id: %w", ErrInvalid)
	}
	before := time.Now()
	if err := s.run(ctx, scriptDeregister, []string{s.kLease(edge)}, strconv.FormatUint(epoch, 10)).Err(); err != nil {
		return unavailable("deregister", err)
	}
	s.leaseMu.Lock()
	if li, ok := s.leases[edge]; ok && li.epoch == epoch {
		s.leases[edge] = leaseInfo{checked: before}
	}
	s.leaseMu.Unlock()
	return s.reap(ctx, edge, epoch, true)
}

// ---- writes ----

// Apply implements Store.
func (s *RedisStore) Apply(ctx context.Context, edge string, epoch uint64, ops []Op) error {
	if edge == "" {
		return fmt.Errorf("presence: apply: empty edge id: %w", ErrInvalid)
	}
	if err := ValidateOps(ops); err != nil {
		return err
	}
	now := time.Now()
	for len(ops) > 0 {
		n := min(len(ops), s.cfg.ApplyChunk)
		if err := s.applyChunk(ctx, edge, epoch, ops[:n], now); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

type userOps struct {
	args    []any // scriptUser triples
	changed bool  // a connection was added or removed (not only refreshed)
}

func (s *RedisStore) applyChunk(ctx context.Context, edge string, epoch uint64, ops []Op, now time.Time) error {
	ep := strconv.FormatUint(epoch, 10)
	args := make([]any, 0, 1+3*len(ops))
	args = append(args, ep)
	for i := range ops {
		op := &ops[i]
		s2 := op.User
		if op.Kind == OpJoin || op.Kind == OpLeave {
			s2 = op.Room
		}
		args = append(args, strconv.Itoa(int(op.Kind)), strconv.FormatUint(op.ConnID, 10), s2)
	}
	keys := []string{s.kLease(edge), s.kEdge(edge, epoch, "c"), s.kEdge(edge, epoch, "m"), s.kEdge(edge, epoch, "r")}
	out, err := s.run(ctx, scriptApply, keys, args...).Text()
	if err != nil {
		if strings.Contains(err.Error(), "LEASELOST") {
			return fmt.Errorf("presence: edge %s epoch %d: %w", edge, epoch, ErrLeaseLost)
		}
		return unavailable("apply", err)
	}
	users := make(map[string]*userOps)
	var order []string
	rooms := make(map[string]int)
	var roomOrder []string
	addUser := func(u string, changed bool, a ...any) {
		uo := users[u]
		if uo == nil {
			uo = &userOps{}
			users[u] = uo
			order = append(order, u)
		}
		uo.args = append(uo.args, a...)
		uo.changed = uo.changed || changed
	}
	res, perr := parseApplyResult(out)
	if perr != nil {
		return fmt.Errorf("presence: apply: %w: %w", ErrUnavailable, perr)
	}
	for i := 0; i+2 < len(res); i += 3 {
		switch res[i] {
		case "c":
			idx, _ := strconv.Atoi(res[i+1])
			if idx < 0 || idx >= len(ops) {
				continue
			}
			op := &ops[idx]
			at := op.At
			if at.IsZero() {
				at = now
			}
			addUser(op.User, res[i+2] != "r", "a", userField(edge, epoch, op.ConnID), encodeRecord(at, op.Meta))
		case "d":
			id, _ := strconv.ParseUint(res[i+1], 10, 64)
			addUser(res[i+2], true, "d", userField(edge, epoch, id), "")
		case "j", "l":
			d := 1
			if res[i] == "l" {
				d = -1
			}
			if _, ok := rooms[res[i+1]]; !ok {
				roomOrder = append(roomOrder, res[i+1])
			}
			rooms[res[i+1]] += d
		}
	}
	return s.writeGlobal(ctx, edge, epoch, users, order, rooms, roomOrder, now)
}

// parseApplyResult splits scriptApply's result into kind, field, field triples.
func parseApplyResult(out string) ([]string, error) {
	res := make([]string, 0, 24)
	field := func() (string, bool) {
		i := strings.IndexByte(out, ':')
		if i <= 0 {
			return "", false
		}
		l, err := strconv.Atoi(out[:i])
		if err != nil || l < 0 || i+1+l > len(out) {
			return "", false
		}
		f := out[i+1 : i+1+l]
		out = out[i+1+l:]
		return f, true
	}
	for len(out) > 0 {
		kind := out[:1]
		out = out[1:]
		a, ok1 := field()
		b, ok2 := field()
		if !ok1 || !ok2 {
			return nil, errors.New("malformed apply script result")
		}
		res = append(res, kind, a, b)
	}
	return res, nil
}

// writeGlobal pipelines the user and room index changes and publishes the resulting events.
//
// A user whose changes in this batch are all additions (the common connect) is written with
// plain commands, HSET of its entries then HSETNX of "on" (1: the online transition), which
// is cheaper for Redis than a script call and still decides the transition atomically: a
// concurrent removal (scriptUser) either sees the new entry (HLEN > 1: no offline) or deleted
// the key before the HSET (then HSETNX fires the online event again). Users with removals go
// through scriptUser. Positive room deltas are plain HINCRBYs; negative ones use scriptRoom,
// which drops the field at zero.
func (s *RedisStore) writeGlobal(ctx context.Context, edge string, epoch uint64, users map[string]*userOps, order []string,
	rooms map[string]int, roomOrder []string, now time.Time) error {
	calls := make([]*scriptCall, 0, len(order)+len(roomOrder))
	callOf := make([]int, len(order)) // index in calls, or -1 for a plain-command user
	plain := 0
	for i, u := range order {
		callOf[i] = -1
		args := users[u].args
		for j := 0; j < len(args); j += 3 {
			if args[j] != "a" {
				callOf[i] = len(calls)
				calls = append(calls, &scriptCall{script: scriptUser, keys: []string{s.kUser(u)}, args: args})
				break
			}
		}
		if callOf[i] < 0 {
			plain++
		}
	}
	reg := regMember(edge, epoch)
	var incr []string
	for _, r := range roomOrder {
		switch d := rooms[r]; {
		case d > 0:
			incr = append(incr, r)
		case d < 0:
			calls = append(calls, &scriptCall{script: scriptRoom, keys: []string{s.kRoom(r)}, args: []any{reg, d}})
		}
	}
	if len(calls) == 0 && plain == 0 && len(incr) == 0 {
		return nil
	}
	onCmds := make([]*redis.BoolCmd, len(order))
	extra := func(pipe redis.Pipeliner) {
		for i, u := range order {
			if callOf[i] >= 0 {
				continue
			}
			args := users[u].args
			kv := make([]any, 0, len(args)/3*2)
			for j := 0; j+2 < len(args); j += 3 {
				kv = append(kv, args[j+1], args[j+2])
			}
			k := s.kUser(u)
			pipe.HSet(ctx, k, kv...)
			onCmds[i] = pipe.HSetNX(ctx, k, "on", "1")
		}
		for _, r := range incr {
			pipe.HIncrBy(ctx, s.kRoom(r), reg, int64(rooms[r]))
		}
	}
	if err := s.runScripts(ctx, calls, extra); err != nil {
		return unavailable("apply index", err)
	}
	var evs []Event
	net := 0
	for i, u := range order {
		var tr string
		if callOf[i] >= 0 {
			tr, _ = calls[callOf[i]].cmd.Text()
		} else if onCmds[i].Val() {
			tr = "+"
		}
		for _, c := range tr {
			kind := EventUserOnline
			net++
			if c == '-' {
				kind = EventUserOffline
				net -= 2
			}
			evs = append(evs, Event{Kind: kind, User: u, Edge: edge, At: now})
		}
		if tr == "" && users[u].changed {
			evs = append(evs, Event{Kind: EventUserChanged, User: u, Edge: edge, At: now})
		}
	}
	if len(evs) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	if net != 0 {
		pipe.IncrBy(ctx, s.kUsers, int64(net))
	}
	pipe.Publish(ctx, s.chEvents, encodeEvents(evs))
	if _, err := pipe.Exec(ctx); err != nil {
		// The change is written but its events are not published, and the edge's retry (a
		// Sync) finds nothing left to change: tell this replica's subscribers that they missed
		// events (see the type's known limits for the other replicas').
		s.endSubs("publishing events failed", err)
		return unavailable("apply events", err)
	}
	return nil
}

// Sync implements Store: it reads the edge/epoch's current state and applies the difference.
// The edge must not Apply concurrently with its own Sync.
func (s *RedisStore) Sync(ctx context.Context, edge string, epoch uint64, conns []Conn, rooms map[string][]uint64) error {
	if edge == "" {
		return fmt.Errorf("presence: sync: empty edge id: %w", ErrInvalid)
	}
	cur, err := s.snapshot(ctx, edge, epoch)
	if err != nil {
		return err
	}
	ops, err := SyncOps(cur, conns, rooms)
	if err != nil {
		return err
	}
	if len(ops) == 0 {
		// Still check the lease, as every write does.
		return s.Apply(ctx, edge, epoch, []Op{{Kind: OpDisconnect, ConnID: 0}})
	}
	return s.Apply(ctx, edge, epoch, ops)
}

func (s *RedisStore) snapshot(ctx context.Context, edge string, epoch uint64) (map[uint64]SyncConn, error) {
	pipe := s.c.Pipeline()
	cc := pipe.HGetAll(ctx, s.kEdge(edge, epoch, "c"))
	mc := pipe.HGetAll(ctx, s.kEdge(edge, epoch, "m"))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable("sync read", err)
	}
	cur := make(map[uint64]SyncConn, len(cc.Val()))
	for k, u := range cc.Val() {
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			continue
		}
		cur[id] = SyncConn{User: u, Rooms: parseRoomList(mc.Val()[k])}
	}
	return cur, nil
}

func parseRoomList(rs string) []string {
	var out []string
	for len(rs) > 0 {
		i := strings.IndexByte(rs, ':')
		if i <= 0 {
			return out
		}
		l, err := strconv.Atoi(rs[:i])
		if err != nil || l < 0 || i+1+l > len(rs) {
			return out
		}
		out = append(out, rs[i+1:i+1+l])
		rs = rs[i+1+l:]
	}
	return out
}

// ---- reads ----

// ResolveUsers implements Store: one pipelined HGETALL per user, filtered by the lease cache.
func (s *RedisStore) ResolveUsers(ctx context.Context, users []string) (map[string][]Conn, error) {
	out := make(map[string][]Conn)
	if len(users) == 0 {
		return out, nil
	}
	uniq := make([]string, 0, len(users))
	seen := make(map[string]struct{}, len(users))
	for _, u := range users {
		if _, ok := seen[u]; !ok {
			seen[u] = struct{}{}
			uniq = append(uniq, u)
		}
	}
	pipe := s.c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(uniq))
	for i, u := range uniq {
		cmds[i] = pipe.HGetAll(ctx, s.kUser(u))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, unavailable("resolve", err)
	}
	regs := make(map[string]uint64Set)
	for _, c := range cmds {
		for f := range c.Val() {
			if edge, ep, _, ok := parseUserField(f); ok {
				addReg(regs, edge, ep)
			}
		}
	}
	live, err := s.liveFilter(ctx, regs)
	if err != nil {
		return nil, err
	}
	for i, u := range uniq {
		var cs []Conn
		for f, v := range cmds[i].Val() {
			edge, ep, id, ok := parseUserField(f)
			if !ok || !live(edge, ep) {
				continue
			}
			at, meta, ok := decodeRecord(v)
			if !ok {
				continue
			}
			cs = append(cs, Conn{Edge: edge, Epoch: ep, ConnID: id, User: u, Meta: meta, ConnectedAt: at})
		}
		if len(cs) > 0 {
			SortConns(cs)
			out[u] = cs
		}
	}
	return out, nil
}

func (s *RedisStore) roomFields(ctx context.Context, rooms []string) ([]map[string]string, func(string, uint64) bool, error) {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(rooms))
	for i, r := range rooms {
		cmds[i] = pipe.HGetAll(ctx, s.kRoom(r))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, nil, unavailable("room read", err)
	}
	regs := make(map[string]uint64Set)
	vals := make([]map[string]string, len(rooms))
	for i, c := range cmds {
		vals[i] = c.Val()
		for f := range vals[i] {
			if edge, ep, ok := parseReg(f); ok {
				addReg(regs, edge, ep)
			}
		}
	}
	live, err := s.liveFilter(ctx, regs)
	if err != nil {
		return nil, nil, err
	}
	return vals, live, nil
}

// RoomEdges implements Store.
func (s *RedisStore) RoomEdges(ctx context.Context, room string) ([]RoomEdge, error) {
	vals, live, err := s.roomFields(ctx, []string{room})
	if err != nil {
		return nil, err
	}
	var out []RoomEdge
	for f, v := range vals[0] {
		edge, ep, ok := parseReg(f)
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n <= 0 || !live(edge, ep) {
			continue
		}
		out = append(out, RoomEdge{Edge: edge, Epoch: ep, Members: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Edge < out[j].Edge })
	return out, nil
}

// RoomCounts implements Store.
func (s *RedisStore) RoomCounts(ctx context.Context, rooms []string) (map[string]int, error) {
	out := make(map[string]int)
	if len(rooms) == 0 {
		return out, nil
	}
	vals, live, err := s.roomFields(ctx, rooms)
	if err != nil {
		return nil, err
	}
	for i, r := range rooms {
		total := 0
		for f, v := range vals[i] {
			edge, ep, ok := parseReg(f)
			n, err := strconv.Atoi(v)
			if ok && err == nil && n > 0 && live(edge, ep) {
				total += n
			}
		}
		if total > 0 {
			out[r] = total
		}
	}
	return out, nil
}

// liveRegs reads the registration set and the leases fresh from Redis and returns the live
// edge -> epoch.
func (s *RedisStore) liveRegs(ctx context.Context) (map[string]uint64, []string, error) {
	members, err := s.c.SMembers(ctx, s.kEdges).Result()
	if err != nil && err != redis.Nil {
		return nil, nil, unavailable("edges", err)
	}
	seen := map[string]struct{}{}
	var edges []string
	for _, m := range members {
		if edge, _, ok := parseReg(m); ok {
			if _, dup := seen[edge]; !dup {
				seen[edge] = struct{}{}
				edges = append(edges, edge)
			}
		}
	}
	if err := s.lookupLeases(ctx, edges); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	live := make(map[string]uint64)
	s.leaseMu.RLock()
	for _, e := range edges {
		if li := s.leases[e]; li.epoch != 0 && now.Before(li.deadline) {
			live[e] = li.epoch
		}
	}
	s.leaseMu.RUnlock()
	return live, members, nil
}

// Edges implements Store (fresh from Redis).
func (s *RedisStore) Edges(ctx context.Context) (map[string]uint64, error) {
	live, _, err := s.liveRegs(ctx)
	return live, err
}

// Online implements Store. Connections and PerEdge are exact for live leases; Users is the
// counter moved by the online/offline transitions, so a lapsed edge's users leave it when the
// reaper has run (within RefreshInterval plus the reap time after the lapse).
func (s *RedisStore) Online(ctx context.Context) (Counts, error) {
	live, _, err := s.liveRegs(ctx)
	if err != nil {
		return Counts{}, err
	}
	pipe := s.c.Pipeline()
	lens := make(map[string]*redis.IntCmd, len(live))
	for e, ep := range live {
		lens[e] = pipe.HLen(ctx, s.kEdge(e, ep, "c"))
	}
	users := pipe.Get(ctx, s.kUsers)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return Counts{}, unavailable("online", err)
	}
	c := Counts{PerEdge: make(map[string]int, len(live))}
	for e, cmd := range lens {
		c.PerEdge[e] = int(cmd.Val())
		c.Connections += int(cmd.Val())
	}
	if n, err := users.Int(); err == nil && n > 0 {
		c.Users = n
	}
	return c, nil
}

// ---- background loop and reaper ----

func (s *RedisStore) loop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.RefreshInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var lastWarn time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if err := s.refresh(ctx); err != nil && ctx.Err() == nil && time.Since(lastWarn) > 10*time.Second {
			lastWarn = time.Now()
			s.cfg.Logger.Warn("presence: refresh/reap failed", "err", err)
		}
	}
}

// refresh reloads the lease cache and reaps registrations whose lease is gone.
func (s *RedisStore) refresh(ctx context.Context) error {
	_, members, err := s.liveRegs(ctx)
	if err != nil {
		return err
	}
	if s.cfg.DisableReaper {
		return nil
	}
	now := time.Now()
	var errs []error
	for _, m := range members {
		edge, ep, ok := parseReg(m)
		if !ok {
			_ = s.c.SRem(ctx, s.kEdges, m).Err()
			continue
		}
		s.leaseMu.RLock()
		li := s.leases[edge]
		s.leaseMu.RUnlock()
		if li.epoch == ep && now.Before(li.deadline) {
			continue
		}
		if li.epoch == ep {
			// Deadline passed in the cache but the key may be about to expire: let Redis
			// decide (the key is gone once PTTL says so).
			continue
		}
		if err := s.reap(ctx, edge, ep, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reap removes every entry of edge/epoch (whose lease is gone) and emits the offline events.
// force skips the lock (Deregister: the caller owns the lease it just dropped).
func (s *RedisStore) reap(ctx context.Context, edge string, epoch uint64, force bool) error {
	lock := s.kEdge(edge, epoch, "reap")
	if !force {
		ok, err := s.c.SetNX(ctx, lock, "1", 30*time.Second).Result()
		if err != nil {
			return unavailable("reap lock", err)
		}
		if !ok {
			return nil
		}
		s.cfg.Logger.Info("presence: reaping a registration whose lease is gone", "edge", edge, "epoch", epoch)
	}
	kc, km, kr := s.kEdge(edge, epoch, "c"), s.kEdge(edge, epoch, "m"), s.kEdge(edge, epoch, "r")
	now := time.Now()
	var cursor uint64
	for {
		kv, next, err := s.c.HScan(ctx, kc, cursor, "*", 512).Result()
		if err != nil {
			return unavailable("reap scan", err)
		}
		users := make(map[string]*userOps)
		var order []string
		for i := 0; i+1 < len(kv); i += 2 {
			id, err := strconv.ParseUint(kv[i], 10, 64)
			if err != nil {
				continue
			}
			u := kv[i+1]
			uo := users[u]
			if uo == nil {
				uo = &userOps{changed: true}
				users[u] = uo
				order = append(order, u)
			}
			uo.args = append(uo.args, "d", userField(edge, epoch, id), "")
		}
		if err := s.writeGlobal(ctx, edge, epoch, users, order, nil, nil, now); err != nil {
			return err
		}
		cursor = next
		if cursor == 0 {
			break
		}
	}
	rooms, err := s.c.HKeys(ctx, kr).Result()
	if err != nil && err != redis.Nil {
		return unavailable("reap rooms", err)
	}
	reg := regMember(edge, epoch)
	pipe := s.c.Pipeline()
	for _, r := range rooms {
		pipe.HDel(ctx, s.kRoom(r), reg)
	}
	pipe.Del(ctx, kc, km, kr)
	pipe.SRem(ctx, s.kEdges, reg)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return unavailable("reap", err)
	}
	return nil
}

// ---- events ----

// Events implements Store. Events of every replica arrive through the Redis channel.
//
// Pub/sub is at-most-once, and go-redis re-subscribes after a broken connection on its own,
// silently: what was published in between is gone. So every gap ends all subscriptions (their
// receivers learn that they missed events, as for a full buffer): a receive error, a ping
// unanswered for EventPing (the connection is then replaced), and every re-subscription
// confirmation (a subscriber that joined while the channel was down had been confirmed
// without receiving anything).
func (s *RedisStore) Events(ctx context.Context) (<-chan Event, error) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if s.ps == nil {
		ps, err := s.subscribe(ctx)
		if err != nil {
			return nil, err
		}
		s.ps = ps
		s.psDone = make(chan struct{})
		go s.fanout(ps)
	}
	sub := &memSub{ch: make(chan Event, s.cfg.EventBuffer)}
	s.subs[sub] = struct{}{}
	context.AfterFunc(ctx, func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		if _, ok := s.subs[sub]; ok {
			delete(s.subs, sub)
			close(sub.ch)
		}
	})
	return sub.ch, nil
}

// subscribe subscribes to the events channel and waits for Redis's confirmation.
func (s *RedisStore) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ps := s.c.Subscribe(ctx, s.chEvents)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, unavailable("subscribe", err)
	}
	return ps, nil
}

// fanout reads the events channel (one PubSub, replaced when its connection is found dead)
// and hands every event to every subscriber, until Close.
func (s *RedisStore) fanout(ps *redis.PubSub) {
	defer close(s.psDone)
	ctx := context.Background()
	pinged, errs := false, 0
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.cfg.EventPing)
		if err != nil {
			var ne interface{ Timeout() bool }
			timeout := errors.As(err, &ne) && ne.Timeout()
			if errors.Is(err, redis.ErrClosed) {
				if s.isClosed() {
					return
				}
				timeout, pinged = true, true // not ours to close: replace it
			}
			if timeout {
				if !pinged {
					pinged = true
					if ps.Ping(ctx) == nil {
						continue // the PONG (or any message) clears pinged
					}
				}
				// No answer for a whole interval: a dead connection that no read will report.
				s.endSubs("no answer to a ping", err)
				next, ok := s.resubscribe(ps)
				if !ok {
					return
				}
				ps, pinged = next, false
				continue
			}
			// Broken connection: the next receive re-subscribes (go-redis); events in between
			// are lost.
			s.endSubs("receive failed", err)
			errs++
			if errs > 1 && !s.pause(100*time.Millisecond) {
				return
			}
			continue
		}
		pinged, errs = false, 0
		switch m := msg.(type) {
		case *redis.Message:
			s.deliver(decodeEvents(m.Payload))
		case *redis.Subscription:
			if m.Kind == "subscribe" { // a re-subscription: the channel was down until now
				s.endSubs("re-subscribed", nil)
			}
		}
	}
}

// deliver hands evs to every subscriber; one whose buffer is full loses its subscription
// instead of the event.
func (s *RedisStore) deliver(evs []Event) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for sub := range s.subs {
		for _, ev := range evs {
			select {
			case sub.ch <- ev:
				continue
			default: // a whole buffer behind: end the subscription rather than drop the event
				delete(s.subs, sub)
				close(sub.ch)
			}
			break
		}
	}
}

// endSubs ends every subscription: events may have been lost.
func (s *RedisStore) endSubs(why string, err error) {
	s.subMu.Lock()
	n := len(s.subs)
	for sub := range s.subs {
		delete(s.subs, sub)
		close(sub.ch)
	}
	s.subMu.Unlock()
	if s.cfg.Logger != nil && n > 0 {
		s.cfg.Logger.Warn("presence: events channel interrupted, subscriptions ended", "why", why, "subscriptions", n, "err", err)
	}
}

// resubscribe replaces ps (closed) with a new subscription, retrying until it is confirmed or
// the store closes (ok false).
func (s *RedisStore) resubscribe(ps *redis.PubSub) (*redis.PubSub, bool) {
	_ = ps.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.EventPing)
		next, err := s.subscribe(ctx)
		cancel()
		if err == nil {
			s.subMu.Lock()
			closed := s.closed
			if !closed {
				s.ps = next
			}
			s.subMu.Unlock()
			if closed {
				_ = next.Close()
				return nil, false
			}
			s.endSubs("re-subscribed", nil) // subscribers that joined while it was down
			return next, true
		}
		if !s.pause(100 * time.Millisecond) {
			return nil, false
		}
	}
}

func (s *RedisStore) isClosed() bool {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return s.closed
}

// pause waits d; false when the store is closing.
func (s *RedisStore) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stop:
		return false
	case <-t.C:
		return !s.isClosed()
	}
}

// Close implements Store. It stops the background loop and the event subscription; it does
// not close the Redis client.
func (s *RedisStore) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.subMu.Lock()
		s.closed = true
		ps, psDone := s.ps, s.psDone
		for sub := range s.subs {
			delete(s.subs, sub)
			close(sub.ch)
		}
		s.subMu.Unlock()
		if ps != nil {
			_ = ps.Close()
			<-psDone
		}
	})
	return nil
}
