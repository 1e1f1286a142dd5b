//go:build integration

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"
)

const (
	pairs    = 20  // chat pairs under load: 40 clients
	rate     = 5.0 // messages per second per client
	warmup   = 2 * time.Second
	syncWait = 45 * time.Second // how long verify may wait for acked messages to be stored
)

// ackedCount is the number of messages the bus accepted so far, over all clients.
func (l *load) ackedCount() int {
	n := 0
	for _, cl := range l.clients {
		n += len(cl.acked())
	}
	return n
}

// warm lets the load run until at least d of traffic has been accepted end to end.
func (l *load) warm(d time.Duration) {
	l.t.Helper()
	want := int(float64(len(l.clients)) * rate * d.Seconds() * 0.5)
	eventually(l.t, 30*time.Second, "chat load flowing", func() bool { return l.ackedCount() >= want })
}

// presenceOf resolves every user of the load: user → the edges of its connections.
func (c *cluster) presenceOf(users []string) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.rc.ResolveUsers(ctx, users)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for u, cs := range res {
		for _, cn := range cs {
			out[u] = append(out[u], cn.Edge)
		}
	}
	return out, nil
}

// presenceWhole reports whether every user has exactly one connection, on an edge in live.
func (c *cluster) presenceWhole(users []string, live map[string]bool) bool {
	p, err := c.presenceOf(users)
	if err != nil {
		return false
	}
	for _, u := range users {
		if len(p[u]) != 1 || !live[p[u][0]] {
			return false
		}
	}
	return true
}

// TestEdgeKill9 kills an edge with SIGKILL under chat and danmaku load. Its clients reconnect
// through HAProxy to the other edge, the router drops the dead edge's presence at once when its
// lease lapses, every user is then online exactly once, and after chat.sync no acked message is
// lost. Danmaku (best-effort live comments, DESIGN.md): the room's members on the surviving edge
// keep receiving without a long gap, the killed edge's members rejoin the room through HAProxy
// and receive again within the reconnect bound, and every danmaku.send on a connection that
// stayed up is answered (its echo or an error frame) — none is left unanswered.
func TestEdgeKill9(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	l := startLoad(t, c, pairs)
	l.send(rate)
	l.warm(warmup)
	d := startDanmaku(t, c, dmMembers, l.hs)
	d.publish(dmPubsPerEdge, dmRate, dmWarmDeliverys)
	warmAt := time.Now()
	time.Sleep(dmSteady) // both loads steady on both edges: the baseline of the figures

	perEdge := map[string][]*chatClient{}
	for _, cl := range l.clients {
		e, _, _ := cl.state()
		perEdge[e] = append(perEdge[e], cl)
	}
	victim, survivor := c.edges[0], c.edges[1]
	if len(perEdge[survivor.id]) > len(perEdge[victim.id]) {
		victim, survivor = survivor, victim
	}
	victims := perEdge[victim.id]
	if len(victims) == 0 || len(perEdge[survivor.id]) == 0 {
		t.Fatalf("HAProxy did not spread the clients over both edges: %d on %s, %d on %s",
			len(perEdge[victim.id]), victim.id, len(perEdge[survivor.id]), survivor.id)
	}
	before := map[*chatClient]int{}
	for _, cl := range victims {
		_, n, _ := cl.state()
		before[cl] = n
	}
	users := l.users()
	dmByEdge := d.byEdge()
	dmVictims, dmSurvivors := dmByEdge[victim.id], dmByEdge[survivor.id]
	if len(dmVictims) == 0 || len(dmSurvivors) == 0 {
		t.Fatalf("danmaku members not on both edges: %d on %s, %d on %s", len(dmVictims), victim.id, len(dmSurvivors), survivor.id)
	}
	dmBefore := map[*dmMember]int{}
	for _, m := range dmVictims {
		_, n, _ := m.cl.state()
		dmBefore[m] = n
	}

	killed := time.Now()
	victim.kill9(t)

	var dropped, reconnected time.Duration
	deadline := killed.Add(c.lease + 15*time.Second)
	for (dropped == 0 || reconnected == 0) && time.Now().Before(deadline) {
		if dropped == 0 {
			if p, err := c.presenceOf(users); err == nil {
				stale := 0
				for _, es := range p {
					for _, e := range es {
						if e == victim.id {
							stale++
						}
					}
				}
				if stale == 0 {
					dropped = time.Since(killed)
				}
			}
		}
		if reconnected == 0 {
			all := true
			for _, cl := range victims {
				e, n, ok := cl.state()
				if !ok || n == before[cl] || e != survivor.id {
					all = false
					break
				}
			}
			if all {
				reconnected = time.Since(killed)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if dropped == 0 {
		t.Fatalf("the router still lists %s's connections %v after the kill (lease %v)", victim.id, time.Since(killed), c.lease)
	}
	if reconnected == 0 {
		t.Fatalf("%d clients of the dead edge not all reconnected to %s within %v", len(victims), survivor.id, time.Since(killed))
	}
	leaseBound := c.lease + time.Second // the lease plus the router's reap interval and one Redis round
	if dropped > leaseBound {
		t.Errorf("presence of the dead edge dropped after %v, beyond the lease bound %v", dropped, leaseBound)
	}
	if reconnected > 10*time.Second {
		t.Errorf("reconnect through HAProxy took %v, beyond 10s", reconnected)
	}
	eventually(t, 10*time.Second, "every user online exactly once, on the surviving edge", func() bool {
		return c.presenceWhole(users, map[string]bool{survivor.id: true})
	})
	wholeAt := time.Since(killed)

	// Danmaku: every member of the killed edge is back in the room on the survivor and has
	// received a danmaku on its new connection.
	var dmRejoin, dmAgain time.Duration
	eventually(t, 20*time.Second, "the killed edge's danmaku members rejoined and receiving", func() bool {
		dmRejoin, dmAgain = 0, 0
		for _, m := range dmVictims {
			e, conn, ok := m.cl.state()
			if !ok || conn == dmBefore[m] || e != survivor.id {
				return false
			}
			var joinedAt time.Time
			for n := dmBefore[m] + 1; n <= conn && joinedAt.IsZero(); n++ {
				joinedAt, _ = m.joined(n)
			}
			if joinedAt.IsZero() {
				return false
			}
			var again time.Time
			for _, r := range m.received() {
				if r.conn > dmBefore[m] {
					again = r.at
					break
				}
			}
			if again.IsZero() {
				return false
			}
			dmRejoin = max(dmRejoin, joinedAt.Sub(killed))
			dmAgain = max(dmAgain, again.Sub(killed))
		}
		return true
	})
	backAt := killed.Add(dmAgain)
	// The room's online count is exact again once the dead edge's lease has lapsed: every
	// member is told len(members), nobody counted twice or missing.
	var countPeak int
	eventually(t, c.lease+15*time.Second, "every danmaku member told the exact room count", func() bool {
		countPeak = 0
		ok := true
		for _, m := range d.members {
			last, peak := m.onlineSince(killed)
			countPeak = max(countPeak, peak)
			ok = ok && last == len(d.members) && peak >= 0
		}
		return ok
	})
	countRight := time.Since(killed)

	// Keep the load running on one edge a little, then check nothing acked was lost.
	time.Sleep(dmSteady)
	d.stopPublishing()
	stopAt := time.Now()
	var ps pubStats
	eventually(t, 20*time.Second, "every danmaku.send on a live connection answered", func() bool {
		ps = d.pubStats()
		return ps.unanswered == 0
	})
	r := l.verify(syncWait)

	var gapBefore, gapSurvivors time.Duration
	for _, m := range d.members {
		gapBefore = max(gapBefore, maxGap(m.received(), warmAt, killed))
	}
	for _, m := range dmSurvivors {
		gapSurvivors = max(gapSurvivors, maxGap(m.received(), killed, stopAt))
	}
	covGot, covWant := d.coverage(dmSurvivors, killed, stopAt.Add(-500*time.Millisecond))
	dmPre, dmDuring, dmPost := d.deliveries(d.startTx, killed), d.deliveries(killed, backAt), d.deliveries(backAt, stopAt)
	perSec := func(n int, from, to time.Time) float64 { return float64(n) / max(to.Sub(from).Seconds(), 0.001) }
	dmLine := fmt.Sprintf("danmaku: %d members (%d on the killed edge), %d publishers × %.1f/s; delivered before/during/after the kill %d/%d/%d (%.0f/%.0f/%.0f per s; during = kill → every killed-edge member receiving again); max gap on the surviving edge %v (before the kill, all members: %v); survivors got %d/%d of the echoed danmaku sent after the kill; killed-edge members rejoined the room in %v, received again %v after the kill; room.online exact (%d) again %v after the kill (peak pushed %d: the dead edge's members counted until its lease lapsed); %s",
		len(d.members), len(dmVictims), len(d.pubs), dmRate, dmPre, dmDuring, dmPost,
		perSec(dmPre, d.startTx, killed), perSec(dmDuring, killed, backAt), perSec(dmPost, backAt, stopAt),
		gapSurvivors.Round(time.Millisecond), gapBefore.Round(time.Millisecond), covGot, covWant,
		dmRejoin.Round(time.Millisecond), dmAgain.Round(time.Millisecond), len(d.members), countRight.Round(time.Millisecond), countPeak, ps)
	t.Logf("FAULT edge-kill9: %d clients, %d on the killed edge; all reconnected via HAProxy to %s in %v; router dropped the dead edge's presence in %v (lease %v, bound %v); every user online exactly once after %v; peak reconnect handshakes %d/s; %s; %s",
		len(l.clients), len(victims), survivor.id, reconnected.Round(time.Millisecond), dropped.Round(time.Millisecond),
		c.lease, leaseBound, wholeAt.Round(time.Millisecond), l.hs.peak(killed, time.Second), r, dmLine)
	if r.lost != 0 || r.dups != 0 {
		t.Errorf("acked chat messages lost=%d duplicated=%d", r.lost, r.dups)
	}
	if r.acked == 0 {
		t.Error("no message was acked")
	}
	if gapSurvivors > dmMaxGap {
		t.Errorf("a danmaku member on the surviving edge received nothing for %v during the kill (bound %v)", gapSurvivors, dmMaxGap)
	}
	if dmAgain > 10*time.Second {
		t.Errorf("the killed edge's danmaku members received again only %v after the kill, beyond 10s", dmAgain)
	}
	if ps.echoed == 0 || dmPost == 0 {
		t.Errorf("danmaku not flowing after the kill: %s, %d delivered after", ps, dmPost)
	}
	if covWant == 0 || float64(covGot) < dmMinCoverage*float64(covWant) {
		t.Errorf("the surviving edge's members got %d/%d of the danmaku echoed after the kill (want ≥ %.0f %%)", covGot, covWant, 100*dmMinCoverage)
	}
	c.noPanics(t)
}

// TestLogicKill9 kills one of two logic replicas with SIGKILL under chat load: no acked frame is
// lost and every sender's messages are stored in the order it sent them.
func TestLogicKill9(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	l := startLoad(t, c, pairs)
	l.send(rate)
	l.warm(warmup)

	killed := time.Now()
	c.logics[0].kill9(t)
	ackedAtKill := l.ackedCount()
	// The load goes on for 3 s with one replica.
	eventually(t, 30*time.Second, "load flowing on the surviving replica", func() bool {
		return time.Since(killed) > 3*time.Second && l.ackedCount() > ackedAtKill
	})
	// Every acked frame must be answered (stored) again: measure from the kill until the
	// backlog of unanswered acked frames is empty.
	l.stopSending()
	var unanswered int
	settle := eventually(t, syncWait, "every acked chat.send answered", func() bool {
		unanswered = 0
		for _, cl := range l.clients {
			for _, m := range cl.acked() {
				if !m.replied {
					unanswered++
				}
			}
		}
		return unanswered == 0
	})
	sinceKill := time.Since(killed)
	r := l.verify(syncWait)
	t.Logf("FAULT logic-kill9: 1 of 2 logic replicas killed under %d clients × %.0f msg/s; every acked frame answered %v after the load stopped (%v after the kill); %s",
		len(l.clients), rate, settle.Round(time.Millisecond), sinceKill.Round(time.Millisecond), r)
	if r.lost != 0 || r.dups != 0 || r.outOfOrder != 0 {
		t.Errorf("acked chat frames lost=%d duplicated=%d out of order=%d", r.lost, r.dups, r.outOfOrder)
	}
}
