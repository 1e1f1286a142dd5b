package chat

import (
	"strconv"
	"unicode/utf8"

	"github.com/switchboard-io/switchboard/protocol"
)

// The chat.send path is the plugin's hot path: its request is decoded and its two frames are
// encoded by hand (encoding/json's reflection was a fifth of the handler's CPU). The output is
// byte for byte what json.Marshal writes (TestJSONMatchesEncodingJSON).

// decodeSendFast decodes the common form of a chat.send request: one JSON object whose members
// are "to", "group", "text" or "cmid" with string values that hold no escape and are valid
// UTF-8. It reports false for anything else, leaving the decoding to encoding/json (Bind),
// whose rules (case-insensitive keys, escapes, null, replacement of invalid UTF-8, errors) the
// fast path would otherwise have to repeat. The strings share one allocation.
func decodeSendFast(data []byte, req *sendReq) bool {
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	var str string // data as a string, made on the first value: the fields are substrings of it
	var r sendReq
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return false // {} is an error Bind words
	}
	for {
		kStart, kEnd, ok := plainString(data, i)
		if !ok {
			return false
		}
		i = skipWS(data, kEnd+1)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipWS(data, i+1)
		vStart, vEnd, ok := plainString(data, i)
		if !ok {
			return false
		}
		if str == "" {
			str = string(data)
		}
		v := str[vStart:vEnd]
		switch string(data[kStart:kEnd]) {
		case "to":
			r.To = v
		case "group":
			r.Group = v
		case "text":
			r.Text = v
		case "cmid":
			r.CMID = v
		default:
			return false
		}
		i = skipWS(data, vEnd+1)
		if i >= len(data) {
			return false
		}
		if data[i] == ',' {
			i = skipWS(data, i+1)
			continue
		}
		if data[i] != '}' {
			return false
		}
		if skipWS(data, i+1) != len(data) {
			return false
		}
		*req = r
		return true
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the bounds of the content of the JSON string at b[i] when it has no
// escape, no control character and is valid UTF-8; end is the index of the closing quote.
func plainString(b []byte, i int) (start, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false
	}
	start = i + 1
	ascii := true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:j]) {
				return 0, 0, false
			}
			return start, j, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// appendMessage appends m as json.Marshal(m) does.
func appendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, `{"conv":`...)
	dst = protocol.AppendJSONString(dst, m.Conv)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, `,"id":`...)
	dst = protocol.AppendJSONString(dst, m.ID)
	dst = append(dst, `,"from":`...)
	dst = protocol.AppendJSONString(dst, m.From)
	if m.CMID != "" {
		dst = append(dst, `,"cmid":`...)
		dst = protocol.AppendJSONString(dst, m.CMID)
	}
	dst = append(dst, `,"text":`...)
	dst = protocol.AppendJSONString(dst, m.Text)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, m.TS, 10)
	return append(dst, '}')
}

// appendSendReply appends r as json.Marshal(r) does.
func appendSendReply(dst []byte, r *sendReply) []byte {
	dst = append(dst, `{"conv":`...)
	dst = protocol.AppendJSONString(dst, r.Conv)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"id":`...)
	dst = protocol.AppendJSONString(dst, r.ID)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, r.TS, 10)
	if r.Dup {
		dst = append(dst, `,"dup":true`...)
	}
	return append(dst, '}')
}

// jsonLen is an upper bound guess of a string's JSON length, to size buffers.
func jsonLen(s string) int { return len(s) + 2 + len(s)/8 }
