//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/buslat"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
)

func pct(s []time.Duration, p int) string {
	return fmt.Sprintf("%.2fms", float64(buslat.Percentile(s, p).Microseconds())/1000)
}

// TestChatRoundTripLatency measures the chat round trip — a sender's WebSocket write on edge 1
// → Pulsar (upstream) → logic (chat plugin, Redis append) → Pulsar (edge 2's topic) → edge 2 →
// the receiver's WebSocket read — and, in the same run, Pulsar's own publish→consume latency
// through bus.Pulsar (the buslat probe: 64 keys at 200/s), and logs both. The chat load is
// shaped like the probe's: many users at a few messages per second each (one user's frames are
// handled one after the other, see TestChatOneUserBurst). No assertion on the figures: the box
// is shared.
//
// The goal: chat p50 ≤ 2 × Pulsar p50 + 2 ms, chat p99 ≤ 30 ms.
func TestChatRoundTripLatency(t *testing.T) {
	const (
		pairs  = 32
		warmup = 64
		n      = 600
		rate   = 100 // messages per second, all pairs together (~3/s per sender)
	)
	c := newCluster(t)
	e1, e2 := c.addEdge(), c.addEdge()
	var hmu sync.Mutex
	hstart, hend := map[string]time.Time{}, map[string]time.Time{} // frame id → handler start / end
	c.middleware = []logic.Middleware{func(next logic.Handler) logic.Handler {
		return func(ctx context.Context, lc *logic.Context) error {
			if lc.Type != chat.TypeSend {
				return next(ctx, lc)
			}
			start := time.Now()
			err := next(ctx, lc)
			end := time.Now()
			hmu.Lock()
			if _, ok := hstart[lc.ID]; !ok {
				hstart[lc.ID], hend[lc.ID] = start, end
			}
			hmu.Unlock()
			return err
		}
	}}
	c.timings = &timings{}
	c.addLogic()

	// Pulsar's own figure first, on a topic of this run's namespace, with the bus's defaults
	// (the edges' and logic's producers use the same).
	pr := probe(t, c)

	senders := make([]*wsClient, pairs)
	receivers := make([]*wsClient, pairs)
	sfx := suffix()
	for i := range pairs {
		senders[i] = dial(t, e1, fmt.Sprintf("s%d-%s", i, sfx))
		receivers[i] = dial(t, e2, fmt.Sprintf("r%d-%s", i, sfx))
	}
	for _, r := range receivers {
		c.waitOnline(r.user, 1)
	}

	sent := make(map[string]time.Time, warmup+n)
	ids := make(map[string]string, warmup+n) // frame id → cmid
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	for i := range warmup + n {
		<-tick.C
		cmid := "lat-" + strconv.Itoa(i)
		s, r := senders[i%pairs], receivers[i%pairs]
		sent[cmid] = time.Now()
		ids[sendChat(s, r.user, strings.Repeat("x", 64), cmid)] = cmid
	}
	count := func(cs []*wsClient, typ string) int {
		k := 0
		for _, c := range cs {
			k += len(c.frames(isType(typ)))
		}
		return k
	}
	eventually(t, 60*time.Second, "every message to be received", func() bool { return count(receivers, chat.TypeMsg) >= warmup+n })
	eventually(t, 30*time.Second, "every reply", func() bool { return count(senders, chat.TypeSend) >= warmup+n })

	measured := func(cmid string) bool {
		i, _ := strconv.Atoi(strings.TrimPrefix(cmid, "lat-"))
		return i >= warmup
	}
	var rtt, ack, reply []time.Duration
	for _, r := range receivers {
		for _, f := range r.frames(isType(chat.TypeMsg)) {
			if m := decode[chat.Message](t, f); measured(m.CMID) {
				rtt = append(rtt, f.at.Sub(sent[m.CMID]))
			}
		}
	}
	for _, s := range senders {
		for _, f := range s.frames(nil) {
			cmid, ok := ids[f.ID]
			if !ok || !measured(cmid) {
				continue
			}
			switch f.Type {
			case protocol.TypeAck:
				ack = append(ack, f.at.Sub(sent[cmid]))
			case chat.TypeSend:
				reply = append(reply, f.at.Sub(sent[cmid]))
			}
		}
	}
	// Per hop, from the same timestamps: sender write → handler start (edge 1, Pulsar upstream),
	// handler start → end (Redis append, deliveries published and accepted by the broker),
	// handler start → edge 2 handles the envelope (append + Pulsar downstream), edge 2 →
	// receiver read (local fanout and the socket).
	frameOf := make(map[string]string, len(ids)) // cmid → frame id
	for id, cmid := range ids {
		frameOf[cmid] = id
	}
	var up, handler, down, last []time.Duration
	e2.tap.each(func(d *protocol.Downstream, at time.Time) {
		if d.Frame.Type != chat.TypeMsg {
			return
		}
		var m chat.Message
		if json.Unmarshal(d.Frame.Data, &m) != nil || !measured(m.CMID) {
			return
		}
		hmu.Lock()
		hs, ok := hstart[frameOf[m.CMID]]
		he := hend[frameOf[m.CMID]]
		hmu.Unlock()
		if !ok {
			return
		}
		up = append(up, hs.Sub(sent[m.CMID]))
		handler = append(handler, he.Sub(hs))
		down = append(down, at.Sub(hs))
		for _, r := range receivers {
			for _, f := range r.frames(func(f frame) bool {
				return f.Type == chat.TypeMsg && strings.Contains(string(f.Data), `"cmid":"`+m.CMID+`"`)
			}) {
				last = append(last, f.at.Sub(at))
			}
		}
	})
	for _, s := range [][]time.Duration{rtt, ack, reply, up, handler, down, last} {
		slices.Sort(s)
	}
	pr2 := probe(t, c)        // again after the chat run: how much the box moved meanwhile
	var pings []time.Duration // Redis round trips right after (the box's Redis is shared)
	for range 200 {
		start := time.Now()
		if err := c.rdb.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("redis ping: %v", err)
		}
		pings = append(pings, time.Since(start))
		time.Sleep(2 * time.Millisecond)
	}
	slices.Sort(pings)
	for _, r := range []*buslat.Result{pr, pr2} {
		t.Logf("Pulsar publish→consume (bus.Pulsar, %d msgs at %d/s, %d keys, %d B): p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms; publish→broker ack p50 %.2fms p99 %.2fms",
			r.N, r.Rate, r.Keys, r.Size, r.P50, r.P90, r.P99, r.Max, r.AckP50, r.AckP99)
	}
	t.Logf("chat round trip sender→edge1→Pulsar→logic→Pulsar→edge2→receiver (%d msgs, %d pairs, %d/s): p50 %s p90 %s p99 %s max %s",
		len(rtt), pairs, rate, pct(rtt, 50), pct(rtt, 90), pct(rtt, 99), pct(rtt, 100))
	t.Logf("sender: edge ack (bus accepted) p50 %s p99 %s; plugin reply p50 %s p99 %s",
		pct(ack, 50), pct(ack, 99), pct(reply, 50), pct(reply, 99))
	t.Logf("hops p50/p99: write→logic handler %s/%s; handler (append+publish) %s/%s; handler start→edge 2 %s/%s; edge 2→receiver read %s/%s",
		pct(up, 50), pct(up, 99), pct(handler, 50), pct(handler, 99), pct(down, 50), pct(down, 99), pct(last, 50), pct(last, 99))
	c.timings.mu.Lock()
	slices.Sort(c.timings.append)
	slices.Sort(c.timings.resolve)
	t.Logf("inside the handler p50/p99: Redis append %s/%s; router ResolveUsers %s/%s; (Redis PING after the run %s/%s)",
		pct(c.timings.append, 50), pct(c.timings.append, 99), pct(c.timings.resolve, 50), pct(c.timings.resolve, 99), pct(pings, 50), pct(pings, 99))
	c.timings.mu.Unlock()
	t.Logf("goal: chat p50 ≤ 2×%.2f+2 = %.2fms, p99 ≤ 30ms", pr.P50, 2*pr.P50+2)
	if len(rtt) != n {
		t.Errorf("received %d measured messages, want %d", len(rtt), n)
	}
}

func probe(t *testing.T, c *cluster) *buslat.Result {
	t.Helper()
	pb, err := bus.NewPulsar(bus.PulsarConfig{URL: c.pulsarURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := buslat.Run(ctx, pb, buslat.Config{Topic: "persistent://" + c.ns + "/buslat-" + suffix(), N: 1000, Rate: 200, Warmup: 100})
	if err != nil {
		t.Fatalf("buslat: %v", err)
	}
	return r
}

// TestChatOneUserBurst measures how fast one user's messages are handled when they arrive
// faster than that: a user's frames share a Key_Shared key, so one consumer handles them one
// after the other, each waiting for its Redis append and for the broker to accept its
// deliveries. It logs the throughput; no assertion.
func TestChatOneUserBurst(t *testing.T) {
	const n = 200
	c := newCluster(t)
	e1, e2 := c.addEdge(), c.addEdge()
	c.addLogic()
	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	a := dial(t, e1, alice)
	b := dial(t, e2, bob)
	c.waitOnline(bob, 1)
	start := time.Now()
	for i := range n {
		sendChat(a, bob, "burst", "b-"+strconv.Itoa(i))
	}
	eventually(t, 60*time.Second, "every reply", func() bool { return len(a.frames(isType(chat.TypeSend))) >= n })
	replies := a.frames(isType(chat.TypeSend))
	first, last := replies[0].at, replies[n-1].at
	eventually(t, 30*time.Second, "bob to receive all", func() bool { return len(b.frames(isType(chat.TypeMsg))) >= n })
	t.Logf("one user, %d messages written at once: first reply after %v, last after %v: %.0f messages/s for one user (%.2fms each)",
		n, first.Sub(start).Round(time.Millisecond), last.Sub(start).Round(time.Millisecond),
		float64(n-1)/last.Sub(first).Seconds(), float64(last.Sub(first).Microseconds())/1000/float64(n-1))
}
