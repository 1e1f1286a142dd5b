package protocol

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

type jsonCodec struct{}

func (jsonCodec) Subprotocol() string { return SubprotocolJSON }
func (jsonCodec) Binary() bool        { return false }

// DecodeFrame decodes {"type":…,"id":…,"data":…,"traceparent":…}. Unknown keys are ignored
// (forward compatibility). id may be a JSON string or number. It does not allocate unless a
// string field contains escapes.
func (jsonCodec) DecodeFrame(b []byte, f *Frame) error {
	f.Reset()
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return ErrMalformed
	}
	s.ws()
	if s.eat('}') {
		return ErrMissingType
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return ErrMalformed
		}
		s.ws()
		if !s.eat(':') {
			return ErrMalformed
		}
		s.ws()
		switch string(key) {
		case "type":
			v, ok := s.str()
			if !ok {
				return ErrMalformed
			}
			f.Type = v
		case "id":
			if s.peek() == '"' {
				v, ok := s.str()
				if !ok {
					return ErrMalformed
				}
				f.ID = v
			} else {
				start := s.i
				if !s.number() {
					return ErrMalformed
				}
				f.ID = b[start:s.i]
			}
		case "traceparent":
			v, ok := s.str()
			if !ok {
				return ErrMalformed
			}
			f.Traceparent = v
		case "data":
			start := s.i
			if !s.value(0) {
				return ErrMalformed
			}
			f.Data = b[start:s.i]
		default:
			if !s.value(0) {
				return ErrMalformed
			}
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			break
		}
		return ErrMalformed
	}
	s.ws()
	if s.i != len(b) {
		return ErrMalformed
	}
	return checkFrame(f)
}

func (jsonCodec) AppendFrame(dst []byte, f *Frame) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendQuotedBytes(dst, f.Type)
	if len(f.ID) > 0 {
		dst = append(dst, `,"id":`...)
		dst = appendQuotedBytes(dst, f.ID)
	}
	if len(f.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, f.Data...)
	}
	if len(f.Traceparent) > 0 {
		dst = append(dst, `,"traceparent":`...)
		dst = appendQuotedBytes(dst, f.Traceparent)
	}
	return append(dst, '}')
}

// AppendServerFrame appends f as JSON. f.Data must be a valid JSON value (it is embedded as is).
func (jsonCodec) AppendServerFrame(dst []byte, f *ServerFrame) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendQuoted(dst, f.Type)
	if f.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendQuoted(dst, f.ID)
	}
	if f.Code != 0 {
		dst = append(dst, `,"code":`...)
		dst = appendInt(dst, int64(f.Code))
	}
	if f.Message != "" {
		dst = append(dst, `,"message":`...)
		dst = appendQuoted(dst, f.Message)
	}
	if len(f.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, f.Data...)
	}
	return append(dst, '}')
}

type jsonServerFrame struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Code    ErrorCode       `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (jsonCodec) DecodeServerFrame(b []byte, f *ServerFrame) error {
	var v jsonServerFrame
	if err := json.Unmarshal(b, &v); err != nil {
		return ErrMalformed
	}
	if v.Type == "" {
		return ErrMissingType
	}
	id := string(v.ID)
	if len(id) > 0 && id[0] == '"' {
		if uq, err := strconv.Unquote(id); err == nil {
			id = uq
		}
	}
	*f = ServerFrame{Type: v.Type, ID: id, Code: v.Code, Message: v.Message}
	if len(v.Data) > 0 {
		f.Data = append([]byte(nil), v.Data...)
	}
	return nil
}

// ValidJSON reports whether b is one valid JSON value.
func ValidJSON(b []byte) bool { return json.Valid(b) }

// scanner is a minimal validating JSON scanner over b.
type scanner struct {
	b []byte
	i int
}

const maxDepth = 64

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str scans a string and returns its content: a sub-slice of b when it has no escapes, an
// unescaped copy otherwise.
func (s *scanner) str() ([]byte, bool) { return s.scanStr(true) }

// skipStr scans a string without unescaping it.
func (s *scanner) skipStr() bool {
	_, ok := s.scanStr(false)
	return ok
}

func (s *scanner) scanStr(unescape bool) ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	escaped := false
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			if !escaped || !unescape {
				return raw, true
			}
			u, err := strconv.Unquote(`"` + string(raw) + `"`)
			if err != nil {
				// strconv accepts a superset of JSON escapes except \/ ; handle it.
				return unescapeJSON(raw)
			}
			return []byte(u), true
		case c == '\\':
			escaped = true
			if !s.escape() {
				return nil, false
			}
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

// escape validates the escape sequence at s.i (a backslash) and moves past it.
func (s *scanner) escape() bool {
	if s.i+1 >= len(s.b) {
		return false
	}
	switch s.b[s.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i += 2
		return true
	case 'u':
		if s.i+6 > len(s.b) {
			return false
		}
		for _, h := range s.b[s.i+2 : s.i+6] {
			if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
				return false
			}
		}
		s.i += 6
		return true
	}
	return false
}

func unescapeJSON(raw []byte) ([]byte, bool) {
	var out []byte
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), (*jsonString)(&out)); err != nil {
		return nil, false
	}
	return out, true
}

type jsonString []byte

func (j *jsonString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*j = []byte(s)
	return nil
}

func (s *scanner) number() bool {
	start := s.i
	s.eat('-')
	digits := 0
	for s.i < len(s.b) {
		c := s.b[s.i]
		if (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
			s.i++
			digits++
			continue
		}
		break
	}
	return digits > 0 && json.Valid(s.b[start:s.i])
}

func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// value scans one JSON value, validating structure.
func (s *scanner) value(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.ws()
	switch c := s.peek(); {
	case c == '"':
		return s.skipStr()
	case c == '{':
		s.i++
		s.ws()
		if s.eat('}') {
			return true
		}
		for {
			s.ws()
			if !s.skipStr() {
				return false
			}
			s.ws()
			if !s.eat(':') || !s.value(depth+1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat('}')
		}
	case c == '[':
		s.i++
		s.ws()
		if s.eat(']') {
			return true
		}
		for {
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string exactly as encoding/json's Marshal writes it:
// HTML characters (<, >, &) and U+2028, U+2029 escaped, invalid UTF-8 replaced by U+FFFD. For
// hand-written encoders of hot paths that must match json.Marshal byte for byte.
func AppendJSONString(dst []byte, s string) []byte { return appendQuoted(dst, s) }

func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendQuotedBytes(dst []byte, b []byte) []byte {
	return appendQuoted(dst, string(b)) // the conversion does not escape: no allocation
}
