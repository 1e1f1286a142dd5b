package protocol

import "testing"

func BenchmarkDecodeFrame(b *testing.B) {
	for _, c := range []Codec{JSON, Protobuf} {
		buf := c.AppendFrame(nil, &sampleFrame)
		b.Run(c.Subprotocol(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			var f Frame
			for b.Loop() {
				if err := c.DecodeFrame(buf, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendServerFrame(b *testing.B) {
	for _, c := range []Codec{JSON, Protobuf} {
		b.Run(c.Subprotocol(), func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = c.AppendServerFrame(buf[:0], &sampleServer[0])
			}
		})
	}
}

func BenchmarkUpstream(b *testing.B) {
	var f Frame
	_ = JSON.DecodeFrame(JSON.AppendFrame(nil, &sampleFrame), &f)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = AppendUpstreamFrame(buf[:0], "edge-1", 1, 2, "alice", &f, "", 1)
		}
	})
	enc := AppendUpstream(nil, &sampleUp)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		var u Upstream
		for b.Loop() {
			if err := DecodeUpstream(enc, &u); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDownstream(b *testing.B) {
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = AppendDownstream(buf[:0], &sampleDown)
		}
	})
	enc := AppendDownstream(nil, &sampleDown)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		var d Downstream
		for b.Loop() {
			if err := DecodeDownstream(enc, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
