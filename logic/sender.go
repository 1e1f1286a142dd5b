package logic

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
)

// Out is one delivery: a server frame, its priority class for load shedding at the edge, and a
// connection to skip (the sender, who gets its own echo by other means).
type Out struct {
	Frame    protocol.ServerFrame
	Priority protocol.Priority
	Exclude  Conn // zero: skip nobody
}

// Frame returns an Out of type typ with data and PriorityNormal.
func Frame(typ string, data []byte) Out {
	return Out{Frame: protocol.ServerFrame{Type: typ, Data: data}}
}

// Sender addresses deliveries to connections, users, rooms and everyone. Targets are resolved
// through presence, and ONE downstream envelope is published per edge that holds a target (to
// that edge's topic) — never one per recipient, never to every edge; ToAll uses the broadcast
// topic.
//
// A Sender from Context.Send publishes asynchronously (the runtime awaits the publishes before
// acknowledging the frame); the one from Runtime.Sender waits for the bus to accept each
// publish. Methods return presence failures as transient errors. Every method encodes its
// envelopes before it returns: the caller may reuse the frame's Data at once. Safe for use by one goroutine
// at a time (a Context's) or, for Runtime.Sender, by many.
type Sender struct {
	rt   *Runtime
	pend *pending // nil: synchronous
	tp   string   // traceparent to propagate
	at   int64    // origin time (unix ns) to propagate
}

// pending collects a frame's asynchronous publishes.
type pending struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error       // first failure; guarded by mu
	doneFn func(error) // p.done, bound once; set by the frame's goroutine before its first publish
}

func (p *pending) done(err error) {
	if err != nil {
		p.mu.Lock()
		if p.err == nil {
			p.err = err
		}
		p.mu.Unlock()
	}
	p.wg.Done()
}

// fail records err (the first failure wins).
func (p *pending) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *pending) wait() error {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (s *Sender) publish(ctx context.Context, topic, key string, d *protocol.Downstream) error {
	d.Traceparent = s.tp
	d.TimeUnixNano = s.at
	return s.publishRaw(ctx, topic, key, encodeDownstream(d))
}

// encodeDownstream encodes d into a buffer sized for it up front (growing it field by field
// cost several allocations per envelope).
func encodeDownstream(d *protocol.Downstream) []byte {
	n := 64 + len(d.Frame.Type) + len(d.Frame.ID) + len(d.Frame.Data) + len(d.Frame.Message) +
		len(d.Room) + len(d.Reason) + len(d.Traceparent) + 10*len(d.Conns)
	for _, u := range d.Users {
		n += len(u) + 2
	}
	for _, r := range d.Rooms {
		n += len(r) + 2
	}
	return protocol.AppendDownstream(make([]byte, 0, n), d)
}

// syncPublisher is a bus that accepts a message on the caller's goroutine without waiting on
// the network (bus.Memory): the runtime publishes through it instead of Publish, which would
// hop to the bus's goroutine and back for every delivery. It takes the message (the runtime's
// envelopes are never modified after encoding). A frame's publishes keep their order: they all
// go through it.
type syncPublisher interface {
	PublishNow(ctx context.Context, topic string, m bus.Message) error
}

var _ syncPublisher = (*bus.Memory)(nil)

// publishRaw publishes an encoded envelope. payload may be shared by several publishes: nobody
// modifies it after encoding.
func (s *Sender) publishRaw(ctx context.Context, topic, key string, payload []byte) error {
	m := bus.Message{Key: key, Payload: payload}
	if s.tp != "" {
		m.Props = map[string]string{protocol.PropTraceparent: s.tp}
	}
	s.rt.stats.published.Add(1)
	if now := s.rt.now; now != nil {
		// The bus accepts on this goroutine: nothing to await, and the outcome is known at once.
		err := now.PublishNow(ctx, topic, m)
		if err != nil && s.pend != nil {
			s.pend.fail(err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("logic: publish %s: %w", topic, err)
		}
		return nil
	}
	if s.pend != nil {
		s.pend.wg.Add(1)
		if s.pend.doneFn == nil {
			s.pend.doneFn = s.pend.done // one closure per frame, not one per publish
		}
		s.rt.cfg.Bus.Publish(ctx, topic, m, s.pend.doneFn)
		return nil
	}
	ch := make(chan error, 1)
	s.rt.cfg.Bus.Publish(ctx, topic, m, func(err error) { ch <- err })
	if err := <-ch; err != nil { // done is always called (bus contract)
		return fmt.Errorf("logic: publish %s: %w", topic, err)
	}
	return nil
}

func (s *Sender) edgeTopic(edge string) string { return s.rt.edgeTopic(edge) }

// conn is ToConn for the Context's own deliveries: nothing to resolve, so no error to return
// (a publish failure surfaces when the runtime awaits the frame's publishes).
func (s *Sender) conn(c Conn, o Out) {
	_ = s.ToConn(context.Background(), c, o)
}

// ToConn delivers o to one connection.
func (s *Sender) ToConn(ctx context.Context, c Conn, o Out) error {
	if !protocol.ValidEdgeID(c.Edge) {
		return fmt.Errorf("logic: to conn: invalid edge %q", c.Edge)
	}
	return s.publish(ctx, s.edgeTopic(c.Edge), "", &protocol.Downstream{Kind: protocol.DownDeliver,
		Target: protocol.TargetConns, Epoch: c.Epoch, Conns: []uint64{c.ID}, Frame: o.Frame, Priority: o.Priority})
}

// ToUser delivers o to every connection of user, on every edge.
func (s *Sender) ToUser(ctx context.Context, user string, o Out) error {
	return s.ToUsers(ctx, []string{user}, o)
}

// ToUsers delivers o to every connection of users: one envelope per edge holding any of them,
// naming the users that edge holds. Users with no connection are skipped.
func (s *Sender) ToUsers(ctx context.Context, users []string, o Out) error {
	var buf [4]edgeUsers
	groups, err := s.resolve(ctx, users, o.Exclude, buf[:0])
	if err != nil {
		return err
	}
	for _, g := range groups {
		d := protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: g.users,
			Frame: o.Frame, Priority: o.Priority, ExcludeConn: exclude(o.Exclude, g.edge, g.epoch)}
		if err := s.publish(ctx, s.edgeTopic(g.edge), "", &d); err != nil {
			return err
		}
	}
	return nil
}

// Kick closes every connection of user with code and reason.
func (s *Sender) Kick(ctx context.Context, user string, code protocol.CloseCode, reason string) error {
	if reason == "" {
		reason = code.String()
	}
	var buf [4]edgeUsers
	groups, err := s.resolve(ctx, []string{user}, Conn{}, buf[:0])
	if err != nil {
		return err
	}
	for _, g := range groups {
		d := protocol.Downstream{Kind: protocol.DownClose, Target: protocol.TargetUsers, Users: g.users,
			Code: uint32(code), Reason: reason}
		if err := s.publish(ctx, s.edgeTopic(g.edge), "", &d); err != nil {
			return err
		}
	}
	return nil
}

// edgeUsers are the users of a delivery that one edge holds.
type edgeUsers struct {
	edge  string
	epoch uint64
	users []string
}

// maxLinearEdges is how many edges resolve groups by a linear scan before it builds an index.
const maxLinearEdges = 8

// resolve appends to dst, ordered by edge, the edges holding a connection of users and the
// users each holds. The connection skip (the excluded sender, if any) does not count: an edge
// whose only matching connection is skip gets no group at all, so a 1:1 message does not
// cross the bus to the sender's edge.
func (s *Sender) resolve(ctx context.Context, users []string, skip Conn, dst []edgeUsers) ([]edgeUsers, error) {
	if len(users) == 0 {
		return dst, nil
	}
	if len(users) > 1 {
		users = dedupe(users)
	}
	conns, err := s.rt.cfg.Presence.ResolveUsers(ctx, users)
	if err != nil {
		return dst, Transient(fmt.Errorf("logic: resolve users: %w", err))
	}
	var index map[string]int // edge -> group, once there are many edges
	for _, u := range users {
		for _, c := range conns[u] {
			if skip.ID != 0 && c.ConnID == skip.ID && c.Edge == skip.Edge && (skip.Epoch == 0 || c.Epoch == skip.Epoch) {
				continue
			}
			i := -1
			if index != nil {
				if k, ok := index[c.Edge]; ok {
					i = k
				}
			} else {
				for k := range dst {
					if dst[k].edge == c.Edge {
						i = k
						break
					}
				}
			}
			if i < 0 {
				i = len(dst)
				dst = append(dst, edgeUsers{edge: c.Edge, epoch: c.Epoch})
				if index != nil {
					index[c.Edge] = i
				} else if len(dst) > maxLinearEdges {
					index = make(map[string]int, 2*len(dst))
					for k := range dst {
						index[dst[k].edge] = k
					}
				}
			}
			e := &dst[i]
			if n := len(e.users); n == 0 || e.users[n-1] != u {
				e.users = append(e.users, u)
			}
		}
	}
	if len(dst) > 1 {
		slices.SortFunc(dst, func(a, b edgeUsers) int { return strings.Compare(a.edge, b.edge) })
	}
	return dst, nil
}

func exclude(c Conn, edge string, epoch uint64) uint64 {
	if c.Edge == edge && (c.Epoch == 0 || c.Epoch == epoch) {
		return c.ID
	}
	return 0
}

// ToRoom delivers o to every member of room: one envelope per edge holding members. The
// envelope is encoded once and the same bytes go to every edge (the sender's edge, which must
// skip the sender's connection, gets its own encoding).
func (s *Sender) ToRoom(ctx context.Context, room string, o Out) error {
	edges, err := s.rt.cfg.Presence.RoomEdges(ctx, room)
	if err != nil {
		return Transient(fmt.Errorf("logic: room %s edges: %w", room, err))
	}
	if len(edges) == 0 {
		return nil
	}
	d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: room,
		Frame: o.Frame, Priority: o.Priority, Traceparent: s.tp, TimeUnixNano: s.at}
	var shared []byte
	for _, e := range edges {
		payload := shared
		if x := exclude(o.Exclude, e.Edge, e.Epoch); x != 0 {
			d.ExcludeConn = x
			payload = encodeDownstream(d)
			d.ExcludeConn = 0
		} else if payload == nil {
			shared = encodeDownstream(d)
			payload = shared
		}
		if err := s.publishRaw(ctx, s.edgeTopic(e.Edge), room, payload); err != nil {
			return err
		}
	}
	return nil
}

// ToAll delivers o to every connection on every edge, through the broadcast topic.
func (s *Sender) ToAll(ctx context.Context, o Out) error {
	return s.publish(ctx, protocol.BroadcastTopic(s.rt.cfg.Namespace), "", &protocol.Downstream{
		Kind: protocol.DownDeliver, Target: protocol.TargetAll, Frame: o.Frame, Priority: o.Priority})
}

// Join joins connection c to rooms (the edge applies it and reports it to the router).
func (s *Sender) Join(ctx context.Context, c Conn, rooms ...string) error {
	return s.membership(ctx, protocol.DownJoin, c, rooms)
}

// Leave removes connection c from rooms.
func (s *Sender) Leave(ctx context.Context, c Conn, rooms ...string) error {
	return s.membership(ctx, protocol.DownLeave, c, rooms)
}

func (s *Sender) membership(ctx context.Context, kind protocol.DownKind, c Conn, rooms []string) error {
	if len(rooms) == 0 {
		return nil
	}
	if !protocol.ValidEdgeID(c.Edge) {
		return fmt.Errorf("logic: join/leave: invalid edge %q", c.Edge)
	}
	return s.publish(ctx, s.edgeTopic(c.Edge), "", &protocol.Downstream{Kind: kind,
		Target: protocol.TargetConns, Epoch: c.Epoch, Conns: []uint64{c.ID}, Rooms: rooms})
}

// Close closes connection c with code and reason (the code's text if empty).
func (s *Sender) Close(ctx context.Context, c Conn, code protocol.CloseCode, reason string) error {
	if !protocol.ValidEdgeID(c.Edge) {
		return fmt.Errorf("logic: close: invalid edge %q", c.Edge)
	}
	if reason == "" {
		reason = code.String()
	}
	return s.publish(ctx, s.edgeTopic(c.Edge), "", &protocol.Downstream{Kind: protocol.DownClose,
		Target: protocol.TargetConns, Epoch: c.Epoch, Conns: []uint64{c.ID}, Code: uint32(code), Reason: reason})
}

// dedupe returns users without repeats, in first-seen order: users itself when it has none.
func dedupe(users []string) []string {
	if len(users) <= 8 {
		dup := false
		for i := 1; i < len(users) && !dup; i++ {
			dup = slices.Contains(users[:i], users[i])
		}
		if !dup {
			return users
		}
	}
	seen := make(map[string]struct{}, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if _, ok := seen[u]; !ok {
			seen[u] = struct{}{}
			out = append(out, u)
		}
	}
	return out
}
