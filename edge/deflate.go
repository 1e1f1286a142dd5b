package edge

import (
	"bytes"
	"compress/flate"
	"io"
	"sync"

	"github.com/switchboard-io/switchboard/protocol"
)

// rsv1 is ws.Header.Rsv with the RSV1 bit set: the permessage-deflate "compressed" bit.
const rsv1 = 4

// deflateTail ends every compressed message (RFC 7692 7.2.2), followed by an empty final
// stored block so the inflater reports a clean EOF.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflate decompresses a client message. The result is valid until the next inflate on this
// loop. On failure the connection is closed (1007 corrupt data, 1009 over MaxMessageSize) and
// ok is false.
func (l *loop) inflate(wc *wsConn, p []byte) ([]byte, bool) {
	max := l.s.cfg.MaxMessageSize
	l.zin = append(append(l.zin[:0], p...), deflateTail...)
	src := bytes.NewReader(l.zin)
	if l.zr == nil {
		l.zr = flate.NewReader(src)
	} else if err := l.zr.(flate.Resetter).Reset(src, nil); err != nil {
		l.fail(wc, protocol.CloseInvalidPayload, "bad compressed data")
		return nil, false
	}
	out := l.zout[:0]
	for {
		if len(out) == cap(out) {
			if len(out) > max {
				break
			}
			out = append(out, 0)[:len(out)]
		}
		n, err := l.zr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			l.zout = out[:0]
			l.fail(wc, protocol.CloseInvalidPayload, "bad compressed data")
			return nil, false
		}
	}
	if cap(out) <= 1<<20 {
		l.zout = out[:0]
	}
	if len(out) > max {
		l.fail(wc, protocol.CloseTooBig, "message too big")
		return nil, false
	}
	if cap(l.zin) > 1<<20 {
		l.zin = nil
	}
	return out, true
}

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// compressFrame returns frame (an unmasked final server frame) as a compressed frame, or nil
// when compression does not make it smaller.
func compressFrame(frame []byte) []byte {
	h, n, err := parseHeader(frame)
	if err != nil || n == 0 {
		return nil
	}
	var buf bytes.Buffer
	buf.Grow(len(frame))
	w := flateWriters.Get().(*flate.Writer)
	w.Reset(&buf)
	_, _ = w.Write(frame[n:])
	_ = w.Flush()
	flateWriters.Put(w)
	z := bytes.TrimSuffix(buf.Bytes(), deflateTail[:4])
	if len(z) >= len(frame)-n {
		return nil
	}
	out := appendHeader(make([]byte, 0, len(z)+10), h.OpCode, len(z))
	out[0] |= 0x40 // RSV1
	return append(out, z...)
}
