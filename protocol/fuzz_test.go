package protocol

import (
	"encoding/json"
	"testing"
)

func FuzzDecodeFrameJSON(f *testing.F) {
	f.Add([]byte(`{"type":"chat.send","id":"1","data":{"to":"bob"}}`))
	f.Add([]byte(`{"type":"x","id":12,"data":[1,"\u00e9",null],"traceparent":"00-a-b-01"}`))
	f.Add([]byte(`{"type":"a\"b","data":"\\"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		if err := JSON.DecodeFrame(b, &fr); err != nil {
			return
		}
		if len(fr.Data) > 0 && !json.Valid(fr.Data) {
			t.Fatalf("accepted invalid data %q", fr.Data)
		}
		// What was accepted re-encodes to something that decodes to the same frame.
		var again Frame
		enc := JSON.AppendFrame(nil, &fr)
		if err := JSON.DecodeFrame(enc, &again); err != nil {
			t.Fatalf("re-decode %q: %v", enc, err)
		}
		if string(again.Type) != string(fr.Type) || string(again.Data) != string(fr.Data) {
			t.Fatalf("round trip changed %q -> %q", b, enc)
		}
	})
}

func FuzzDecodeFrameProtobuf(f *testing.F) {
	f.Add(Protobuf.AppendFrame(nil, &sampleFrame))
	f.Add([]byte{0x0a, 0x01, 'x', 0x1a, 0x02, '{', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		if err := Protobuf.DecodeFrame(b, &fr); err != nil {
			return
		}
		var again Frame
		if err := Protobuf.DecodeFrame(Protobuf.AppendFrame(nil, &fr), &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodeServerFrame(f *testing.F) {
	for i := range sampleServer {
		f.Add(JSON.AppendServerFrame(nil, &sampleServer[i]), false)
		f.Add(Protobuf.AppendServerFrame(nil, &sampleServer[i]), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, binary bool) {
		c := JSON
		if binary {
			c = Protobuf
		}
		var sf ServerFrame
		_ = c.DecodeServerFrame(b, &sf)
	})
}

func FuzzDecodeUpstream(f *testing.F) {
	f.Add(AppendUpstream(nil, &sampleUp))
	f.Fuzz(func(t *testing.T, b []byte) {
		var u Upstream
		if err := DecodeUpstream(b, &u); err != nil {
			return
		}
		var again Upstream
		if err := DecodeUpstream(AppendUpstream(nil, &u), &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodeDownstream(f *testing.F) {
	f.Add(AppendDownstream(nil, &sampleDown))
	f.Add(AppendDownstream(nil, &Downstream{Kind: DownJoin, Target: TargetConns, Conns: []uint64{1, 2}, Rooms: []string{"r"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Downstream
		if err := DecodeDownstream(b, &d); err != nil {
			return
		}
		var again Downstream
		if err := DecodeDownstream(AppendDownstream(nil, &d), &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// FuzzAppendJSONString: AppendJSONString writes what json.Marshal writes, byte for byte.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "hello", "a\"b\\c", "<a href='x'>&amp;</a>", "\x00\x01\b\f\n\r\t\x1f\x7f",
		"caf\u00e9 \u2028\u2029 \U0001F600", "bad \xff\xfe utf8 \xe2\x80", "\ufffd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendJSONString([]byte("x"), s); string(got[1:]) != string(want) || got[0] != 'x' {
			t.Fatalf("AppendJSONString(%q) = %s, json.Marshal = %s", s, got[1:], want)
		}
	})
}
