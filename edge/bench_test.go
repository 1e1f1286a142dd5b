package edge

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/protocol"
)

func benchConfig() Config {
	cfg := testConfig()
	cfg.RateLimit = 1e9
	cfg.MaxOutboundBytes = 1 << 30
	return cfg
}

// perRecipient reports ns and allocations per recipient of a benchmark whose every op
// reaches members recipients.
func perRecipient(b *testing.B, members int, run func()) {
	var m0, m1 runtime.MemStats
	b.ReportAllocs()
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	n := 0
	for b.Loop() {
		run()
		n++
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*members), "ns/recipient")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(n*members), "allocs/recipient")
}

// BenchmarkFanout is the last hop of a room delivery on one loop: the frame is encoded once
// and the same bytes are queued and written to every member (writes go to a discarding conn).
func BenchmarkFanout(b *testing.B) {
	for _, members := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s, l := newFakeLoop(b, benchConfig())
			defer s.cancel()
			for i := 0; i < members; i++ {
				wc, _ := fakeOpen(l, "u"+strconv.Itoa(i), false)
				l.join(wc, "room")
			}
			d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "room",
				Frame: protocol.ServerFrame{Type: "danmaku", Data: []byte(`{"user":"u1","text":"666666"}`)}}
			perRecipient(b, members, func() {
				t := task{kind: tDeliver, d: d, frames: s.encodeDelivery(&d.Frame)}
				l.run(&t)
				l.flush()
			})
		})
	}
}

// BenchmarkHandleDownstream is the whole local path of one bus message: decode the envelope,
// encode the frame once, dispatch to the loop, fan out.
func BenchmarkHandleDownstream(b *testing.B) {
	for _, members := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s, l := newFakeLoop(b, benchConfig())
			defer s.cancel()
			for i := 0; i < members; i++ {
				wc, _ := fakeOpen(l, "u"+strconv.Itoa(i), false)
				l.join(wc, "room")
			}
			msg := protocol.AppendDownstream(nil, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "room",
				Frame: protocol.ServerFrame{Type: "danmaku", Data: []byte(`{"user":"u1","text":"666666"}`)}})
			perRecipient(b, members, func() {
				if err := s.HandleDownstream(msg); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

type countPub struct{ n int }

func (p *countPub) Publish(_ context.Context, _ string, _ []byte, _ map[string]string, done func(error)) {
	p.n++
	done(nil)
}

// BenchmarkReadFrames parses, unmasks, validates and decodes client frames already buffered
// (100 per op), with and without publishing the upstream envelope.
func BenchmarkReadFrames(b *testing.B) {
	for _, size := range []int{64, 1024} {
		for _, publish := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/publish=%v", size, publish), func(b *testing.B) {
				cfg := benchConfig()
				if publish {
					cfg.Publisher = &countPub{}
				}
				s, l := newFakeLoop(b, cfg)
				defer s.cancel()
				wc, fc := fakeOpen(l, "reader", false)
				pad := max(0, size-len(`{"type":"chat.send","data":""}`))
				one := frame(0x81, []byte(`{"type":"chat.send","data":"`+string(bytes.Repeat([]byte("x"), pad))+`"}`), false)
				batch := bytes.Repeat(one, 100)
				buf := make([]byte, len(batch))
				before := s.Stats().Frames
				perRecipient(b, 100, func() {
					fc.in = append(buf[:0], batch...)
					l.onTraffic(wc)
				})
				if got := s.Stats().Frames - before; got == 0 || wc.state != connOpen {
					b.Fatalf("frames %d, state %d", got, wc.state)
				}
			})
		}
	}
}

// BenchmarkParseHeader is the frame header parser alone.
func BenchmarkParseHeader(b *testing.B) {
	for _, size := range []int{10, 1000, 70000} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			f := frame(0x81, make([]byte, size), false)
			b.ReportAllocs()
			for b.Loop() {
				if _, n, err := parseHeader(f); n == 0 || err != nil {
					b.Fatal("parse failed")
				}
			}
		})
	}
}

// BenchmarkDeliverToUser is one chat-style delivery to a user over a real socket, one at a
// time (as at moderate load, where every delivery finds the loops asleep), with two loops: the
// envelope is decoded, dispatched to the loop(s), written, and read by a client in this
// process. cpu-ns/op is the whole process's CPU per delivery.
func BenchmarkDeliverToUser(b *testing.B) {
	cfg := benchConfig()
	cfg.Loops = 2
	s := startEdge(b, cfg)
	c, _ := dialGorilla(b, s, "bob")
	defer c.Close()
	for i := 0; len(*s.loops.Load()) < 2; i++ { // another user on the other loop
		if i == 20 {
			b.Fatal("no connection landed on the second loop")
		}
		o, _ := dialGorilla(b, s, "alice")
		defer o.Close()
	}
	msg := protocol.AppendDownstream(nil, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers,
		Users: []string{"bob"}, Priority: protocol.PrioritySystem, Frame: deliver("chat.msg", `{"text":"hi"}`)})
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		if err := s.HandleDownstream(msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
