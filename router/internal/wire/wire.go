// Package wire converts between presence types and the generated API messages, and between
// presence errors and gRPC status codes. Shared by router/server and router/client.
package wire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-io/switchboard/router/api"
	"github.com/switchboard-io/switchboard/router/presence"
)

// LeaseLostPrefix starts the message of every FAILED_PRECONDITION status that means
// presence.ErrLeaseLost.
const LeaseLostPrefix = "lease lost"

// Status maps a presence error to a gRPC status error.
func Status(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, presence.ErrLeaseLost):
		return status.Error(codes.FailedPrecondition, LeaseLostPrefix+": "+msg)
	case errors.Is(err, presence.ErrInvalid):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, presence.ErrUnavailable):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	}
	return status.Error(codes.Internal, msg)
}

// Error maps a gRPC error back to a presence sentinel (wrapped, with the server's message).
// A cancelled or expired ctx of the caller is reported as ctx.Err() wrapped in ErrUnavailable,
// so errors.Is works for both.
func Error(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("router/client: %s: %w: %w", op, presence.ErrUnavailable, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.FailedPrecondition:
		if strings.HasPrefix(msg, LeaseLostPrefix) {
			return fmt.Errorf("router/client: %s: %s: %w", op, msg, presence.ErrLeaseLost)
		}
	case codes.InvalidArgument:
		return fmt.Errorf("router/client: %s: %s: %w", op, msg, presence.ErrInvalid)
	case codes.Canceled, codes.DeadlineExceeded:
		if ctx.Err() != nil {
			return fmt.Errorf("router/client: %s: %w: %w", op, presence.ErrUnavailable, ctx.Err())
		}
	}
	return fmt.Errorf("router/client: %s: %s: %s: %w", op, st.Code(), msg, presence.ErrUnavailable)
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Ops converts ops to the wire.
func Ops(ops []presence.Op) []*api.Op {
	out := make([]*api.Op, len(ops))
	buf := make([]api.Op, len(ops))
	for i := range ops {
		o := &ops[i]
		w := &buf[i]
		w.Kind = api.OpKind(o.Kind)
		w.ConnId = o.ConnID
		w.User = o.User
		w.Room = o.Room
		w.Meta = o.Meta
		w.AtUnixNano = nanos(o.At)
		out[i] = w
	}
	return out
}

// FromOps converts ops from the wire.
func FromOps(ops []*api.Op) []presence.Op {
	out := make([]presence.Op, len(ops))
	for i, w := range ops {
		out[i] = presence.Op{
			Kind:   presence.OpKind(w.GetKind()),
			ConnID: w.GetConnId(),
			User:   w.GetUser(),
			Room:   w.GetRoom(),
			Meta:   w.GetMeta(),
			At:     fromNanos(w.GetAtUnixNano()),
		}
	}
	return out
}

// Conns converts connections to the wire.
func Conns(cs []presence.Conn) []*api.Conn {
	out := make([]*api.Conn, len(cs))
	buf := make([]api.Conn, len(cs))
	for i := range cs {
		c := &cs[i]
		w := &buf[i]
		w.Edge = c.Edge
		w.Epoch = c.Epoch
		w.ConnId = c.ConnID
		w.User = c.User
		w.Meta = c.Meta
		w.ConnectedAtUnixNano = nanos(c.ConnectedAt)
		out[i] = w
	}
	return out
}

// FromConns converts connections from the wire. user, when not empty, fills empty User fields.
func FromConns(ws []*api.Conn, user string) []presence.Conn {
	out := make([]presence.Conn, len(ws))
	for i, w := range ws {
		u := w.GetUser()
		if u == "" {
			u = user
		}
		out[i] = presence.Conn{
			Edge:        w.GetEdge(),
			Epoch:       w.GetEpoch(),
			ConnID:      w.GetConnId(),
			User:        u,
			Meta:        w.GetMeta(),
			ConnectedAt: fromNanos(w.GetConnectedAtUnixNano()),
		}
	}
	return out
}

// Event converts an event to the wire.
func Event(ev presence.Event) *api.Event {
	return &api.Event{Kind: api.EventKind(ev.Kind), User: ev.User, Edge: ev.Edge, AtUnixNano: nanos(ev.At)}
}

// FromEvent converts an event from the wire.
func FromEvent(w *api.Event) presence.Event {
	return presence.Event{Kind: presence.EventKind(w.GetKind()), User: w.GetUser(), Edge: w.GetEdge(), At: fromNanos(w.GetAtUnixNano())}
}
