package logic

import (
	"context"
	"encoding/json"
	"time"

	"github.com/switchboard-io/switchboard/protocol"
)

// Conn addresses one client connection: the edge that holds it, the edge's epoch (a restarted
// edge has a new one, and ids of its previous life mean nothing) and the id within the epoch.
type Conn struct {
	Edge  string
	Epoch uint64
	ID    uint64
}

// IsZero reports whether c addresses nothing.
func (c Conn) IsZero() bool { return c.Edge == "" && c.ID == 0 }

// Kind says what a Context carries.
type Kind = protocol.UpKind

// Kinds of Context.
const (
	KindConnect    = protocol.UpConnect    // a connection was accepted: connect hooks run
	KindMessage    = protocol.UpMessage    // a client frame: the handler for Type runs
	KindDisconnect = protocol.UpDisconnect // a connection closed: disconnect hooks run
)

// Context is one upstream event handed to a handler: the typed message (no bus types) and a
// Sender bound to it. It is valid only until the handler returns and is used by one goroutine.
//
// Deliveries made through the Context (Reply, Error, Join, Send()...) are published
// asynchronously; the runtime waits for all of them to be accepted by the bus before it
// acknowledges the upstream frame, and nacks the frame (redelivery) if one failed. A handler
// therefore never needs to wait for its own sends.
type Context struct {
	Kind         Kind
	Conn         Conn              // the client's connection
	User         string            // the authenticated user id ("" for anonymous connections)
	Meta         map[string]string // KindConnect: client metadata (subprotocol, user agent, ...)
	Type         string            // KindMessage: the frame's route, e.g. "chat.send"
	ID           string            // KindMessage: the client's frame id ("" = none)
	Data         []byte            // KindMessage: the frame's JSON data (may be empty)
	Traceparent  string            // W3C trace context to propagate (the span of this handling)
	ReceivedAt   time.Time         // when the edge received the frame (zero if unknown)
	Redeliveries int               // how many times this frame was delivered before
	CloseCode    uint32            // KindDisconnect: the close code

	send Sender
	pend pending // send's pending publishes (one allocation with the Context)
}

// Bind decodes the frame's JSON data into v. A decoding failure is returned as a
// *protocol.Error with ErrInvalidData, so a handler may return it as is.
func (c *Context) Bind(v any) error {
	if len(c.Data) == 0 {
		return protocol.NewError(protocol.ErrInvalidData, "missing data")
	}
	if err := json.Unmarshal(c.Data, v); err != nil {
		return protocol.NewError(protocol.ErrInvalidData, "bad data: "+err.Error())
	}
	return nil
}

// Send returns the Sender bound to this frame: its publishes are awaited before the frame is
// acknowledged, and they carry the frame's trace context.
func (c *Context) Send() *Sender { return &c.send }

// Reply sends data (a JSON value, may be nil) to the client's connection as a frame of the
// request's type carrying the request's id, so the client can match it. Never shed.
func (c *Context) Reply(data []byte) {
	c.ReplyFrame(protocol.ServerFrame{Type: c.Type, ID: c.ID, Data: data})
}

// ReplyJSON marshals v and replies with it.
func (c *Context) ReplyJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.Reply(b)
	return nil
}

// ReplyFrame sends f to the client's connection. Never shed.
func (c *Context) ReplyFrame(f protocol.ServerFrame) {
	c.send.conn(c.Conn, Out{Frame: f, Priority: protocol.PrioritySystem})
}

// Error sends an "error" frame answering the request's id to the client's connection. A handler
// may instead return a *protocol.Error; the runtime sends the same frame.
func (c *Context) Error(code protocol.ErrorCode, msg string) {
	if msg == "" {
		msg = code.String()
	}
	c.ReplyFrame(protocol.ServerFrame{Type: protocol.TypeError, ID: c.ID, Code: code, Message: msg})
}

// Join joins the client's connection to rooms.
func (c *Context) Join(ctx context.Context, rooms ...string) error {
	return c.send.Join(ctx, c.Conn, rooms...)
}

// Leave removes the client's connection from rooms.
func (c *Context) Leave(ctx context.Context, rooms ...string) error {
	return c.send.Leave(ctx, c.Conn, rooms...)
}

// Close closes the client's connection with code and reason.
func (c *Context) Close(ctx context.Context, code protocol.CloseCode, reason string) error {
	return c.send.Close(ctx, c.Conn, code, reason)
}

// Context implements nothing of context.Context on purpose: the handler gets its ctx as the
// first argument (bounded by Config.HandlerTimeout).
