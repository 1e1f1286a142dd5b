package protocol

import (
	"errors"
	"unicode/utf8"
)

// Subprotocols negotiated with Sec-WebSocket-Protocol. A client that offers none gets JSON.
const (
	SubprotocolJSON     = "switchboard.v1.json"
	SubprotocolProtobuf = "switchboard.v1.proto"
)

// Reserved server frame types.
const (
	TypeAck     = "ack"
	TypeError   = "error"
	TypeMove    = "move"
	TypeWelcome = "welcome"
)

// Decoding errors.
var (
	ErrMalformed   = errors.New("protocol: malformed frame")
	ErrMissingType = errors.New("protocol: frame has no type")
	ErrFieldTooBig = errors.New("protocol: field too long")
)

// Limits on the small fields of a client frame.
const (
	MaxTypeLen        = 128
	MaxIDLen          = 64
	MaxTraceparentLen = 128
)

// Frame is a client frame. Its fields alias the buffer it was decoded from and stay valid
// only until that buffer is reused.
type Frame struct {
	Type        []byte // route, e.g. "chat.send"; required
	ID          []byte // optional client id; the server's ack/error echoes it
	Data        []byte // JSON value (JSON form) or bytes holding JSON (protobuf form); may be empty
	Traceparent []byte // optional W3C traceparent to join the client's trace
}

// Reset clears f for reuse.
func (f *Frame) Reset() { *f = Frame{} }

// ServerFrame is a frame from the server to a client: a delivery, ack, error, move or welcome.
type ServerFrame struct {
	Type    string
	ID      string    // the client id an ack or error answers
	Code    ErrorCode // error frames
	Message string    // error frames
	Data    []byte    // a JSON value (deliveries, move, welcome); nil for none
}

// Codec encodes and decodes client protocol v1 in one form.
type Codec interface {
	// Subprotocol is the Sec-WebSocket-Protocol value of the form.
	Subprotocol() string
	// Binary reports whether frames travel as binary (true) or text (false) WebSocket messages.
	Binary() bool
	// DecodeFrame decodes a client frame; f's fields alias b.
	DecodeFrame(b []byte, f *Frame) error
	// AppendFrame appends the encoding of a client frame to dst (used by clients).
	AppendFrame(dst []byte, f *Frame) []byte
	// AppendServerFrame appends the encoding of a server frame to dst.
	AppendServerFrame(dst []byte, f *ServerFrame) []byte
	// DecodeServerFrame decodes a server frame (used by clients). It copies what it keeps.
	DecodeServerFrame(b []byte, f *ServerFrame) error
}

// JSON and Protobuf are the two forms of client protocol v1.
var (
	JSON     Codec = jsonCodec{}
	Protobuf Codec = protoCodec{}
)

// CodecFor returns the codec for a negotiated subprotocol; "" means JSON. ok is false for an
// unknown subprotocol.
func CodecFor(subprotocol string) (c Codec, ok bool) {
	switch subprotocol {
	case "", SubprotocolJSON:
		return JSON, true
	case SubprotocolProtobuf:
		return Protobuf, true
	}
	return nil, false
}

func checkFrame(f *Frame) error {
	switch {
	case len(f.Type) == 0:
		return ErrMissingType
	case len(f.Type) > MaxTypeLen, len(f.ID) > MaxIDLen, len(f.Traceparent) > MaxTraceparentLen:
		return ErrFieldTooBig
	case !utf8.Valid(f.Type) || !utf8.Valid(f.ID) || !utf8.Valid(f.Traceparent):
		return ErrMalformed
	}
	return nil
}

// AppendMoveData appends the data of a "move" control frame: reconnect after delayMs.
func AppendMoveData(dst []byte, delayMs int64, reason string) []byte {
	dst = append(dst, `{"delay_ms":`...)
	dst = appendInt(dst, delayMs)
	dst = append(dst, `,"reason":`...)
	dst = appendQuoted(dst, reason)
	return append(dst, '}')
}

func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}
