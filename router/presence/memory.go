package presence

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// DefaultLeaseTTL is the lease time used when Register is called with ttl 0 and the store's
// config does not say otherwise.
const DefaultLeaseTTL = 3 * time.Second

// MemoryConfig configures a MemoryStore. The zero value is valid.
type MemoryConfig struct {
	// LeaseTTL is the lease used when Register gets ttl 0. Zero means DefaultLeaseTTL (3s).
	LeaseTTL time.Duration
	// ReapInterval is how often lapsed edges are removed and their users' offline events
	// emitted. Queries hide a lapsed edge at once regardless. Zero means 100ms.
	ReapInterval time.Duration
	// EventBuffer is the capacity of each Events channel; an event that finds it full ends
	// that subscription (see Store.Events).
	// Zero means 4096.
	EventBuffer int
	// Logger receives rare diagnostics. Nil means silent.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

func (c *MemoryConfig) fill() error {
	if c.LeaseTTL < 0 || c.ReapInterval < 0 || c.EventBuffer < 0 {
		return fmt.Errorf("presence: memory config: negative value: %w", ErrInvalid)
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.ReapInterval == 0 {
		c.ReapInterval = 100 * time.Millisecond
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// MemoryStore is the in-process Store used by the embedded mode and by tests. It has the same
// semantics as RedisStore: a lapsed lease hides the edge's entries at once (queries filter by
// lease deadline) and a background reaper removes them and emits the offline events.
type MemoryStore struct {
	cfg  MemoryConfig
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	closed    bool
	edges     map[string]*memEdge // current registration per edge id (may be lapsed, not yet reaped)
	lastEpoch map[string]uint64
	users     map[string]map[*memConn]struct{} // user -> conns on any registration
	rooms     map[string]map[*memEdge]struct{} // room -> registrations holding members
	subs      map[*memSub]struct{}
}

var _ Store = (*MemoryStore)(nil)

type memEdge struct {
	id      string
	epoch   uint64
	ttl     time.Duration
	expires time.Time
	conns   map[uint64]*memConn
	rooms   map[string]int // room -> members on this edge
}

type memConn struct {
	edge  *memEdge
	c     Conn
	rooms map[string]struct{}
}

type memSub struct {
	ch chan Event
}

// NewMemoryStore returns a running MemoryStore. Close stops its reaper.
func NewMemoryStore(cfg MemoryConfig) (*MemoryStore, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &MemoryStore{
		cfg:       cfg,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		edges:     make(map[string]*memEdge),
		lastEpoch: make(map[string]uint64),
		users:     make(map[string]map[*memConn]struct{}),
		rooms:     make(map[string]map[*memEdge]struct{}),
		subs:      make(map[*memSub]struct{}),
	}
	go s.reaper()
	return s, nil
}

var errClosed = fmt.Errorf("presence: store closed: %w", ErrUnavailable)

func (s *MemoryStore) reaper() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			now := s.cfg.Now()
			for id, e := range s.edges {
				if !now.Before(e.expires) {
					delete(s.edges, id)
					s.dropEdgeLocked(e, now)
				}
			}
			s.mu.Unlock()
		}
	}
}

// live reports whether e's lease holds at now. mu held.
func (e *memEdge) live(now time.Time) bool { return now.Before(e.expires) }

// current returns the live registration edge/epoch or ErrLeaseLost. mu held.
func (s *MemoryStore) current(edge string, epoch uint64) (*memEdge, error) {
	if s.closed {
		return nil, errClosed
	}
	if edge == "" {
		return nil, fmt.Errorf("presence: empty edge id: %w", ErrInvalid)
	}
	e := s.edges[edge]
	if e == nil || e.epoch != epoch || !e.live(s.cfg.Now()) {
		return nil, fmt.Errorf("presence: edge %s epoch %d: %w", edge, epoch, ErrLeaseLost)
	}
	return e, nil
}

// lockCurrent checks ctx, locks s and returns the live registration edge/epoch (see
// current); unless it returns an error, the caller holds s.mu.
func (s *MemoryStore) lockCurrent(ctx context.Context, edge string, epoch uint64) (*memEdge, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	e, err := s.current(edge, epoch)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return e, nil
}

// applyAllLocked applies ops to e at the current time. mu held.
func (s *MemoryStore) applyAllLocked(e *memEdge, ops []Op) {
	now := s.cfg.Now()
	for i := range ops {
		s.applyLocked(e, &ops[i], now)
	}
}

// Register implements Store.
func (s *MemoryStore) Register(ctx context.Context, edge string, ttl time.Duration) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if edge == "" || ttl < 0 {
		return 0, fmt.Errorf("presence: register %q ttl %v: %w", edge, ttl, ErrInvalid)
	}
	if ttl == 0 {
		ttl = s.cfg.LeaseTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errClosed
	}
	now := s.cfg.Now()
	epoch := uint64(now.UnixMicro())
	if last := s.lastEpoch[edge]; epoch <= last {
		epoch = last + 1
	}
	s.lastEpoch[edge] = epoch
	if old := s.edges[edge]; old != nil {
		s.dropEdgeLocked(old, now)
	}
	s.edges[edge] = &memEdge{
		id: edge, epoch: epoch, ttl: ttl, expires: now.Add(ttl),
		conns: make(map[uint64]*memConn), rooms: make(map[string]int),
	}
	return epoch, nil
}

// Renew implements Store.
func (s *MemoryStore) Renew(ctx context.Context, edge string, epoch uint64) error {
	e, err := s.lockCurrent(ctx, edge, epoch)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	e.expires = s.cfg.Now().Add(e.ttl)
	return nil
}

// Deregister implements Store. Deregistering a lease that is already gone is not an error.
func (s *MemoryStore) Deregister(ctx context.Context, edge string, epoch uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if edge == "" {
		return fmt.Errorf("presence: deregister: empty edge id: %w", ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if e := s.edges[edge]; e != nil && e.epoch == epoch {
		delete(s.edges, edge)
		s.dropEdgeLocked(e, s.cfg.Now())
	}
	return nil
}

// ValidateOps checks a batch before anything is applied. Exported for other Store
// implementations.
func ValidateOps(ops []Op) error {
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case OpConnect:
			if op.User == "" {
				return fmt.Errorf("presence: op %d: connect without user: %w", i, ErrInvalid)
			}
		case OpDisconnect:
		case OpJoin, OpLeave:
			if op.Room == "" {
				return fmt.Errorf("presence: op %d: join/leave without room: %w", i, ErrInvalid)
			}
		default:
			return fmt.Errorf("presence: op %d: unknown kind %d: %w", i, op.Kind, ErrInvalid)
		}
	}
	return nil
}

// Apply implements Store.
func (s *MemoryStore) Apply(ctx context.Context, edge string, epoch uint64, ops []Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateOps(ops); err != nil {
		return err
	}
	e, err := s.lockCurrent(ctx, edge, epoch)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.applyAllLocked(e, ops)
	return nil
}

func (s *MemoryStore) applyLocked(e *memEdge, op *Op, now time.Time) {
	at := op.At
	if at.IsZero() {
		at = now
	}
	switch op.Kind {
	case OpConnect:
		if c := e.conns[op.ConnID]; c != nil {
			if c.c.User == op.User {
				c.c.Meta = copyMeta(op.Meta)
				c.c.ConnectedAt = at
				return
			}
			s.disconnectLocked(e, c, now)
		}
		c := &memConn{edge: e, rooms: make(map[string]struct{}), c: Conn{
			Edge: e.id, Epoch: e.epoch, ConnID: op.ConnID, User: op.User,
			Meta: copyMeta(op.Meta), ConnectedAt: at,
		}}
		e.conns[op.ConnID] = c
		set := s.users[op.User]
		if set == nil {
			set = make(map[*memConn]struct{})
			s.users[op.User] = set
			s.emitLocked(Event{Kind: EventUserOnline, User: op.User, Edge: e.id, At: now})
		} else {
			s.emitLocked(Event{Kind: EventUserChanged, User: op.User, Edge: e.id, At: now})
		}
		set[c] = struct{}{}
	case OpDisconnect:
		if c := e.conns[op.ConnID]; c != nil {
			s.disconnectLocked(e, c, now)
		}
	case OpJoin:
		c := e.conns[op.ConnID]
		if c == nil {
			return // joins of unknown connections are ignored
		}
		if _, ok := c.rooms[op.Room]; ok {
			return
		}
		c.rooms[op.Room] = struct{}{}
		e.rooms[op.Room]++
		set := s.rooms[op.Room]
		if set == nil {
			set = make(map[*memEdge]struct{})
			s.rooms[op.Room] = set
		}
		set[e] = struct{}{}
	case OpLeave:
		c := e.conns[op.ConnID]
		if c == nil {
			return
		}
		if _, ok := c.rooms[op.Room]; !ok {
			return
		}
		s.leaveLocked(e, c, op.Room)
	}
}

func (s *MemoryStore) leaveLocked(e *memEdge, c *memConn, room string) {
	delete(c.rooms, room)
	e.rooms[room]--
	if e.rooms[room] <= 0 {
		delete(e.rooms, room)
		if set := s.rooms[room]; set != nil {
			delete(set, e)
			if len(set) == 0 {
				delete(s.rooms, room)
			}
		}
	}
}

func (s *MemoryStore) disconnectLocked(e *memEdge, c *memConn, now time.Time) {
	for room := range c.rooms {
		s.leaveLocked(e, c, room)
	}
	delete(e.conns, c.c.ConnID)
	if set := s.users[c.c.User]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(s.users, c.c.User)
			s.emitLocked(Event{Kind: EventUserOffline, User: c.c.User, Edge: e.id, At: now})
		} else {
			s.emitLocked(Event{Kind: EventUserChanged, User: c.c.User, Edge: e.id, At: now})
		}
	}
}

// dropEdgeLocked removes every entry of registration e and emits offline events. mu held.
func (s *MemoryStore) dropEdgeLocked(e *memEdge, now time.Time) {
	for _, c := range e.conns {
		s.disconnectLocked(e, c, now)
	}
}

// Sync implements Store: the edge/epoch state becomes exactly conns and rooms. Conn.Edge and
// Conn.Epoch are ignored; room members that are not in conns are ignored.
func (s *MemoryStore) Sync(ctx context.Context, edge string, epoch uint64, conns []Conn, rooms map[string][]uint64) error {
	e, err := s.lockCurrent(ctx, edge, epoch)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	ops, err := SyncOps(s.snapshotLocked(e), conns, rooms)
	if err != nil {
		return err
	}
	s.applyAllLocked(e, ops)
	return nil
}

func (s *MemoryStore) snapshotLocked(e *memEdge) map[uint64]SyncConn {
	cur := make(map[uint64]SyncConn, len(e.conns))
	for id, c := range e.conns {
		rs := make([]string, 0, len(c.rooms))
		for r := range c.rooms {
			rs = append(rs, r)
		}
		cur[id] = SyncConn{User: c.c.User, Rooms: rs}
	}
	return cur
}

// SyncConn is the current state of one connection as a store knows it, input to SyncOps.
type SyncConn struct {
	User  string
	Rooms []string
}

// SyncOps computes the ops that turn the current state cur into the full state conns/rooms:
// disconnects first (connections gone or with another user), then connects (all conns, which
// also refreshes metadata), then leaves and joins. Shared by the Store implementations.
func SyncOps(cur map[uint64]SyncConn, conns []Conn, rooms map[string][]uint64) ([]Op, error) {
	want := make(map[uint64]*Conn, len(conns))
	for i := range conns {
		c := &conns[i]
		if c.User == "" {
			return nil, fmt.Errorf("presence: sync: conn %d without user: %w", c.ConnID, ErrInvalid)
		}
		if _, dup := want[c.ConnID]; dup {
			return nil, fmt.Errorf("presence: sync: duplicate conn %d: %w", c.ConnID, ErrInvalid)
		}
		want[c.ConnID] = c
	}
	wantRooms := make(map[uint64]map[string]struct{})
	for room, ids := range rooms {
		if room == "" {
			return nil, fmt.Errorf("presence: sync: empty room: %w", ErrInvalid)
		}
		for _, id := range ids {
			if want[id] == nil {
				continue
			}
			m := wantRooms[id]
			if m == nil {
				m = make(map[string]struct{})
				wantRooms[id] = m
			}
			m[room] = struct{}{}
		}
	}
	var ops []Op
	kept := make(map[uint64]bool, len(cur))
	for id, c := range cur {
		if w := want[id]; w == nil || w.User != c.User {
			ops = append(ops, Op{Kind: OpDisconnect, ConnID: id, User: c.User})
		} else {
			kept[id] = true
		}
	}
	for i := range conns {
		c := &conns[i]
		ops = append(ops, Op{Kind: OpConnect, ConnID: c.ConnID, User: c.User, Meta: c.Meta, At: c.ConnectedAt})
	}
	for id := range kept {
		for _, r := range cur[id].Rooms {
			if _, ok := wantRooms[id][r]; !ok {
				ops = append(ops, Op{Kind: OpLeave, ConnID: id, User: cur[id].User, Room: r})
			}
		}
	}
	for i := range conns {
		id := conns[i].ConnID
		have := map[string]struct{}{}
		if kept[id] {
			for _, r := range cur[id].Rooms {
				have[r] = struct{}{}
			}
		}
		rs := make([]string, 0, len(wantRooms[id]))
		for r := range wantRooms[id] {
			if _, ok := have[r]; !ok {
				rs = append(rs, r)
			}
		}
		sort.Strings(rs)
		for _, r := range rs {
			ops = append(ops, Op{Kind: OpJoin, ConnID: id, User: conns[i].User, Room: r})
		}
	}
	return ops, nil
}

// lockOpen checks ctx and locks s; unless it returns an error (ctx done, or s closed), the
// caller holds s.mu and gets the time its queries see.
func (s *MemoryStore) lockOpen(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return time.Time{}, errClosed
	}
	return s.cfg.Now(), nil
}

// ResolveUsers implements Store.
func (s *MemoryStore) ResolveUsers(ctx context.Context, users []string) (map[string][]Conn, error) {
	now, err := s.lockOpen(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := make(map[string][]Conn)
	for _, u := range users {
		if _, done := out[u]; done {
			continue
		}
		var cs []Conn
		for c := range s.users[u] {
			if c.edge.live(now) && s.edges[c.edge.id] == c.edge {
				cc := c.c
				cc.Meta = copyMeta(cc.Meta)
				cs = append(cs, cc)
			}
		}
		if len(cs) > 0 {
			SortConns(cs)
			out[u] = cs
		}
	}
	return out, nil
}

// SortConns orders conns by edge, then connection id.
func SortConns(cs []Conn) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Edge != cs[j].Edge {
			return cs[i].Edge < cs[j].Edge
		}
		return cs[i].ConnID < cs[j].ConnID
	})
}

// RoomEdges implements Store. The result is ordered by edge id.
func (s *MemoryStore) RoomEdges(ctx context.Context, room string) ([]RoomEdge, error) {
	now, err := s.lockOpen(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []RoomEdge
	for e := range s.rooms[room] {
		if e.live(now) && e.rooms[room] > 0 {
			out = append(out, RoomEdge{Edge: e.id, Epoch: e.epoch, Members: e.rooms[room]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Edge < out[j].Edge })
	return out, nil
}

// RoomCounts implements Store. Rooms without live members are absent.
func (s *MemoryStore) RoomCounts(ctx context.Context, rooms []string) (map[string]int, error) {
	now, err := s.lockOpen(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := make(map[string]int)
	for _, r := range rooms {
		n := 0
		for e := range s.rooms[r] {
			if e.live(now) {
				n += e.rooms[r]
			}
		}
		if n > 0 {
			out[r] = n
		}
	}
	return out, nil
}

// Online implements Store. PerEdge lists every live edge, with 0 for an edge without
// connections.
func (s *MemoryStore) Online(ctx context.Context) (Counts, error) {
	now, err := s.lockOpen(ctx)
	if err != nil {
		return Counts{}, err
	}
	defer s.mu.Unlock()
	c := Counts{PerEdge: make(map[string]int)}
	for id, e := range s.edges {
		if e.live(now) {
			c.PerEdge[id] = len(e.conns)
			c.Connections += len(e.conns)
		}
	}
	for _, set := range s.users {
		for mc := range set {
			if mc.edge.live(now) {
				c.Users++
				break
			}
		}
	}
	return c, nil
}

// Edges implements Store.
func (s *MemoryStore) Edges(ctx context.Context) (map[string]uint64, error) {
	now, err := s.lockOpen(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := make(map[string]uint64)
	for id, e := range s.edges {
		if e.live(now) {
			out[id] = e.epoch
		}
	}
	return out, nil
}

// Events implements Store.
func (s *MemoryStore) Events(ctx context.Context) (<-chan Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	sub := &memSub{ch: make(chan Event, s.cfg.EventBuffer)}
	s.subs[sub] = struct{}{}
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[sub]; ok {
			delete(s.subs, sub)
			close(sub.ch)
		}
	})
	return sub.ch, nil
}

func (s *MemoryStore) emitLocked(ev Event) {
	for sub := range s.subs {
		select {
		case sub.ch <- ev:
		default: // a whole buffer behind: end the subscription rather than drop the event
			delete(s.subs, sub)
			close(sub.ch)
		}
	}
}

// Close implements Store: it stops the reaper and closes every Events channel.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for sub := range s.subs {
		delete(s.subs, sub)
		close(sub.ch)
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	return nil
}

func copyMeta(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
