package edge

import (
	"testing"
)

// BenchmarkHandshake is one upgrade on a loop without sockets: the HTTP request is parsed,
// authenticated (development auth), the connection is indexed, announced (connect envelope
// to the Publisher) and answered (101 and welcome); then it is closed (disconnect envelope).
// writes/op counts the socket writes the edge would make.
func BenchmarkHandshake(b *testing.B) {
	b.Run("auth=dev", func(b *testing.B) {
		cfg := benchConfig()
		cfg.Publisher = &countPub{}
		s, l := newFakeLoop(b, cfg)
		defer s.cancel()
		req := []byte("GET /ws?user=alice HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n" +
			"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: switchboard.v1.json\r\n" +
			"User-Agent: bench\r\n\r\n")
		writes := int64(0)
		b.ReportAllocs()
		for b.Loop() {
			fc := &fakeConn{in: append([]byte(nil), req...)}
			l.accept(fc)
			wc := fc.ctx.(*wsConn)
			l.onTraffic(wc)
			if wc.state != connOpen {
				b.Fatalf("state %d after the handshake", wc.state)
			}
			writes += fc.writes.Load()
			_ = fc.Close()
		}
		b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
	})
}
