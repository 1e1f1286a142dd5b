package edge

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// parseHeader is ws.ReadHeader over bytes already buffered: it returns the header and its
// encoded size, or n == 0 when b does not hold the whole header yet. It never allocates.
func parseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	l := b[1] & 0x7f
	switch l {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h.Masked {
		n += 4
	}
	if len(b) < n {
		return h, 0, nil
	}
	switch l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		if b[2]&0x80 != 0 {
			return h, 0, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:10]))
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[n-4:n])
	}
	return h, n, nil
}

// appendFrame appends an unmasked final server frame (header and payload) to dst.
func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = appendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// appendHeader appends the header of an unmasked final server frame of n payload bytes.
func appendHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// appendClose appends a close frame with code and reason (trimmed to fit 125 bytes).
func appendClose(dst []byte, code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	dst = appendHeader(dst, ws.OpClose, 2+len(reason))
	dst = append(dst, byte(code>>8), byte(code))
	return append(dst, reason...)
}

// validCloseCode reports whether a client may send code in a close frame (RFC 6455 7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
