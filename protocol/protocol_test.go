package protocol

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden %s (run go test -update): %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s changed:\n got  %q\n want %q", name, got, want)
	}
}

var sampleFrame = Frame{
	Type:        []byte("chat.send"),
	ID:          []byte("42"),
	Data:        []byte(`{"to":"bob","text":"hi \"there\" <3"}`),
	Traceparent: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
}

var sampleServer = []ServerFrame{
	{Type: "chat.message", Data: []byte(`{"conv":"dm:alice:bob","seq":7,"text":"héllo\n"}`)},
	{Type: TypeAck, ID: "42"},
	{Type: TypeError, ID: "43", Code: ErrRateLimited, Message: `slow "down"`},
	{Type: TypeMove, Data: AppendMoveData(nil, 2150, "drain")},
}

func TestGoldenJSON(t *testing.T) {
	var out []byte
	out = JSON.AppendFrame(out, &sampleFrame)
	out = append(out, '\n')
	for i := range sampleServer {
		out = JSON.AppendServerFrame(out, &sampleServer[i])
		out = append(out, '\n')
	}
	golden(t, "v1.json.golden", out)
}

func TestGoldenProtobuf(t *testing.T) {
	var out []byte
	out = append(out, hex.EncodeToString(Protobuf.AppendFrame(nil, &sampleFrame))...)
	out = append(out, '\n')
	for i := range sampleServer {
		out = append(out, hex.EncodeToString(Protobuf.AppendServerFrame(nil, &sampleServer[i]))...)
		out = append(out, '\n')
	}
	out = append(out, hex.EncodeToString(AppendUpstream(nil, &sampleUp))...)
	out = append(out, '\n')
	out = append(out, hex.EncodeToString(AppendDownstream(nil, &sampleDown))...)
	out = append(out, '\n')
	golden(t, "v1.proto.golden", out)
}

func TestFrameRoundTrip(t *testing.T) {
	for _, c := range []Codec{JSON, Protobuf} {
		t.Run(c.Subprotocol(), func(t *testing.T) {
			b := c.AppendFrame(nil, &sampleFrame)
			var f Frame
			if err := c.DecodeFrame(b, &f); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f, sampleFrame) {
				t.Fatalf("got %+v", f)
			}
			for _, sf := range sampleServer {
				b := c.AppendServerFrame(nil, &sf)
				var got ServerFrame
				if err := c.DecodeServerFrame(b, &got); err != nil {
					t.Fatalf("%s: %v", b, err)
				}
				if !reflect.DeepEqual(got, sf) {
					t.Fatalf("got %+v want %+v", got, sf)
				}
			}
		})
	}
}

func TestDecodeFrameJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    Frame
		wantErr error
	}{
		{in: `{"type":"echo"}`, want: Frame{Type: []byte("echo")}},
		{in: ` { "type" : "echo" , "id" : 17 , "data" : [1, {"a":null}] } `,
			want: Frame{Type: []byte("echo"), ID: []byte("17"), Data: []byte(`[1, {"a":null}]`)}},
		{in: `{"id":"x","type":"a\u0062c","extra":{"k":[true,false]}}`, want: Frame{Type: []byte("abc"), ID: []byte("x")}},
		{in: `{"type":"a\/b"}`, want: Frame{Type: []byte("a/b")}},
		{in: `{"data":1}`, wantErr: ErrMissingType},
		{in: `{}`, wantErr: ErrMissingType},
		{in: `{"type":""}`, wantErr: ErrMissingType},
		{in: `{"type":"x",}`, wantErr: ErrMalformed},
		{in: `{"type":"x"} trailing`, wantErr: ErrMalformed},
		{in: `{"type":"x","data":{"a":}}`, wantErr: ErrMalformed},
		{in: `{"type":"x","data":tru}`, wantErr: ErrMalformed},
		{in: `{"type":"x","id":1.2.3}`, wantErr: ErrMalformed},
		{in: `[]`, wantErr: ErrMalformed},
		{in: ``, wantErr: ErrMalformed},
		{in: `{"type":"` + string(bytes.Repeat([]byte("x"), MaxTypeLen+1)) + `"}`, wantErr: ErrFieldTooBig},
		{in: `{"type":"x","data":` + string(bytes.Repeat([]byte("["), maxDepth+2)) + string(bytes.Repeat([]byte("]"), maxDepth+2)) + `}`, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		var f Frame
		err := JSON.DecodeFrame([]byte(tt.in), &f)
		if err != tt.wantErr {
			t.Errorf("%s: err %v, want %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(f, tt.want) {
			t.Errorf("%s: got %+v want %+v", tt.in, f, tt.want)
		}
	}
}

func TestCodecFor(t *testing.T) {
	if c, ok := CodecFor(""); !ok || c != JSON {
		t.Fatal("default must be JSON")
	}
	if c, ok := CodecFor(SubprotocolProtobuf); !ok || c != Protobuf || !c.Binary() {
		t.Fatal("protobuf")
	}
	if _, ok := CodecFor("mqtt"); ok {
		t.Fatal("unknown subprotocol accepted")
	}
}

var sampleUp = Upstream{
	Kind: UpMessage, Edge: "edge-1", Epoch: 3, Conn: 99, User: "alice",
	Meta: map[string]string{"ua": "k6"}, Type: "chat.send", ID: "42",
	Data: []byte(`{"to":"bob"}`), Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	TimeUnixNano: 1700000000000000000,
}

var sampleDown = Downstream{
	Kind: DownDeliver, Target: TargetRoom, Room: "live:1", ExcludeConn: 99,
	Frame:    ServerFrame{Type: "danmaku.batch", Data: []byte(`[{"text":"666"}]`)},
	Priority: PriorityPaid, Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	TimeUnixNano: 1700000000000000000,
}

func TestEnvelopeRoundTrip(t *testing.T) {
	var u Upstream
	if err := DecodeUpstream(AppendUpstream(nil, &sampleUp), &u); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(u, sampleUp) {
		t.Fatalf("upstream: got %+v", u)
	}
	downs := []Downstream{
		sampleDown,
		{Kind: DownDeliver, Target: TargetConns, Epoch: 2, Conns: []uint64{1, 300, 1 << 40}, Frame: ServerFrame{Type: TypeAck, ID: "1"}},
		{Kind: DownJoin, Target: TargetUsers, Users: []string{"a", "b"}, Rooms: []string{"r1", "r2"}},
		{Kind: DownClose, Target: TargetConns, Conns: []uint64{5}, Code: uint32(CloseKicked), Reason: "bye"},
		{Kind: DownDeliver, Target: TargetAll, Frame: ServerFrame{Type: "notice", Data: []byte(`"hi"`)}, Priority: PrioritySystem},
	}
	for _, want := range downs {
		var d Downstream
		if err := DecodeDownstream(AppendDownstream(nil, &want), &d); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d, want) {
			t.Fatalf("downstream: got %+v want %+v", d, want)
		}
	}
	// The edge's zero-alloc path encodes the same bytes as the general encoder.
	f := Frame{Type: []byte(sampleUp.Type), ID: []byte(sampleUp.ID), Data: sampleUp.Data}
	fast := AppendUpstreamFrame(nil, sampleUp.Edge, sampleUp.Epoch, sampleUp.Conn, sampleUp.User, &f, sampleUp.Traceparent, sampleUp.TimeUnixNano)
	u2 := sampleUp
	u2.Meta = nil
	if !bytes.Equal(fast, AppendUpstream(nil, &u2)) {
		t.Fatal("AppendUpstreamFrame differs from AppendUpstream")
	}
}

func TestDecodeEnvelopeRejects(t *testing.T) {
	var u Upstream
	if err := DecodeUpstream([]byte{0x08, 0x09}, &u); err != ErrMalformed {
		t.Fatalf("bad kind: %v", err)
	}
	if err := DecodeUpstream([]byte{0x12, 0x05, 'a'}, &u); err != ErrMalformed {
		t.Fatalf("truncated: %v", err)
	}
	var d Downstream
	if err := DecodeDownstream([]byte{0x08, 0x01, 0x10, 0x01}, &d); err != ErrMissingType {
		t.Fatalf("deliver without frame: %v", err)
	}
}

func TestValidEdgeID(t *testing.T) {
	for id, ok := range map[string]bool{"edge-1": true, "e.2_x": true, "": false, "a/b": false, "a b": false} {
		if ValidEdgeID(id) != ok {
			t.Errorf("%q", id)
		}
	}
	if EdgeTopic("", "e1") != "persistent://public/default/sb-edge-e1" {
		t.Fatal(EdgeTopic("", "e1"))
	}
}

func TestDecodeFrameNoAlloc(t *testing.T) {
	b := JSON.AppendFrame(nil, &sampleFrame)
	pb := Protobuf.AppendFrame(nil, &sampleFrame)
	var f Frame
	if n := testing.AllocsPerRun(100, func() { _ = JSON.DecodeFrame(b, &f) }); n > 1 {
		t.Fatalf("JSON DecodeFrame allocs %v", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = Protobuf.DecodeFrame(pb, &f) }); n != 0 {
		t.Fatalf("protobuf DecodeFrame allocs %v", n)
	}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendUpstreamFrame(buf[:0], "edge-1", 1, 2, "alice", &f, "", 1)
	}); n != 0 {
		t.Fatalf("AppendUpstreamFrame allocs %v", n)
	}
}
