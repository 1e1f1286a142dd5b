// Package protocol holds Switchboard's wire formats, shared by every tier and by clients:
//
//   - client protocol v1: frames between a client and an edge, in a JSON text form
//     (subprotocol "switchboard.v1.json", the default) and a protobuf binary form
//     ("switchboard.v1.proto") of the same messages;
//   - bus envelopes (protobuf): Upstream (edge → logic) and Downstream (logic → edge);
//   - topic names and message property keys on the bus;
//   - close codes and error codes.
//
// The package imports no transport. Encoders append to a caller's buffer (Append…); decoders
// read from a buffer (Decode…) and, where documented, return slices that alias it: those stay
// valid only until the caller reuses the buffer.
//
// # Client frames
//
// A client frame has a type (a route such as "chat.send", "room.join", "danmaku.send"), an
// optional client id (the server answers it with "ack" or "error" carrying the same id), a data
// payload (any JSON value in the JSON form; bytes holding JSON in the protobuf form) and an
// optional W3C traceparent:
//
//	{"type":"chat.send","id":"7","data":{"to":"bob","text":"hi"}}
//
// Server frames share one shape. Deliveries carry the application type and data; the reserved
// types are:
//
//	{"type":"ack","id":"7"}                                   the frame with id 7 was accepted
//	{"type":"error","id":"7","code":1003,"message":"…"}      the frame with id 7 failed
//	{"type":"move","data":{"delay_ms":2150,"reason":"drain"}} reconnect elsewhere after the delay
//	{"type":"welcome","data":{"conn":"…","user":"…","edge":"…"}} first frame on a connection
//
// # Protobuf form
//
// The binary form is the protobuf encoding of these messages (see protocol.proto):
//
//	message Frame       { string type = 1; string id = 2; bytes data = 3; string traceparent = 4; }
//	message ServerFrame { string type = 1; string id = 2; uint32 code = 3; string message = 4;
//	                      bytes data = 5; }
//
// # Close codes
//
//	1000 CloseNormal          normal closure
//	1001 CloseGoingAway       the edge is shutting down
//	1002 CloseProtocolError   RFC 6455 violation (unmasked frame, reserved bits, bad opcode, …)
//	1003 CloseUnsupported     a data type the edge does not accept
//	1007 CloseInvalidPayload  invalid UTF-8 in a text message
//	1008 ClosePolicy          generic policy violation
//	1009 CloseTooBig          frame or message over the configured limit
//	1011 CloseInternal        unexpected server condition
//	1012 CloseRestart         the edge is restarting (drain); reconnect with backoff
//	4000 CloseBadFrame        repeated malformed application frames
//	4001 CloseTokenExpired    the auth token expired on a live connection
//	4002 CloseSlowConsumer    the outbound queue filled up: the client reads too slowly
//	4003 CloseKicked          closed by logic or an operator
//	4004 CloseRateLimited     frame flood beyond the connection's rate limit
//	4005 CloseIdleTimeout     no pong / no traffic within the idle timeout
//	4006 CloseReplaced        the same connection identity connected elsewhere
//
// # Error codes (in "error" frames)
//
//	1000 ErrInternal       unexpected failure
//	1001 ErrBadFrame       the frame could not be decoded (malformed JSON/protobuf, no type)
//	1002 ErrUnknownType    no plugin handles the frame's type
//	1003 ErrTooLarge       data over the configured limit
//	1004 ErrRateLimited    too many frames; slow down
//	1005 ErrUnavailable    the bus or presence is unavailable: the frame was NOT accepted
//	1006 ErrForbidden      the plugin refused (e.g. joining a room not allowed)
//	1007 ErrInvalidData    the data is well-formed but invalid for the type
//	1008 ErrNotFound       the target does not exist
//	1009 ErrTimeout        the bus did not confirm in time: outcome unknown, resend with the same id
package protocol
