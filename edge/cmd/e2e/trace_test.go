//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
)

// sendTraced writes a client frame that carries the client's own W3C traceparent.
func (c *wsClient) sendTraced(typ string, data any, traceparent string) string {
	c.t.Helper()
	id := fmt.Sprintf("%s-%d", c.user, c.seq.Add(1))
	b, err := json.Marshal(data)
	if err != nil {
		c.t.Fatal(err)
	}
	msg, _ := json.Marshal(map[string]any{"type": typ, "id": id, "data": json.RawMessage(b), "traceparent": traceparent})
	c.wmu.Lock()
	err = c.conn.WriteMessage(websocket.TextMessage, msg)
	c.wmu.Unlock()
	if err != nil {
		c.t.Fatalf("%s: write %s: %v", c.user, typ, err)
	}
	return id
}

// TestChatMessageIsOneTrace: alice on edge 1 sends bob (on edge 2) a chat message carrying her
// own traceparent. Every process of the path (2 edges, the router, a logic replica, in this
// process) shares one SDK TracerProvider with an in-memory exporter, installed as otel's
// global provider (logic, the router client and server, and the edges use the global one when
// their Config leaves TracerProvider nil). The message yields ONE trace, the client's, holding
// the spans of every hop in causal order: edge.receive → edge.publish (the bus publish, until
// Pulsar acknowledged it) → logic chat.send → router ResolveUsers (client and server) →
// edge.fanout on bob's edge, with one recipient.
//
// Hops without a span of their own (their packages are outside the edge): the Pulsar deliver
// to logic and logic's downstream publish (logic/bus starts no spans; the trace context
// crosses them in the message properties), and the chat store's Redis append.
func TestChatMessageIsOneTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())), sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider()) // tracing off again, at no cost, for later tests
		_ = tp.Shutdown(context.Background())
	})

	c := newCluster(t)
	e1, e2 := c.addEdge(), c.addEdge()
	c.addLogic()
	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	a := dial(t, e1, alice)
	b := dial(t, e2, bob)
	c.waitOnline(bob, 1)
	c.waitOnline(alice, 1)

	var tid trace.TraceID
	for i := range tid {
		tid[i] = byte(rand.Uint32())
	}
	clientSpan := trace.SpanID{0xc1, 0x1e, 0x47, 0, 0, 0, 0, 1}
	traceparent := fmt.Sprintf("00-%s-%s-01", tid, clientSpan)
	id := a.sendTraced(chat.TypeSend, map[string]string{"to": bob, "text": "traced hello", "cmid": "cm-trace"}, traceparent)
	a.await("edge ack of "+id, 20*time.Second, isAck(id))
	r := decode[sendReply](t, a.reply(chat.TypeSend, id))
	b.await("chat.msg "+r.ID, 20*time.Second, func(f frame) bool {
		return f.Type == chat.TypeMsg && decode[chat.Message](t, f).ID == r.ID
	})

	// Spans are exported when they end: the fanout span after the socket write (maybe just
	// after bob's client read it), logic's span after its downstream publishes were
	// acknowledged (maybe after the fanout).
	var spans tracetest.SpanStubs
	var fanout *tracetest.SpanStub
	eventually(t, 10*time.Second, "bob's edge.fanout and logic's span exported", func() bool {
		spans = spans[:0]
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == tid {
				spans = append(spans, s)
			}
		}
		fanout = nil
		handled := false
		for i, s := range spans {
			if s.Name == edge.SpanFanout && attr(s, "sb.edge") == e2.srv.ID() {
				fanout = &spans[i]
			}
			handled = handled || s.Name == "logic "+chat.TypeSend
		}
		return fanout != nil && handled
	})
	fanoutSpan := *fanout // a copy: sorting moves the slice's elements
	fanout = &fanoutSpan
	sort.Slice(spans, func(i, j int) bool { return spans[i].StartTime.Before(spans[j].StartTime) })
	t.Logf("trace %s:\n%s", tid, dumpSpans(spans))

	// Other traces must not contain hops of this message: its spans are all in the client's trace.
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() != tid && (s.Name == edge.SpanReceive && attr(s, "sb.type") == chat.TypeSend) {
			t.Errorf("a chat.send frame was traced outside the client's trace: %s %s", s.Name, s.SpanContext.TraceID())
		}
	}

	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	// ancestors returns s's chain of parents, nearest first, up to the client's span.
	ancestors := func(s tracetest.SpanStub) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for p := s.Parent.SpanID(); p.IsValid(); {
			ps, ok := byID[p]
			if !ok {
				break
			}
			out = append(out, ps)
			p = ps.Parent.SpanID()
		}
		return out
	}
	one := func(name string, match func(tracetest.SpanStub) bool) tracetest.SpanStub {
		t.Helper()
		var found []tracetest.SpanStub
		for _, s := range spans {
			if match(s) {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d %s spans in the trace, want 1:\n%s", len(found), name, dumpSpans(spans))
		}
		return found[0]
	}
	receive := one("edge.receive", func(s tracetest.SpanStub) bool {
		return s.Name == edge.SpanReceive && attr(s, "sb.edge") == e1.srv.ID()
	})
	publish := one("edge.publish", func(s tracetest.SpanStub) bool {
		return s.Name == edge.SpanPublish && s.Parent.SpanID() == receive.SpanContext.SpanID()
	})
	handle := one("logic chat.send", func(s tracetest.SpanStub) bool { return s.Name == "logic "+chat.TypeSend })
	resolveClient := one("router ResolveUsers (client)", func(s tracetest.SpanStub) bool {
		return strings.Contains(s.Name, "ResolveUsers") && s.SpanKind == trace.SpanKindClient
	})
	resolveServer := one("router ResolveUsers (server)", func(s tracetest.SpanStub) bool {
		return strings.Contains(s.Name, "ResolveUsers") && s.SpanKind == trace.SpanKindServer
	})

	if receive.Parent.SpanID() != clientSpan || !receive.Parent.IsRemote() {
		t.Errorf("edge.receive's parent %s, want the client's span %s", receive.Parent.SpanID(), clientSpan)
	}
	// Causal order, by parentage: each hop descends from the one before it.
	chain := []struct {
		name      string
		s, parent tracetest.SpanStub
	}{
		{"edge.publish ← edge.receive", publish, receive},
		{"logic handle ← edge.publish", handle, publish},
		{"router client ← logic handle", resolveClient, handle},
		{"router server ← router client", resolveServer, resolveClient},
		{"edge.fanout ← logic handle", *fanout, handle},
	}
	for _, l := range chain {
		ok := false
		for _, a := range ancestors(l.s) {
			ok = ok || a.SpanContext.SpanID() == l.parent.SpanContext.SpanID()
		}
		if !ok {
			t.Errorf("%s: %s does not descend from %s", l.name, l.s.Name, l.parent.Name)
		}
		if l.s.StartTime.Before(l.parent.StartTime) {
			t.Errorf("%s: %s started before %s", l.name, l.s.Name, l.parent.Name)
		}
	}
	// And in time: the fanout starts after the router answered.
	if fanout.StartTime.Before(resolveClient.EndTime) {
		t.Errorf("edge.fanout started %v before the router lookup ended", resolveClient.EndTime.Sub(fanout.StartTime))
	}
	if got := attr(*fanout, "sb.recipients"); got != "1" {
		t.Errorf("bob's edge.fanout sb.recipients = %s, want 1", got)
	}
	if publish.EndTime.IsZero() || publish.Status.Code != 0 {
		t.Errorf("edge.publish ended with %+v", publish.Status)
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

func dumpSpans(spans tracetest.SpanStubs) string {
	var b strings.Builder
	t0 := time.Time{}
	if len(spans) > 0 {
		t0 = spans[0].StartTime
	}
	for _, s := range spans {
		fmt.Fprintf(&b, "  +%-10v %-8v %-45s %s ← %s  %s\n", s.StartTime.Sub(t0).Round(time.Microsecond),
			s.EndTime.Sub(s.StartTime).Round(time.Microsecond), s.Name, s.SpanContext.SpanID(), s.Parent.SpanID(), s.SpanKind)
	}
	return b.String()
}

// TestChatRoundTripTracingOverhead measures the chat round trip (alice's send on edge 1 to
// bob's receive on edge 2) with tracing off (no provider installed) and then with every
// process on one SDK provider sampling 1% of the frames (parent-based, batch processor, a
// discarding exporter), each phase on a fresh cluster. It logs the figures and asserts none.
// The off phase must run first: otel's global provider can be installed but not removed from
// what was built before.
func TestChatRoundTripTracingOverhead(t *testing.T) {
	const (
		pairs  = 8
		warmup = 40
		n      = 300
		rate   = 100 // messages per second, all pairs together
	)
	run := func(name string) []time.Duration {
		c := newCluster(t)
		e1, e2 := c.addEdge(), c.addEdge()
		c.addLogic()
		sfx := suffix()
		senders, receivers := make([]*wsClient, pairs), make([]*wsClient, pairs)
		for i := range pairs {
			senders[i] = dial(t, e1, fmt.Sprintf("s%d-%s", i, sfx))
			receivers[i] = dial(t, e2, fmt.Sprintf("r%d-%s", i, sfx))
		}
		for _, r := range receivers {
			c.waitOnline(r.user, 1)
		}
		sent := make(map[string]time.Time, warmup+n)
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for i := range warmup + n {
			<-tick.C
			cmid := fmt.Sprintf("%s-%d", name, i)
			sent[cmid] = time.Now()
			sendChat(senders[i%pairs], receivers[i%pairs].user, strings.Repeat("x", 64), cmid)
		}
		got := func() int {
			k := 0
			for _, r := range receivers {
				k += len(r.frames(isType(chat.TypeMsg)))
			}
			return k
		}
		eventually(t, 60*time.Second, name+": every message received", func() bool { return got() >= warmup+n })
		var rtt []time.Duration
		for _, r := range receivers {
			for _, f := range r.frames(isType(chat.TypeMsg)) {
				m := decode[chat.Message](t, f)
				var i int
				fmt.Sscanf(strings.TrimPrefix(m.CMID, name+"-"), "%d", &i)
				if i >= warmup {
					rtt = append(rtt, f.at.Sub(sent[m.CMID]))
				}
			}
		}
		sort.Slice(rtt, func(i, j int) bool { return rtt[i] < rtt[j] })
		return rtt
	}
	off := run("off")

	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	on := run("ratio1pct")
	t.Logf("chat round trip, %d messages at %d/s over %d pairs, edge 1 → Pulsar → logic → router → Pulsar → edge 2:", n, rate, pairs)
	t.Logf("  tracing off: p50 %s", pct(off, 50)+"  p90 "+pct(off, 90)+"  p99 "+pct(off, 99))
	t.Logf("  sampler 1%%:  p50 %s", pct(on, 50)+"  p90 "+pct(on, 90)+"  p99 "+pct(on, 99))
}
