//go:build integration

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/buslat"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
)

func pct(s []time.Duration, p int) string {
	return fmt.Sprintf("%.2fms", float64(buslat.Percentile(s, p).Microseconds())/1000)
}

// TestChatRoundTripLatency measures the chat round trip — alice's WebSocket write on edge 1 →
// Pulsar (upstream) → logic (chat plugin, Redis append) → Pulsar (edge 2's topic) → edge 2 →
// bob's WebSocket read — and, in the same run, Pulsar's own publish→consume latency through
// bus.Pulsar (the buslat probe), and logs both. No assertion on the figures: the box is shared.
//
// The goal: chat p50 ≤ 2 × Pulsar p50 + 2 ms, chat p99 ≤ 30 ms.
func TestChatRoundTripLatency(t *testing.T) {
	const (
		warmup = 50
		n      = 500
		rate   = 100 // messages per second
	)
	c := newCluster(t)
	e1, e2 := c.addEdge(), c.addEdge()
	c.addLogic()

	// Pulsar's own figure first, on a topic of this run's namespace, with the bus's defaults
	// (the edges' and logic's producers use the same).
	pb, err := bus.NewPulsar(bus.PulsarConfig{URL: c.pulsarURL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr, err := buslat.Run(ctx, pb, buslat.Config{Topic: "persistent://" + c.ns + "/buslat", N: 1000, Rate: 200, Warmup: 100})
	_ = pb.Close()
	if err != nil {
		t.Fatalf("buslat: %v", err)
	}

	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	a := dial(t, e1, alice)
	b := dial(t, e2, bob)
	c.waitOnline(bob, 1)

	sent := make(map[string]time.Time, warmup+n)
	ids := make(map[string]string, warmup+n) // frame id → cmid
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	for i := range warmup + n {
		<-tick.C
		cmid := "lat-" + strconv.Itoa(i)
		sent[cmid] = time.Now()
		ids[sendChat(a, bob, strings.Repeat("x", 64), cmid)] = cmid
	}
	eventually(t, 30*time.Second, "bob to receive every message", func() bool {
		return len(b.frames(isType(chat.TypeMsg))) >= warmup+n
	})
	eventually(t, 30*time.Second, "alice to get every reply", func() bool {
		return len(a.frames(isType(chat.TypeSend))) >= warmup+n
	})

	measured := func(cmid string) bool {
		i, _ := strconv.Atoi(strings.TrimPrefix(cmid, "lat-"))
		return i >= warmup
	}
	var rtt, ack, reply []time.Duration
	for _, f := range b.frames(isType(chat.TypeMsg)) {
		m := decode[chat.Message](t, f)
		if measured(m.CMID) {
			rtt = append(rtt, f.at.Sub(sent[m.CMID]))
		}
	}
	for _, f := range a.frames(nil) {
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
	for _, s := range [][]time.Duration{rtt, ack, reply} {
		slices.Sort(s)
	}
	t.Logf("Pulsar publish→consume (bus.Pulsar, %d msgs at %d/s, %d keys, %d B): p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms; publish→broker ack p50 %.2fms p99 %.2fms",
		pr.N, pr.Rate, pr.Keys, pr.Size, pr.P50, pr.P90, pr.P99, pr.Max, pr.AckP50, pr.AckP99)
	t.Logf("chat round trip alice→edge1→Pulsar→logic→Pulsar→edge2→bob (%d msgs at %d/s): p50 %s p90 %s p99 %s max %s",
		len(rtt), rate, pct(rtt, 50), pct(rtt, 90), pct(rtt, 99), pct(rtt, 100))
	t.Logf("alice: edge ack (bus accepted) p50 %s p99 %s; plugin reply p50 %s p99 %s",
		pct(ack, 50), pct(ack, 99), pct(reply, 50), pct(reply, 99))
	goal := 2*pr.P50 + 2
	t.Logf("goal: chat p50 ≤ 2×%.2f+2 = %.2fms, p99 ≤ 30ms", pr.P50, goal)
	if len(rtt) != n {
		t.Errorf("bob received %d measured messages, want %d", len(rtt), n)
	}
}
