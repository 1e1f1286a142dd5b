//go:build integration

package faults

import (
	"context"
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

// TestEdgeKill9 kills an edge with SIGKILL under chat load. Its clients reconnect through
// HAProxy to the other edge, the router drops the dead edge's presence at once when its lease
// lapses, every user is then online exactly once, and after chat.sync no acked message is lost.
func TestEdgeKill9(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	l := startLoad(t, c, pairs)
	l.send(rate)
	l.warm(warmup)

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

	// Keep the load running on one edge a little, then check nothing acked was lost.
	time.Sleep(time.Second)
	r := l.verify(syncWait)
	t.Logf("FAULT edge-kill9: %d clients, %d on the killed edge; all reconnected via HAProxy to %s in %v; router dropped the dead edge's presence in %v (lease %v, bound %v); every user online exactly once after %v; peak reconnect handshakes %d/s; %s",
		len(l.clients), len(victims), survivor.id, reconnected.Round(time.Millisecond), dropped.Round(time.Millisecond),
		c.lease, leaseBound, wholeAt.Round(time.Millisecond), l.hs.peak(killed, time.Second), r)
	if r.lost != 0 || r.dups != 0 {
		t.Errorf("acked chat messages lost=%d duplicated=%d", r.lost, r.dups)
	}
	if r.acked == 0 {
		t.Error("no message was acked")
	}
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
