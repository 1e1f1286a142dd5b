// Package chat is the instant-messaging plugin: 1:1 and group conversations with a
// per-conversation sequence number, history in a Store (Redis in the cluster, memory in the
// embedded mode), sync for reconnecting clients and at-least-once delivery.
//
// Frames (client → server) and the replies (same type, same id):
//
//	chat.send  {"to":"bob","text":"hi","cmid":"c-17"}       1:1 (or "group":"g1" instead of "to")
//	        ←  {"conv":"d:3:bob:alice"...,"seq":42,"id":"…","ts":…,"dup":false}
//	chat.sync  {"conv":"…","since":41,"limit":100}           messages with seq > since
//	        ←  {"conv":"…","messages":[…],"more":false}      (since omitted: the user's last ack)
//	chat.convs {}                                             ← {"convs":[{"conv","last","acked"}]}
//	chat.ack   {"conv":"…","seq":42}                           no reply
//	chat.join  {"group":"g1"}   chat.leave {"group":"g1"}     ← {"conv":"g:g1"}
//
// Deliveries: {"type":"chat.msg","data":{"conv","seq","id","from","cmid","text","ts"}} to every
// connection of every member (the sender's other devices included, the sending connection
// excluded: it has the reply), one envelope per edge.
//
// Delivery guarantee: a message is stored (and gets its seq) before anything is delivered, and
// the client frame is acknowledged on the bus only after the deliveries were published; a
// failure on the way nacks the frame, and its redelivery is recognised by the client message id
// (cmid) and delivered again under the same message id. Clients drop messages whose id they
// have seen, order by seq (when several members write at once, their messages are handled in
// parallel and may arrive out of seq order), acknowledge what they processed with chat.ack,
// and after a reconnect (or a gap in seq) call chat.sync from their last seq — or chat.convs
// then chat.sync with no since.
package chat

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/protocol"
)

// Frame types.
const (
	TypeSend  = "chat.send"
	TypeSync  = "chat.sync"
	TypeConvs = "chat.convs"
	TypeAck   = "chat.ack"
	TypeJoin  = "chat.join"
	TypeLeave = "chat.leave"
	TypeMsg   = "chat.msg"
)

// Config configures the plugin. Zero values mean the defaults stated per field.
type Config struct {
	// Store keeps the conversations. Required.
	Store Store
	// MaxText is the longest text in bytes. Zero means 4096.
	MaxText int
	// SyncLimit caps the messages of one sync reply. Zero means 100.
	SyncLimit int
	// MaxCMID is the longest client message id. Zero means 64.
	MaxCMID int
}

// Plugin is the chat plugin.
type Plugin struct{ cfg Config }

// New returns the plugin.
func New(cfg Config) *Plugin {
	if cfg.MaxText <= 0 {
		cfg.MaxText = 4096
	}
	if cfg.SyncLimit <= 0 {
		cfg.SyncLimit = 100
	}
	if cfg.MaxCMID <= 0 {
		cfg.MaxCMID = 64
	}
	return &Plugin{cfg: cfg}
}

// Name implements logic.Plugin.
func (p *Plugin) Name() string { return "chat" }

// Init implements logic.Plugin.
func (p *Plugin) Init(h *logic.Host) error {
	if p.cfg.Store == nil {
		return errMissingStore
	}
	h.Handle(TypeSend, p.send)
	h.Handle(TypeSync, p.sync)
	h.Handle(TypeConvs, p.convs)
	h.Handle(TypeAck, p.ack)
	h.Handle(TypeJoin, p.join)
	h.Handle(TypeLeave, p.leave)
	return nil
}

var errMissingStore = errors.New("chat: Config.Store is required")

// MessageID is the unique id of message seq of conv.
func MessageID(conv string, seq uint64) string { return conv + "#" + strconv.FormatUint(seq, 10) }

// DirectConv is the conversation id of users a and b (order does not matter). The length
// prefix keeps it unambiguous whatever the ids contain.
func DirectConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d:" + strconv.Itoa(len(a)) + ":" + a + ":" + b
}

// GroupConv is the conversation id of group g.
func GroupConv(g string) string { return "g:" + g }

// parseDirect returns the two users of a direct conversation id.
func parseDirect(conv string) (a, b string, ok bool) {
	rest, ok := strings.CutPrefix(conv, "d:")
	if !ok {
		return "", "", false
	}
	n, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return "", "", false
	}
	l, err := strconv.Atoi(n)
	if err != nil || l < 0 || l+1 > len(rest) || rest[l] != ':' {
		return "", "", false
	}
	return rest[:l], rest[l+1:], true
}

// validGroup: 1–64 characters of [A-Za-z0-9._-].
func validGroup(g string) bool { return protocol.ValidEdgeID(g) }

// members returns the members of conv if user is one of them.
func (p *Plugin) members(ctx context.Context, conv, user string) ([]string, error) {
	if a, b, ok := parseDirect(conv); ok {
		if user != a && user != b {
			return nil, protocol.NewError(protocol.ErrForbidden, "not a member")
		}
		if a == b {
			return []string{a}, nil
		}
		return []string{a, b}, nil
	}
	g, ok := strings.CutPrefix(conv, "g:")
	if !ok || !validGroup(g) {
		return nil, protocol.NewError(protocol.ErrInvalidData, "invalid conv")
	}
	ms, err := p.cfg.Store.Members(ctx, g)
	if err != nil {
		return nil, logic.Transient(err)
	}
	for _, m := range ms {
		if m == user {
			return ms, nil
		}
	}
	return nil, protocol.NewError(protocol.ErrForbidden, "not a member")
}

type sendReq struct {
	To    string `json:"to"`
	Group string `json:"group"`
	Text  string `json:"text"`
	CMID  string `json:"cmid"`
}

type sendReply struct {
	Conv string `json:"conv"`
	Seq  uint64 `json:"seq"`
	ID   string `json:"id"`
	TS   int64  `json:"ts"`
	Dup  bool   `json:"dup,omitempty"`
}

func (p *Plugin) send(ctx context.Context, c *logic.Context) error {
	if c.User == "" {
		return protocol.NewError(protocol.ErrForbidden, "anonymous")
	}
	var req sendReq
	if !decodeSendFast(c.Data, &req) {
		if err := c.Bind(&req); err != nil {
			return err
		}
	}
	switch {
	case (req.To == "") == (req.Group == ""):
		return protocol.NewError(protocol.ErrInvalidData, "exactly one of to and group")
	case req.Text == "" || !utf8.ValidString(req.Text):
		return protocol.NewError(protocol.ErrInvalidData, "empty text")
	case len(req.Text) > p.cfg.MaxText:
		return protocol.NewError(protocol.ErrTooLarge, "text too long")
	case len(req.CMID) > p.cfg.MaxCMID || !utf8.ValidString(req.CMID) || len(req.To) > 256:
		return protocol.NewError(protocol.ErrInvalidData, "cmid or to too long")
	case req.Group != "" && !validGroup(req.Group):
		return protocol.NewError(protocol.ErrInvalidData, "invalid group")
	}
	conv := GroupConv(req.Group)
	if req.To != "" {
		conv = DirectConv(c.User, req.To)
	}
	members, err := p.members(ctx, conv, c.User)
	if err != nil {
		return err
	}
	ts := time.Now().UnixMilli()
	m, dup, err := p.cfg.Store.Append(ctx, Message{Conv: conv, From: c.User, CMID: req.CMID, Text: req.Text, TS: ts}, members)
	if err != nil {
		return logic.Transient(err)
	}
	// One buffer for both frames: a Sender encodes the frame into its envelope before it
	// returns, so the message's bytes are free again for the reply.
	buf := make([]byte, 0, 80+jsonLen(m.Conv)*2+jsonLen(m.From)+jsonLen(m.CMID)+jsonLen(m.Text))
	data := appendMessage(buf, &m)
	// Chat is at-least-once: never shed.
	if err := c.Send().ToUsers(ctx, members, logic.Out{Frame: protocol.ServerFrame{Type: TypeMsg, Data: data},
		Priority: protocol.PrioritySystem, Exclude: c.Conn}); err != nil {
		return err
	}
	c.Reply(appendSendReply(data[:0], &sendReply{Conv: conv, Seq: m.Seq, ID: m.ID, TS: m.TS, Dup: dup}))
	return nil
}

type syncReq struct {
	Conv  string  `json:"conv"`
	Since *uint64 `json:"since"`
	Limit int     `json:"limit"`
}

type syncReply struct {
	Conv     string    `json:"conv"`
	Messages []Message `json:"messages"`
	More     bool      `json:"more"`
}

func (p *Plugin) sync(ctx context.Context, c *logic.Context) error {
	var req syncReq
	if err := c.Bind(&req); err != nil {
		return err
	}
	if _, err := p.members(ctx, req.Conv, c.User); err != nil {
		return err
	}
	limit := req.Limit
	if limit <= 0 || limit > p.cfg.SyncLimit {
		limit = p.cfg.SyncLimit
	}
	var since uint64
	if req.Since != nil {
		since = *req.Since
	} else {
		convs, err := p.cfg.Store.Convs(ctx, c.User)
		if err != nil {
			return logic.Transient(err)
		}
		for _, s := range convs {
			if s.Conv == req.Conv {
				since = s.Acked
			}
		}
	}
	ms, err := p.cfg.Store.Since(ctx, req.Conv, since, limit+1)
	if err != nil {
		return logic.Transient(err)
	}
	more := len(ms) > limit
	if more {
		ms = ms[:limit]
	}
	if ms == nil {
		ms = []Message{}
	}
	return c.ReplyJSON(syncReply{Conv: req.Conv, Messages: ms, More: more})
}

func (p *Plugin) convs(ctx context.Context, c *logic.Context) error {
	cs, err := p.cfg.Store.Convs(ctx, c.User)
	if err != nil {
		return logic.Transient(err)
	}
	if cs == nil {
		cs = []ConvState{}
	}
	return c.ReplyJSON(map[string]any{"convs": cs})
}

type ackReq struct {
	Conv string `json:"conv"`
	Seq  uint64 `json:"seq"`
}

func (p *Plugin) ack(ctx context.Context, c *logic.Context) error {
	var req ackReq
	if err := c.Bind(&req); err != nil {
		return err
	}
	if _, err := p.members(ctx, req.Conv, c.User); err != nil {
		return err
	}
	if err := p.cfg.Store.Ack(ctx, c.User, req.Conv, req.Seq); err != nil {
		return logic.Transient(err)
	}
	return nil
}

type groupReq struct {
	Group string `json:"group"`
}

func (p *Plugin) join(ctx context.Context, c *logic.Context) error {
	return p.membership(ctx, c, p.cfg.Store.Join)
}

func (p *Plugin) leave(ctx context.Context, c *logic.Context) error {
	return p.membership(ctx, c, p.cfg.Store.Leave)
}

func (p *Plugin) membership(ctx context.Context, c *logic.Context, op func(ctx context.Context, group, user string) error) error {
	if c.User == "" {
		return protocol.NewError(protocol.ErrForbidden, "anonymous")
	}
	var req groupReq
	if err := c.Bind(&req); err != nil {
		return err
	}
	if !validGroup(req.Group) {
		return protocol.NewError(protocol.ErrInvalidData, "invalid group")
	}
	if err := op(ctx, req.Group, c.User); err != nil {
		return logic.Transient(err)
	}
	return c.ReplyJSON(map[string]string{"conv": GroupConv(req.Group)})
}
