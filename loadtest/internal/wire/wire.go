// Package wire holds every frame the load generator sends or reads, for each system under
// test, in one place so the names are easy to adjust when a protocol changes.
//
// Three adapters exist:
//
//   - switchboard: client protocol v1, JSON form (see the protocol module's doc.go). Dev auth
//     with ?user=<id> (or an HS256 token); the server greets with "welcome"; rooms through the
//     danmaku plugin (room.join / danmaku.send → "danmaku" deliveries, or merged batches whose
//     items carry the texts); direct messages through the chat plugin (chat.send {to, text,
//     cmid} → chat.msg {from, text, …}); echo through the echo plugin. Any other delivery whose
//     data carries a text counts as a room delivery, so a renamed route never reads as loss.
//   - naive: the naivehub baseline in this module. Same frames as switchboard; room deliveries
//     are "danmaku.message" frames, direct messages "chat.message".
//   - centrifugo: Centrifugo v5's JSON client protocol (protocol v2): a connect command,
//     subscribe to a channel per room and a personal channel per user for chat, client-side
//     publish (allowed by the insecure config in tools/centrifugo), {} pings answered with {}.
//
// Adapters are stateless and safe for concurrent use.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Switchboard / naive frame types.
const (
	TypeWelcome       = "welcome"
	TypeAck           = "ack"
	TypeError         = "error"
	TypeMove          = "move"
	TypeRoomJoin      = "room.join" // the danmaku plugin's join (logic/plugins/danmaku)
	TypeRoomSend      = "danmaku.send"
	TypeRoomBatch     = "danmaku.batch"   // switchboard: merged deliveries {room, items:[{user,text}]}
	TypeRoomMessage   = "danmaku.message" // naive: one delivery {room, user, text}
	TypeChatSend      = "chat.send"
	TypeChatMessage   = "chat.message" // naive hub
	TypeChatMsg       = "chat.msg"     // switchboard chat plugin: {conv, seq, id, from, cmid, text, ts}
	TypeEcho          = "echo"
	CentrifugoPrefixU = "u_" // Centrifugo personal channel of a user: u_<user>
)

// Kind classifies a server frame.
type Kind int

// Kinds of server frames.
const (
	KindOther   Kind = iota
	KindWelcome      // the connection is established (switchboard/naive welcome, Centrifugo connect reply)
	KindAck          // a command with ID was accepted (ack, Centrifugo reply)
	KindError        // a command with ID (or the connection) failed
	KindRoom         // room deliveries: Texts holds one text per delivered message
	KindChat         // a direct message: From, Text
	KindEcho         // an echo reply: Text holds the echoed payload's text
	KindPing         // an application ping that must be answered with Adapter.Pong
	KindMove         // the server asks the client to reconnect elsewhere
)

// Event is one decoded server frame. Its slices are reused between callbacks: copy what you keep.
type Event struct {
	Kind  Kind
	ID    uint64 // the command id an ack/error answers (0 if none or not numeric)
	Texts []string
	From  string
	Text  string
	Err   string
}

// Adapter builds client frames and decodes server frames for one system.
type Adapter interface {
	// Name is the -protocol value.
	Name() string
	// URL returns the URL a client of user dials, from the base target URL.
	URL(base, user string) (string, error)
	// Connect is the first frame to send after the handshake, or nil if the server greets
	// unprompted. The connection is ready on the KindWelcome event either way.
	Connect(user string, id uint64) []byte
	// Join joins room; the server answers with KindAck/KindError carrying id.
	Join(room string, id uint64) []byte
	// Inbox subscribes user to its direct messages, or returns nil when the server routes
	// direct messages by user without a subscription.
	Inbox(user string, id uint64) []byte
	// Send publishes text to room. id 0 asks for no acknowledgement where the protocol allows.
	Send(room, user, text string, id uint64) []byte
	// Chat sends a direct message from → to.
	Chat(from, to, text, mid string, id uint64) []byte
	// Echo asks the server to echo text back.
	Echo(text string, id uint64) []byte
	// Pong answers a KindPing event.
	Pong() []byte
	// Parse decodes one WebSocket message, calling fn for each frame it holds (Centrifugo
	// batches several frames per message, newline-separated).
	Parse(msg []byte, fn func(*Event)) error
}

// ErrUnknownProtocol is returned by For for an unknown name.
var ErrUnknownProtocol = errors.New("wire: unknown protocol (want switchboard, centrifugo or naive)")

// Options adjust the Switchboard and naive adapters to a server's route names.
type Options struct {
	// JoinType is the frame type that joins a room. Empty means danmaku.join.
	JoinType string
	// SendType is the frame type that sends to a room. Empty means danmaku.send.
	SendType string
	// JWTSecret, when set, makes Switchboard clients present an HS256 token (sub = the user,
	// valid for a day) as ?token= instead of the dev ?user=, so handshakes include auth.
	JWTSecret []byte
	// JWTAudience is the token's aud claim. Empty means none.
	JWTAudience string
}

// For returns the adapter named name.
func For(name string, o Options) (Adapter, error) {
	sb := Switchboard{JoinType: o.JoinType, SendType: o.SendType, JWTSecret: o.JWTSecret, JWTAudience: o.JWTAudience}
	switch name {
	case "switchboard", "":
		return sb, nil
	case "naive":
		return Naive{sb}, nil
	case "centrifugo":
		return Centrifugo{}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownProtocol, name)
}

// ---------------------------------------------------------------------------------------------
// Switchboard (and naive, which embeds it)

// Switchboard speaks client protocol v1 (JSON form). The zero value uses the danmaku routes.
type Switchboard struct {
	JoinType    string // empty: danmaku.join
	SendType    string // empty: danmaku.send
	JWTSecret   []byte // set: ?token=<HS256 JWT> instead of ?user=
	JWTAudience string // the token's aud claim, if any
}

var _ Adapter = Switchboard{}

func (Switchboard) Name() string { return "switchboard" }

func (s Switchboard) URL(base, user string) (string, error) {
	if len(s.JWTSecret) == 0 {
		return withQuery(base, "user", user)
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(24 * time.Hour)),
	}
	if s.JWTAudience != "" {
		claims.Audience = jwt.ClaimStrings{s.JWTAudience}
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.JWTSecret)
	if err != nil {
		return "", fmt.Errorf("wire: sign token: %w", err)
	}
	return withQuery(base, "token", tok)
}

func (Switchboard) Connect(string, uint64) []byte { return nil }

func (s Switchboard) Join(room string, id uint64) []byte {
	t := s.JoinType
	if t == "" {
		t = TypeRoomJoin
	}
	return sbFrame(t, id, map[string]string{"room": room})
}

func (Switchboard) Inbox(string, uint64) []byte { return nil }

func (s Switchboard) Send(room, _, text string, id uint64) []byte {
	t := s.SendType
	if t == "" {
		t = TypeRoomSend
	}
	return sbFrame(t, id, map[string]string{"room": room, "text": text})
}

func (Switchboard) Chat(_, to, text, mid string, id uint64) []byte {
	return sbFrame(TypeChatSend, id, map[string]string{"to": to, "text": text, "cmid": mid})
}

func (Switchboard) Echo(text string, id uint64) []byte {
	return sbFrame(TypeEcho, id, map[string]string{"text": text})
}

func (Switchboard) Pong() []byte { return nil }

type sbServerFrame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

type sbItem struct {
	User string `json:"user"`
	From string `json:"from"`
	Text string `json:"text"`
}

type sbBatch struct {
	Room  string   `json:"room"`
	Items []sbItem `json:"items"`
	User  string   `json:"user"`
	Text  string   `json:"text"`
	From  string   `json:"from"`
}

func (Switchboard) Parse(msg []byte, fn func(*Event)) error { return parseSB(msg, fn) }

func parseSB(msg []byte, fn func(*Event)) error {
	var f sbServerFrame
	if err := json.Unmarshal(msg, &f); err != nil {
		return fmt.Errorf("wire: switchboard frame: %w", err)
	}
	ev := Event{ID: parseID(f.ID)}
	switch f.Type {
	case TypeWelcome:
		ev.Kind = KindWelcome
	case TypeAck:
		ev.Kind = KindAck
	case TypeError:
		ev.Kind = KindError
		ev.Err = strconv.Itoa(f.Code) + " " + f.Message
	case TypeMove:
		ev.Kind = KindMove
	case TypeRoomBatch, TypeRoomMessage:
		var b sbBatch
		if err := json.Unmarshal(f.Data, &b); err != nil {
			return fmt.Errorf("wire: %s data: %w", f.Type, err)
		}
		ev.Kind = KindRoom
		if len(b.Items) > 0 {
			ev.Texts = make([]string, 0, len(b.Items))
			for _, it := range b.Items {
				ev.Texts = append(ev.Texts, it.Text)
			}
		} else if b.Text != "" {
			ev.Texts = []string{b.Text}
		}
	case TypeChatMessage, TypeChatMsg:
		var b sbItem
		if err := json.Unmarshal(f.Data, &b); err != nil {
			return fmt.Errorf("wire: %s data: %w", f.Type, err)
		}
		ev.Kind, ev.From, ev.Text = KindChat, b.From, b.Text
	case TypeEcho:
		var b sbItem
		_ = json.Unmarshal(f.Data, &b) // any JSON value may be echoed; text is optional
		ev.Kind, ev.Text = KindEcho, b.Text
	default:
		ev.Kind = KindOther
		if f.ID != "" {
			// A reply frame of a plugin answering the command id counts as an ack.
			ev.Kind = KindAck
			break
		}
		// Any other delivery carrying a text (or merged items with texts) counts as a room
		// delivery, so a renamed route does not silently read as loss.
		var b sbBatch
		if len(f.Data) > 0 && f.Data[0] == '{' && json.Unmarshal(f.Data, &b) == nil {
			for _, it := range b.Items {
				ev.Texts = append(ev.Texts, it.Text)
			}
			if len(ev.Texts) == 0 && b.Text != "" {
				ev.Texts = []string{b.Text}
			}
			if len(ev.Texts) > 0 {
				ev.Kind = KindRoom
			}
		}
	}
	fn(&ev)
	return nil
}

func sbFrame(typ string, id uint64, data any) []byte {
	f := struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
		Data any    `json:"data"`
	}{Type: typ, Data: data}
	if id != 0 {
		f.ID = strconv.FormatUint(id, 10)
	}
	b, _ := json.Marshal(f) // maps of strings always marshal
	return b
}

// Naive speaks the naivehub protocol: switchboard's frames without merged deliveries.
type Naive struct{ Switchboard }

var _ Adapter = Naive{}

func (Naive) Name() string { return "naive" }

// ---------------------------------------------------------------------------------------------
// Centrifugo v5 (JSON protocol v2)

// Centrifugo speaks Centrifugo's JSON client protocol.
type Centrifugo struct{}

var _ Adapter = Centrifugo{}

func (Centrifugo) Name() string { return "centrifugo" }

// URL leaves the base alone: the insecure config accepts anonymous connections.
func (Centrifugo) URL(base, _ string) (string, error) { return withQuery(base, "", "") }

func (Centrifugo) Connect(user string, id uint64) []byte {
	return cfCmd(id, "connect", map[string]any{"name": "wsload"})
}

func (Centrifugo) Join(room string, id uint64) []byte {
	return cfCmd(id, "subscribe", map[string]any{"channel": room})
}

func (Centrifugo) Inbox(user string, id uint64) []byte {
	return cfCmd(id, "subscribe", map[string]any{"channel": CentrifugoPrefixU + user})
}

func (Centrifugo) Send(room, user, text string, id uint64) []byte {
	if id == 0 {
		id = 1 // Centrifugo requires an id on publish commands
	}
	return cfCmd(id, "publish", map[string]any{"channel": room, "data": map[string]string{"user": user, "text": text}})
}

func (Centrifugo) Chat(from, to, text, mid string, id uint64) []byte {
	if id == 0 {
		id = 1
	}
	return cfCmd(id, "publish", map[string]any{"channel": CentrifugoPrefixU + to,
		"data": map[string]string{"from": from, "text": text, "mid": mid}})
}

// Echo uses an RPC call; without an RPC proxy Centrifugo answers it with an error, which the
// generator counts as the round trip.
func (Centrifugo) Echo(text string, id uint64) []byte {
	return cfCmd(id, "rpc", map[string]any{"method": "echo", "data": map[string]string{"text": text}})
}

func (Centrifugo) Pong() []byte { return []byte("{}") }

type cfReply struct {
	ID      uint64          `json:"id"`
	Error   *cfError        `json:"error"`
	Push    *cfPush         `json:"push"`
	Connect json.RawMessage `json:"connect"`
}

type cfError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type cfPush struct {
	Channel string `json:"channel"`
	Pub     *struct {
		Data sbItem `json:"data"`
	} `json:"pub"`
	Disconnect *cfError `json:"disconnect"`
}

func (Centrifugo) Parse(msg []byte, fn func(*Event)) error {
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var r cfReply
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("wire: centrifugo frame: %w", err)
		}
		ev := Event{ID: r.ID}
		switch {
		case r.Error != nil:
			ev.Kind, ev.Err = KindError, strconv.Itoa(r.Error.Code)+" "+r.Error.Message
		case r.Push != nil && r.Push.Pub != nil:
			d := r.Push.Pub.Data
			if d.From != "" {
				ev.Kind, ev.From, ev.Text = KindChat, d.From, d.Text
			} else {
				ev.Kind, ev.Texts = KindRoom, []string{d.Text}
			}
		case r.Push != nil && r.Push.Disconnect != nil:
			ev.Kind, ev.Err = KindError, "disconnect "+r.Push.Disconnect.Message
		case r.Push != nil:
			ev.Kind = KindOther
		case r.Connect != nil:
			ev.Kind = KindWelcome
		case r.ID != 0:
			ev.Kind = KindAck
		default:
			ev.Kind = KindPing // {} is a ping in protocol v2
		}
		fn(&ev)
	}
	return nil
}

func cfCmd(id uint64, name string, body any) []byte {
	m := map[string]any{name: body}
	if id != 0 {
		m["id"] = id
	}
	b, _ := json.Marshal(m)
	return b
}

// ---------------------------------------------------------------------------------------------

func withQuery(base, key, value string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("wire: target %q: %w", base, err)
	}
	if key != "" {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

func parseID(s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return v
}
