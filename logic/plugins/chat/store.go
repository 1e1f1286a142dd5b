package chat

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// Message is one stored chat message.
type Message struct {
	Conv string `json:"conv"`
	Seq  uint64 `json:"seq"`            // per-conversation sequence number, from 1, no gaps
	ID   string `json:"id"`             // unique message id (conv and seq): clients dedupe by it
	From string `json:"from"`           // sender user id
	CMID string `json:"cmid,omitempty"` // the sender's client message id (retries carry the same)
	Text string `json:"text"`
	TS   int64  `json:"ts"` // unix milliseconds when the server accepted it
}

// ConvState is one conversation of a user: its latest sequence and what the user acked.
type ConvState struct {
	Conv  string `json:"conv"`
	Last  uint64 `json:"last"`
	Acked uint64 `json:"acked"`
}

// Store keeps conversations: sequence numbers, capped history, dedupe of client retries,
// per-user acknowledgements and group membership. RedisStore and MemoryStore pass the same
// contract tests.
type Store interface {
	// Append assigns m the next sequence number of m.Conv, stores it and indexes the
	// conversation for members. If m.From already stored a message with m.CMID (non-empty) in
	// the conversation within the dedupe window, nothing is stored and the earlier message is
	// returned with dup = true (a client retry, or a redelivered frame).
	Append(ctx context.Context, m Message, members []string) (stored Message, dup bool, err error)
	// Since returns up to limit messages of conv with Seq > since, oldest first. Messages
	// trimmed from the capped history are gone.
	Since(ctx context.Context, conv string, since uint64, limit int) ([]Message, error)
	// Ack records that user has received conv up to seq (the highest ack wins).
	Ack(ctx context.Context, user, conv string, seq uint64) error
	// Convs returns user's conversations with their latest sequence and the user's ack.
	Convs(ctx context.Context, user string) ([]ConvState, error)
	// Join adds user to group; Leave removes; Members lists (sorted).
	Join(ctx context.Context, group, user string) error
	Leave(ctx context.Context, group, user string) error
	Members(ctx context.Context, group string) ([]string, error)
}

// MemoryStore is the in-process Store for the embedded mode and tests.
type MemoryStore struct {
	cap int
	ttl time.Duration
	now func() time.Time // time.Now; tests move it

	mu     sync.Mutex
	convs  map[string]*memConv            // guarded by mu
	users  map[string]map[string]uint64   // user -> conv -> acked; guarded by mu
	index  map[string]map[string]struct{} // user -> convs; guarded by mu
	groups map[string]map[string]struct{} // guarded by mu
}

type memConv struct {
	seq   uint64
	log   []Message // the latest messages: at least the latest cap, at most 2*cap (see history)
	cmids map[cmidKey]cmidEntry
	// sweepAt is the size of cmids past which the next append removes expired ids (at least
	// 4*cap): set a cap above what a sweep left.
	sweepAt int
	// indexed are the members the conversation was last indexed for: the same members (every
	// message of a direct conversation) need no index update.
	indexed []string
}

// history is c's latest cap messages. The log holds up to twice as many, so that it is
// trimmed (copied) once per cap appends rather than on every append past the cap.
func (c *memConv) history(cap int) []Message {
	if len(c.log) > cap {
		return c.log[len(c.log)-cap:]
	}
	return c.log
}

// cmidKey is a client message id of a sender (a struct, not a joined string: no allocation
// per message).
type cmidKey struct{ from, cmid string }

type cmidEntry struct {
	seq     uint64
	expires time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a MemoryStore keeping the latest historyCap messages per conversation
// (zero means 1000) and deduplicating retries within dedupeTTL (zero means 24h).
func NewMemoryStore(historyCap int, dedupeTTL time.Duration) *MemoryStore {
	if historyCap <= 0 {
		historyCap = 1000
	}
	if dedupeTTL <= 0 {
		dedupeTTL = 24 * time.Hour
	}
	return &MemoryStore{cap: historyCap, ttl: dedupeTTL, now: time.Now, convs: make(map[string]*memConv),
		users: make(map[string]map[string]uint64), index: make(map[string]map[string]struct{}),
		groups: make(map[string]map[string]struct{})}
}

// Append implements Store.
func (s *MemoryStore) Append(ctx context.Context, m Message, members []string) (Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, false, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.convs[m.Conv]
	if c == nil {
		c = &memConv{cmids: make(map[cmidKey]cmidEntry)}
		s.convs[m.Conv] = c
	}
	key := cmidKey{from: m.From, cmid: m.CMID}
	if m.CMID != "" {
		if e, ok := c.cmids[key]; ok && now.Before(e.expires) {
			h := c.history(s.cap)
			if i := len(h) - int(c.seq-e.seq) - 1; i >= 0 {
				return h[i], true, nil
			}
			m.Seq, m.ID = e.seq, MessageID(m.Conv, e.seq)
			return m, true, nil
		}
	}
	c.seq++
	m.Seq, m.ID = c.seq, MessageID(m.Conv, c.seq)
	if len(c.log) >= 2*s.cap {
		c.log = append(c.log[:0:0], c.log[len(c.log)-s.cap+1:]...)
	}
	c.log = append(c.log, m)
	if m.CMID != "" {
		if len(c.cmids) > max(4*s.cap, c.sweepAt) {
			for k, e := range c.cmids {
				if !now.Before(e.expires) {
					delete(c.cmids, k)
				}
			}
			// Ids still within the dedupe window stay; the next sweep waits for another cap
			// of them, so a busy conversation is not swept on every append.
			c.sweepAt = len(c.cmids) + s.cap
		}
		c.cmids[key] = cmidEntry{seq: m.Seq, expires: now.Add(s.ttl)}
	}
	if !slices.Equal(c.indexed, members) {
		for _, u := range members {
			if s.index[u] == nil {
				s.index[u] = make(map[string]struct{})
			}
			s.index[u][m.Conv] = struct{}{}
		}
		c.indexed = slices.Clone(members)
	}
	return m, false, nil
}

// Since implements Store.
func (s *MemoryStore) Since(ctx context.Context, conv string, since uint64, limit int) ([]Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.convs[conv]
	if c == nil || since >= c.seq || limit <= 0 {
		return nil, nil
	}
	h := c.history(s.cap)
	first := c.seq - uint64(len(h)) + 1
	i := 0
	if since+1 > first {
		i = int(since + 1 - first)
	}
	end := min(len(h), i+limit)
	return append([]Message(nil), h[i:end]...), nil
}

// Ack implements Store.
func (s *MemoryStore) Ack(ctx context.Context, user, conv string, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[user] == nil {
		s.users[user] = make(map[string]uint64)
	}
	if seq > s.users[user][conv] {
		s.users[user][conv] = seq
	}
	return nil
}

// Convs implements Store.
func (s *MemoryStore) Convs(ctx context.Context, user string) ([]ConvState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ConvState, 0, len(s.index[user]))
	for conv := range s.index[user] {
		st := ConvState{Conv: conv, Acked: s.users[user][conv]}
		if c := s.convs[conv]; c != nil {
			st.Last = c.seq
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conv < out[j].Conv })
	return out, nil
}

// Join implements Store.
func (s *MemoryStore) Join(ctx context.Context, group, user string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[group] == nil {
		s.groups[group] = make(map[string]struct{})
	}
	s.groups[group][user] = struct{}{}
	return nil
}

// Leave implements Store.
func (s *MemoryStore) Leave(ctx context.Context, group, user string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.groups[group], user)
	return nil
}

// Members implements Store.
func (s *MemoryStore) Members(ctx context.Context, group string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.groups[group]))
	for u := range s.groups[group] {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}
