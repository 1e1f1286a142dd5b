package edge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-io/switchboard/protocol"
)

// propsPub records the props of every publish and completes it at once.
type propsPub struct {
	mu    sync.Mutex
	props []map[string]string
	ups   []protocol.Upstream
}

func (p *propsPub) Publish(ctx context.Context, _ string, payload []byte, props map[string]string, done func(error)) {
	var u protocol.Upstream
	if err := protocol.DecodeUpstream(payload, &u); err != nil {
		panic(err)
	}
	p.mu.Lock()
	p.props = append(p.props, props)
	p.ups = append(p.ups, u)
	p.mu.Unlock()
	done(nil)
}

func newTracedLoop(t testing.TB, sampler sdktrace.Sampler, pub Publisher) (*Server, *loop, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := testConfig()
	cfg.TracerProvider = tp
	cfg.Publisher = pub
	s, l := newFakeLoop(t, cfg)
	t.Cleanup(s.cancel)
	return s, l, exp
}

func spanNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attrOf(s tracetest.SpanStub, key attribute.Key) (attribute.Value, bool) {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestTraceClientFrameJoinsClientTrace(t *testing.T) {
	pub := &propsPub{}
	// The client's flags say "not sampled" and the root sampler never samples: a frame that
	// carries a client trace is traced anyway.
	_, l, exp := newTracedLoop(t, sdktrace.ParentBased(sdktrace.NeverSample()), pub)
	wc, fc := fakeOpen(l, "alice", false)
	const clientTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	fc.in = frame(0x81, []byte(`{"type":"chat.send","id":"1","data":{"t":"hi"},"traceparent":"`+clientTP+`"}`), false)
	l.onTraffic(wc)

	spans := exp.GetSpans()
	rec, pubs := spanNamed(spans, SpanReceive), spanNamed(spans, SpanPublish)
	if len(rec) != 1 || len(pubs) != 1 {
		t.Fatalf("spans %v: want one %s and one %s", spans, SpanReceive, SpanPublish)
	}
	if got := rec[0].SpanContext.TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("receive trace id %s, want the client's", got)
	}
	if got := rec[0].Parent.SpanID().String(); got != "00f067aa0ba902b7" || !rec[0].Parent.IsRemote() {
		t.Fatalf("receive parent %s (remote %v), want the client's span", got, rec[0].Parent.IsRemote())
	}
	if pubs[0].Parent.SpanID() != rec[0].SpanContext.SpanID() {
		t.Fatal("publish span is not a child of the receive span")
	}
	if v, _ := attrOf(rec[0], "sb.type"); v.AsString() != "chat.send" {
		t.Fatalf("sb.type %q", v.AsString())
	}
	want := fmt.Sprintf("00-%s-%s-01", pubs[0].SpanContext.TraceID(), pubs[0].SpanContext.SpanID())
	pub.mu.Lock()
	defer pub.mu.Unlock()
	last := len(pub.props) - 1 // the first one is the connect event
	if pub.ups[last].Kind != protocol.UpMessage || pub.props[last][protocol.PropTraceparent] != want {
		t.Fatalf("props %v, want traceparent %s", pub.props, want)
	}
	if pub.ups[last].Traceparent != want {
		t.Fatalf("envelope traceparent %q, want %s", pub.ups[last].Traceparent, want)
	}
}

func TestTraceUnsampledFrameStillPropagates(t *testing.T) {
	pub := &propsPub{}
	_, l, exp := newTracedLoop(t, sdktrace.NeverSample(), pub)
	wc, fc := fakeOpen(l, "alice", false)
	fc.in = frame(0x81, []byte(`{"type":"chat.send","data":1}`), false)
	l.onTraffic(wc)
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans exported, want none", n)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	// The trace id is kept (not sampled) so later hops stay consistent with the sampler.
	if tp := pub.ups[len(pub.ups)-1].Traceparent; len(tp) != 55 || tp[53:] != "00" {
		t.Fatalf("envelope traceparent %q, want an unsampled one", tp)
	}
}

func TestTraceFanoutOneSpanWithRecipients(t *testing.T) {
	s, l, exp := newTracedLoop(t, sdktrace.ParentBased(sdktrace.AlwaysSample()), nil)
	var fcs []*fakeConn
	for i := 0; i < 5; i++ {
		wc, fc := fakeOpen(l, "u"+strconv.Itoa(i), true)
		l.join(wc, "room")
		fcs = append(fcs, fc)
	}
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "room",
		Traceparent: parent, Frame: deliver("chat", `{"t":"hi"}`)}
	if err := s.HandleDownstream(protocol.AppendDownstream(nil, d)); err != nil {
		t.Fatal(err)
	}
	fan := spanNamed(exp.GetSpans(), SpanFanout)
	if len(fan) != 1 {
		t.Fatalf("%d fanout spans, want 1", len(fan))
	}
	if fan[0].Parent.SpanID().String() != "b7ad6b7169203331" || fan[0].SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("fanout parent %v", fan[0].Parent)
	}
	if v, _ := attrOf(fan[0], "sb.recipients"); v.AsInt64() != 5 {
		t.Fatalf("sb.recipients %d, want 5", v.AsInt64())
	}
	for i, fc := range fcs {
		if !strings.Contains(string(fc.out), `"t":"hi"`) {
			t.Fatalf("recipient %d got nothing", i)
		}
	}
}

func TestTraceNoopProviderIsOff(t *testing.T) {
	for _, tp := range []trace.TracerProvider{nil, initialGlobal} {
		if tr := newTracing(tp).tracer(); tr != nil {
			t.Fatalf("provider %T: tracing on, want off", tp)
		}
	}
}

// BenchmarkTraceOverhead compares the fanout and the upstream path with tracing off, with a
// parent-based 1% sampler, and with every frame sampled (same run). The fanout parent is an
// unsampled traceparent, as logic forwards it for 99% of frames at 1%.
func BenchmarkTraceOverhead(b *testing.B) {
	samplers := []struct {
		name string
		s    sdktrace.Sampler
	}{{"off", nil}, {"ratio=0.01", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))}, {"ratio=1", sdktrace.AlwaysSample()}}
	for _, sm := range samplers {
		cfgFor := func(b *testing.B) Config {
			cfg := benchConfig()
			if sm.s != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sm.s),
					sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				cfg.TracerProvider = tp
			}
			return cfg
		}
		for _, members := range []int{1000} {
			b.Run(fmt.Sprintf("fanout/tracing=%s/members=%d", sm.name, members), func(b *testing.B) {
				s, l := newFakeLoop(b, cfgFor(b))
				defer s.cancel()
				for i := 0; i < members; i++ {
					wc, _ := fakeOpen(l, "u"+strconv.Itoa(i), false)
					l.join(wc, "room")
				}
				i := 0
				msgs := make([][]byte, 100)
				for j := range msgs {
					// Varying trace ids: the ratio sampler decides by trace id.
					tp := fmt.Sprintf("00-%032x-%016x-%s", uint64(j+1)*0x9e3779b97f4a7c15, j+1, map[bool]string{true: "01", false: "00"}[j == 0])
					msgs[j] = protocol.AppendDownstream(nil, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "room",
						Traceparent: tp, Frame: protocol.ServerFrame{Type: "danmaku", Data: []byte(`{"user":"u1","text":"666666"}`)}})
				}
				perRecipient(b, members, func() {
					if err := s.HandleDownstream(msgs[i%len(msgs)]); err != nil {
						b.Fatal(err)
					}
					i++
				})
			})
		}
		b.Run(fmt.Sprintf("upstream/tracing=%s", sm.name), func(b *testing.B) {
			cfg := cfgFor(b)
			cfg.Publisher = &countPub{}
			s, l := newFakeLoop(b, cfg)
			defer s.cancel()
			wc, fc := fakeOpen(l, "reader", false)
			one := frame(0x81, []byte(`{"type":"chat.send","data":"hello"}`), false)
			buf := make([]byte, 0, 100*len(one))
			batch := make([]byte, 0, 100*len(one))
			for j := 0; j < 100; j++ {
				batch = append(batch, one...)
			}
			perRecipient(b, 100, func() {
				fc.in = append(buf[:0], batch...)
				l.onTraffic(wc)
			})
		})
	}
}

// TestTraceFanoutAcrossLoops: a delivery to users on a running edge's two loops is one
// edge.fanout span, ended after every loop wrote, with every recipient counted.
func TestTraceFanoutAcrossLoops(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())), sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	cfg := testConfig()
	cfg.TracerProvider = tp
	s := startEdge(t, cfg)
	var users []string
	var conns []*websocket.Conn
	for i := 0; i < 6; i++ {
		u := "fan" + strconv.Itoa(i)
		c, _ := dialGorilla(t, s, u)
		users, conns = append(users, u), append(conns, c)
	}
	d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetUsers, Users: users,
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Frame: deliver("chat", `{"t":"x"}`)}
	down(t, s, d)
	for _, c := range conns {
		if f := readFrame(t, c); f.Type != "chat" {
			t.Fatalf("got %+v", f)
		}
	}
	var fan []tracetest.SpanStub
	checkFor(t, 5*time.Second, func() error {
		fan = spanNamed(exp.GetSpans(), SpanFanout)
		if len(fan) == 0 {
			return fmt.Errorf("no fanout span")
		}
		return nil
	})
	if len(fan) != 1 {
		t.Fatalf("%d fanout spans, want 1", len(fan))
	}
	if v, _ := attrOf(fan[0], "sb.recipients"); v.AsInt64() != 6 {
		t.Fatalf("sb.recipients %d, want 6", v.AsInt64())
	}
	if v, _ := attrOf(fan[0], "sb.loops"); v.AsInt64() < 1 || v.AsInt64() > 2 {
		t.Fatalf("sb.loops %d", v.AsInt64())
	}
}
