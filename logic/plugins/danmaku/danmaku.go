// Package danmaku is the live-comment plugin: rooms with high fanout, priority classes, per-user
// rate limits and live online counts.
//
// Frames (client → server):
//
//	{"type":"room.join","id":"1","data":{"room":"live:42"}}
//	{"type":"room.leave","id":"2","data":{"room":"live:42"}}
//	{"type":"danmaku.send","id":"3","data":{"room":"live:42","text":"666","paid":500}}
//
// Deliveries (server → client):
//
//	{"type":"room.join","id":"1","data":{"room":"live:42"}}            join accepted
//	{"type":"danmaku","data":{"id":…,"room":…,"user":…,"text":…,"paid":…,"mod":…,"ts":…}}
//	{"type":"danmaku","id":"3","data":{…}}                              the sender's own echo
//	{"type":"room.online","data":{"room":"live:42","online":1234}}       live count
//
// A danmaku crosses the bus once per edge holding members of the room (logic.Sender.ToRoom)
// with a priority class the edge uses when it must shed load: the sender's own echo
// (PriorityEcho, sent to the sender's connection only), paid messages (PriorityPaid) and
// moderators (PriorityModerator) are never shed; ordinary chatter (PriorityNormal) may be.
//
// Online counts: every replica remembers the rooms its frames touched recently and, every
// CountInterval, asks presence for their member counts and pushes "room.online" to rooms whose
// count changed (and to every tracked room every RefreshEvery ticks, as the push is sheddable).
// Several replicas may push the same count; clients keep the latest.
package danmaku

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/protocol"
)

// Frame types.
const (
	TypeJoin   = "room.join"
	TypeLeave  = "room.leave"
	TypeSend   = "danmaku.send"
	TypeDanmu  = "danmaku"
	TypeOnline = "room.online"
)

// Config configures the plugin. Zero values mean the defaults stated per field.
type Config struct {
	// MaxText is the longest text in runes. Zero means 200.
	MaxText int
	// Rate is each user's sustained danmaku per second (Burst at once). Zero means 2 and 5.
	Rate  float64
	Burst int
	// CountInterval is how often online counts are checked and pushed. Zero means 2s.
	CountInterval time.Duration
	// RefreshEvery pushes unchanged counts every this many intervals. Zero means 5.
	RefreshEvery int
	// MaxAge sheds ordinary danmaku that waited longer than this since the edge received them
	// (a backlog after an outage or under overload): live chatter that late is noise, and
	// fanning it out would delay the fresh ones. The sender gets ErrTimeout. Paid and
	// moderator danmaku are delivered however late. Zero means 10s; negative never sheds.
	MaxAge time.Duration
	// MaxRooms bounds the rooms a replica tracks for counts. Zero means 10000.
	MaxRooms int
	// RoomTTL is how long a room stays tracked after the last frame touching it while its
	// count is zero. Zero means 1 minute.
	RoomTTL time.Duration
	// Moderators are user ids whose danmaku are PriorityModerator in every room.
	Moderators []string
	// IsModerator, when set, decides per room (and replaces Moderators).
	IsModerator func(ctx context.Context, user, room string) (bool, error)
	// CheckPaid verifies a paid danmaku (amount in the smallest currency unit) before it is
	// sent as PriorityPaid; an error refuses it. Nil trusts the client: the demo's setting,
	// never production's.
	CheckPaid func(ctx context.Context, user, room string, amount int64) error
	// AllowJoin, when set, may refuse a join with an error (a *protocol.Error reaches the
	// client as is). Nil lets everyone join every room — rooms are one namespace shared by all
	// plugins, so a deployment that also uses rooms for private deliveries must set it.
	AllowJoin func(ctx context.Context, user, room string) error
}

// Plugin is the danmaku plugin.
type Plugin struct {
	cfg   Config
	mods  map[string]bool
	limit *logic.UserLimiter

	mu    sync.Mutex
	rooms map[string]*roomState // guarded by mu
}

type roomState struct {
	last      int // last pushed count; -1 = never
	seen      time.Time
	dirty     bool
	zeroSince time.Time
}

// New returns the plugin.
func New(cfg Config) *Plugin {
	if cfg.MaxText <= 0 {
		cfg.MaxText = 200
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 2
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 5
	}
	if cfg.CountInterval <= 0 {
		cfg.CountInterval = 2 * time.Second
	}
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = 5
	}
	if cfg.MaxRooms <= 0 {
		cfg.MaxRooms = 10000
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 10 * time.Second
	}
	if cfg.RoomTTL <= 0 {
		cfg.RoomTTL = time.Minute
	}
	p := &Plugin{cfg: cfg, mods: make(map[string]bool), rooms: make(map[string]*roomState),
		limit: logic.NewUserLimiter(logic.RateLimitConfig{Rate: cfg.Rate, Burst: cfg.Burst})}
	for _, m := range cfg.Moderators {
		p.mods[m] = true
	}
	return p
}

// Name implements logic.Plugin.
func (p *Plugin) Name() string { return "danmaku" }

// Init implements logic.Plugin.
func (p *Plugin) Init(h *logic.Host) error {
	h.Handle(TypeJoin, p.join)
	h.Handle(TypeLeave, p.leave)
	h.Handle(TypeSend, p.send)
	sender, pres := h.Sender(), h.Presence()
	h.Go(func(ctx context.Context) { p.countLoop(ctx, sender, pres) })
	return nil
}

type roomReq struct {
	Room string `json:"room"`
}

// ValidRoom reports whether name can name a room: 1–128 bytes of valid UTF-8 without control
// characters.
func ValidRoom(name string) bool {
	if name == "" || len(name) > 128 || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func bindRoom(c *logic.Context) (string, error) {
	var req roomReq
	if err := c.Bind(&req); err != nil {
		return "", err
	}
	if !ValidRoom(req.Room) {
		return "", protocol.NewError(protocol.ErrInvalidData, "invalid room")
	}
	return req.Room, nil
}

func (p *Plugin) join(ctx context.Context, c *logic.Context) error {
	room, err := bindRoom(c)
	if err != nil {
		return err
	}
	if p.cfg.AllowJoin != nil {
		if err := p.cfg.AllowJoin(ctx, c.User, room); err != nil {
			return err
		}
	}
	if err := c.Join(ctx, room); err != nil {
		return err
	}
	p.touch(room)
	c.Reply(jsonRoom(room))
	return nil
}

func (p *Plugin) leave(ctx context.Context, c *logic.Context) error {
	room, err := bindRoom(c)
	if err != nil {
		return err
	}
	if err := c.Leave(ctx, room); err != nil {
		return err
	}
	p.touch(room)
	c.Reply(jsonRoom(room))
	return nil
}

func jsonRoom(room string) []byte {
	b, _ := json.Marshal(roomReq{Room: room})
	return b
}

type sendReq struct {
	Room string `json:"room"`
	Text string `json:"text"`
	Paid int64  `json:"paid,omitempty"`
}

// Danmu is a delivered danmaku.
type Danmu struct {
	ID   string `json:"id"` // unique per client frame: a redelivered frame repeats it, clients drop repeats
	Room string `json:"room"`
	User string `json:"user"`
	Text string `json:"text"`
	Paid int64  `json:"paid,omitempty"`
	Mod  bool   `json:"mod,omitempty"`
	TS   int64  `json:"ts"` // unix milliseconds
}

func (p *Plugin) send(ctx context.Context, c *logic.Context) error {
	var req sendReq
	if err := c.Bind(&req); err != nil {
		return err
	}
	switch {
	case !ValidRoom(req.Room):
		return protocol.NewError(protocol.ErrInvalidData, "invalid room")
	case req.Text == "" || !utf8.ValidString(req.Text):
		return protocol.NewError(protocol.ErrInvalidData, "empty text")
	case utf8.RuneCountInString(req.Text) > p.cfg.MaxText:
		return protocol.NewError(protocol.ErrTooLarge, "text too long")
	case req.Paid < 0:
		return protocol.NewError(protocol.ErrInvalidData, "negative amount")
	}
	prio := protocol.PriorityNormal
	mod, err := p.isModerator(ctx, c.User, req.Room)
	if err != nil {
		return logic.Transient(err)
	}
	if req.Paid > 0 {
		if p.cfg.CheckPaid != nil {
			if err := p.cfg.CheckPaid(ctx, c.User, req.Room, req.Paid); err != nil {
				return err
			}
		}
		prio = protocol.PriorityPaid
	}
	if mod {
		prio = protocol.PriorityModerator
	}
	// Paid and moderator messages are never refused by the rate limit: they are the ones the
	// room must see. Ordinary chatter is limited per user.
	if prio == protocol.PriorityNormal && c.Redeliveries == 0 && !p.limit.AllowAt(c.User, c.ReceivedAt) {
		return protocol.NewError(protocol.ErrRateLimited, "")
	}
	if prio == protocol.PriorityNormal && p.cfg.MaxAge > 0 && !c.ReceivedAt.IsZero() && time.Since(c.ReceivedAt) > p.cfg.MaxAge {
		return protocol.NewError(protocol.ErrTimeout, "shed: too late for a live room")
	}
	ts := time.Now().UnixMilli()
	if !c.ReceivedAt.IsZero() {
		ts = c.ReceivedAt.UnixMilli()
	}
	data, err := json.Marshal(Danmu{ID: danmuID(c), Room: req.Room, User: c.User, Text: req.Text, Paid: req.Paid, Mod: mod, TS: ts})
	if err != nil {
		return err
	}
	s := c.Send()
	if err := s.ToRoom(ctx, req.Room, logic.Out{Frame: protocol.ServerFrame{Type: TypeDanmu, Data: data},
		Priority: prio, Exclude: c.Conn}); err != nil {
		return err
	}
	p.touch(req.Room)
	// The sender's own echo, answering its frame id: never shed.
	return s.ToConn(ctx, c.Conn, logic.Out{Frame: protocol.ServerFrame{Type: TypeDanmu, ID: c.ID, Data: data},
		Priority: protocol.PriorityEcho})
}

func danmuID(c *logic.Context) string {
	return c.Conn.Edge + "." + strconv.FormatUint(c.Conn.Epoch, 36) + "." + strconv.FormatUint(c.Conn.ID, 36) + "." + c.ID
}

func (p *Plugin) isModerator(ctx context.Context, user, room string) (bool, error) {
	if p.cfg.IsModerator != nil {
		return p.cfg.IsModerator(ctx, user, room)
	}
	return p.mods[user], nil
}

// touch marks room as active: its count is checked at the next tick.
func (p *Plugin) touch(room string) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rooms[room]
	if r == nil {
		if len(p.rooms) >= p.cfg.MaxRooms {
			return // tracked rooms keep being counted; new ones wait for room to free up
		}
		r = &roomState{last: -1}
		p.rooms[room] = r
	}
	r.seen, r.dirty = now, true
}

// Online is a "room.online" push.
type Online struct {
	Room   string `json:"room"`
	Online int    `json:"online"`
}

func (p *Plugin) countLoop(ctx context.Context, s *logic.Sender, pres logic.Presence) {
	t := time.NewTicker(p.cfg.CountInterval)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.pushCounts(ctx, s, pres, tick%p.cfg.RefreshEvery == 0)
	}
}

func (p *Plugin) pushCounts(ctx context.Context, s *logic.Sender, pres logic.Presence, refresh bool) {
	p.mu.Lock()
	rooms := make([]string, 0, len(p.rooms))
	for r := range p.rooms {
		rooms = append(rooms, r)
	}
	p.mu.Unlock()
	if len(rooms) == 0 {
		return
	}
	counts, err := pres.RoomCounts(ctx, rooms)
	if err != nil {
		return // presence unavailable: try again next tick
	}
	now := time.Now()
	var push []Online
	p.mu.Lock()
	for _, room := range rooms {
		r := p.rooms[room]
		if r == nil {
			continue
		}
		n := counts[room]
		if n == 0 {
			if r.zeroSince.IsZero() {
				r.zeroSince = now
			}
			if now.Sub(r.zeroSince) > p.cfg.RoomTTL && now.Sub(r.seen) > p.cfg.RoomTTL {
				delete(p.rooms, room)
				continue
			}
		} else {
			r.zeroSince = time.Time{}
		}
		if n != r.last || (refresh && n > 0) {
			r.last, r.dirty = n, false
			if n > 0 {
				push = append(push, Online{Room: room, Online: n})
			}
		}
	}
	p.mu.Unlock()
	for _, o := range push {
		data, _ := json.Marshal(o)
		// Sheddable: the next tick or change repeats it.
		_ = s.ToRoom(ctx, o.Room, logic.Frame(TypeOnline, data))
	}
}
