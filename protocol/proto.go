package protocol

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

type protoCodec struct{}

func (protoCodec) Subprotocol() string { return SubprotocolProtobuf }
func (protoCodec) Binary() bool        { return true }

// Field numbers of Frame and ServerFrame (protocol.proto).
const (
	fFrameType        = 1
	fFrameID          = 2
	fFrameData        = 3
	fFrameTraceparent = 4

	fServerType    = 1
	fServerID      = 2
	fServerCode    = 3
	fServerMessage = 4
	fServerData    = 5
)

// DecodeFrame decodes a protobuf Frame; f's fields alias b. Unknown fields are skipped.
func (protoCodec) DecodeFrame(b []byte, f *Frame) error {
	f.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType && num >= fFrameType && num <= fFrameTraceparent {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ErrMalformed
			}
			b = b[n:]
			switch num {
			case fFrameType:
				f.Type = v
			case fFrameID:
				f.ID = v
			case fFrameData:
				f.Data = v
			case fFrameTraceparent:
				f.Traceparent = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
	}
	if len(f.Data) > 0 && (!utf8.Valid(f.Data) || !ValidJSON(f.Data)) {
		// Data is relayed to JSON clients as is: it must be JSON in both forms.
		return ErrMalformed
	}
	return checkFrame(f)
}

func (protoCodec) AppendFrame(dst []byte, f *Frame) []byte {
	dst = appendBytesField(dst, fFrameType, f.Type)
	dst = appendBytesField(dst, fFrameID, f.ID)
	dst = appendBytesField(dst, fFrameData, f.Data)
	return appendBytesField(dst, fFrameTraceparent, f.Traceparent)
}

func (protoCodec) AppendServerFrame(dst []byte, f *ServerFrame) []byte {
	dst = appendStringField(dst, fServerType, f.Type)
	dst = appendStringField(dst, fServerID, f.ID)
	dst = appendVarintField(dst, fServerCode, uint64(f.Code))
	dst = appendStringField(dst, fServerMessage, f.Message)
	return appendBytesField(dst, fServerData, f.Data)
}

func (protoCodec) DecodeServerFrame(b []byte, f *ServerFrame) error {
	*f = ServerFrame{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fServerType && typ == protowire.BytesType:
			f.Type = string(v)
		case num == fServerID && typ == protowire.BytesType:
			f.ID = string(v)
		case num == fServerCode && typ == protowire.VarintType:
			f.Code = ErrorCode(x)
		case num == fServerMessage && typ == protowire.BytesType:
			f.Message = string(v)
		case num == fServerData && typ == protowire.BytesType:
			f.Data = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if f.Type == "" {
		return ErrMissingType
	}
	return nil
}

// walk calls fn for every field of the protobuf message b: v holds a length-delimited value
// (aliasing b), x a varint or fixed value.
func walk(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func appendBytesField(dst []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendBytes(dst, v)
}

func appendStringField(dst []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, v)
}

func appendVarintField(dst []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.VarintType)
	return protowire.AppendVarint(dst, v)
}
