package protocol

// CloseCode is a WebSocket close status code sent by the edge.
type CloseCode uint16

// Close codes. 1000–1015 are RFC 6455's; 4000–4999 are Switchboard's (private use range).
const (
	CloseNormal         CloseCode = 1000
	CloseGoingAway      CloseCode = 1001
	CloseProtocolError  CloseCode = 1002
	CloseUnsupported    CloseCode = 1003
	CloseInvalidPayload CloseCode = 1007
	ClosePolicy         CloseCode = 1008
	CloseTooBig         CloseCode = 1009
	CloseInternal       CloseCode = 1011
	CloseRestart        CloseCode = 1012

	CloseBadFrame     CloseCode = 4000
	CloseTokenExpired CloseCode = 4001
	CloseSlowConsumer CloseCode = 4002
	CloseKicked       CloseCode = 4003
	CloseRateLimited  CloseCode = 4004
	CloseIdleTimeout  CloseCode = 4005
	CloseReplaced     CloseCode = 4006
)

var closeText = map[CloseCode]string{
	CloseNormal:         "normal closure",
	CloseGoingAway:      "going away",
	CloseProtocolError:  "protocol error",
	CloseUnsupported:    "unsupported data",
	CloseInvalidPayload: "invalid payload",
	ClosePolicy:         "policy violation",
	CloseTooBig:         "message too big",
	CloseInternal:       "internal error",
	CloseRestart:        "service restart",
	CloseBadFrame:       "bad frames",
	CloseTokenExpired:   "token expired",
	CloseSlowConsumer:   "slow consumer",
	CloseKicked:         "kicked",
	CloseRateLimited:    "rate limited",
	CloseIdleTimeout:    "idle timeout",
	CloseReplaced:       "replaced",
}

// String returns the code's short reason text, suitable as a close frame reason.
func (c CloseCode) String() string {
	if s, ok := closeText[c]; ok {
		return s
	}
	return "close"
}

// ErrorCode is the stable numeric code of an "error" server frame.
type ErrorCode uint32

// Error codes carried by "error" frames.
const (
	ErrInternal    ErrorCode = 1000
	ErrBadFrame    ErrorCode = 1001
	ErrUnknownType ErrorCode = 1002
	ErrTooLarge    ErrorCode = 1003
	ErrRateLimited ErrorCode = 1004
	ErrUnavailable ErrorCode = 1005
	ErrForbidden   ErrorCode = 1006
	ErrInvalidData ErrorCode = 1007
	ErrNotFound    ErrorCode = 1008
	ErrTimeout     ErrorCode = 1009
)

var errorText = map[ErrorCode]string{
	ErrInternal:    "internal error",
	ErrBadFrame:    "bad frame",
	ErrUnknownType: "unknown type",
	ErrTooLarge:    "too large",
	ErrRateLimited: "rate limited",
	ErrUnavailable: "unavailable, not accepted",
	ErrForbidden:   "forbidden",
	ErrInvalidData: "invalid data",
	ErrNotFound:    "not found",
	ErrTimeout:     "timeout",
}

// String returns the code's default message.
func (c ErrorCode) String() string {
	if s, ok := errorText[c]; ok {
		return s
	}
	return "error"
}

// Error is an application error with a stable code, returned by plugins and turned into an
// "error" frame for the client.
type Error struct {
	Code    ErrorCode
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "protocol: " + e.Code.String()
	}
	return "protocol: " + e.Code.String() + ": " + e.Message
}

// NewError returns an *Error with code and message (the code's default text if empty).
func NewError(code ErrorCode, message string) *Error {
	if message == "" {
		message = code.String()
	}
	return &Error{Code: code, Message: message}
}
