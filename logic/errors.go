package logic

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Errors.
var (
	// ErrStarted is returned by a second Run.
	ErrStarted = errors.New("logic: already running")
	// ErrDuplicateRoute is returned by New when two handlers claim one frame type.
	ErrDuplicateRoute = errors.New("logic: duplicate route")
)

// transientError marks a failure worth retrying: the upstream frame is negatively acknowledged
// and redelivered (possibly to another replica) instead of being answered with an error.
type transientError struct{ err error }

func (e *transientError) Error() string { return "logic: transient: " + e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient wraps err so that the runtime nacks the frame for redelivery (a store or the bus
// was unavailable) instead of answering the client with an error frame. nil stays nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

// IsTransient reports whether err is worth a redelivery: wrapped by Transient, or a bus or
// presence outage, or a deadline.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t) || errors.Is(err, bus.ErrUnavailable) || errors.Is(err, bus.ErrFull) ||
		errors.Is(err, presence.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// CloseError, returned by a connect hook, refuses the connection: the edge closes it with Code
// and Reason. Returned by a message handler, it closes the sender's connection.
type CloseError struct {
	Code   protocol.CloseCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("logic: close %d %s", e.Code, e.Reason)
}

// Refuse returns a *CloseError with code and reason (the code's text if empty).
func Refuse(code protocol.CloseCode, reason string) *CloseError {
	if reason == "" {
		reason = code.String()
	}
	return &CloseError{Code: code, Reason: reason}
}
