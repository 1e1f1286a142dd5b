//go:build integration

package faults

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// privateRedis is a redis-server of one test (no persistence), never the shared one.
type privateRedis struct {
	t    testing.TB
	addr string
	dir  string
	mu   sync.Mutex
	ps   []*proc
	cur  *proc
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not installed: %v", err)
	}
	r := &privateRedis{t: t, addr: freePort(t), dir: t.TempDir()}
	t.Cleanup(func() {
		r.mu.Lock()
		ps := append([]*proc(nil), r.ps...)
		r.mu.Unlock()
		killAll(t, ps)
	})
	r.start()
	return r
}

// start runs redis-server on r.addr, empty, and waits for PING.
func (r *privateRedis) start() time.Duration {
	r.t.Helper()
	port := r.addr[strings.LastIndexByte(r.addr, ':')+1:]
	start := time.Now()
	for attempt := 0; ; attempt++ {
		r.cur = startProc(r.t, r.dir, "redis", "redis-server", &r.mu, &r.ps,
			"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir)
		rdb := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
		for !r.cur.exited() && time.Since(start) < 20*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := rdb.Ping(ctx).Err()
			cancel()
			if err == nil {
				rdb.Close()
				return time.Since(start)
			}
			time.Sleep(10 * time.Millisecond)
		}
		rdb.Close()
		if attempt == 5 || time.Since(start) > 20*time.Second {
			r.t.Fatalf("redis-server on %s did not start: %v\n%s", r.addr, r.cur.err, r.cur.tail(10))
		}
		time.Sleep(100 * time.Millisecond) // the port of the killed server may linger
	}
}

// TestRedisRestartedEmpty kills the router's Redis (a private redis-server) with SIGKILL
// under chat load and starts it again empty: the edges notice their lost leases and re-sync,
// presence is whole again within the bound, no client reconnects and no acked message is lost.
func TestRedisRestartedEmpty(t *testing.T) {
	rs := startPrivateRedis(t)
	c := newCluster(t, clusterOpts{redisAddr: rs.addr})
	l := startLoad(t, c, pairs/2)
	users := l.users()
	live := map[string]bool{c.edges[0].id: true, c.edges[1].id: true}
	eventually(t, 10*time.Second, "presence whole before the fault", func() bool { return c.presenceWhole(users, live) })
	l.send(rate)
	l.warm(warmup)
	connects := l.reconnects()

	killed := time.Now()
	rs.cur.kill9(t)
	// Redis stays down for a second (the router's calls fail meanwhile), then comes back empty.
	time.Sleep(time.Second)
	restarted := time.Now()
	rs.start()
	t.Logf("Redis killed at %s, back at %s", killed.Format("15:04:05.000"), time.Now().Format("15:04:05.000"))
	if p, err := c.presenceOf(users); err == nil && len(p) == len(users) {
		t.Logf("presence answered whole right after the restart: %d users", len(p))
	}
	healed := eventually(t, c.lease+10*time.Second, "presence whole again after Redis restarted empty", func() bool {
		return c.presenceWhole(users, live)
	})
	bound := c.lease + 2*time.Second // a renew finds its lease gone (≤ lease/3), then one Sync
	if healed > bound {
		t.Errorf("presence whole again %v after the restart, beyond the bound %v", healed, bound)
	}
	time.Sleep(time.Second)
	r := l.verify(syncWait)
	re := l.reconnects() - connects
	t.Logf("FAULT redis-restart-empty: router's Redis SIGKILLed, down %v, restarted empty; presence of %d users whole again %v after the restart (bound %v, lease %v); client reconnects=%d; %s",
		restarted.Sub(killed).Round(time.Millisecond), len(users), healed.Round(time.Millisecond), bound, c.lease, re, r)
	if re != 0 {
		t.Errorf("%d clients reconnected: the Redis restart must not reach the clients", re)
	}
	if r.lost != 0 || r.dups != 0 {
		t.Errorf("acked chat messages lost=%d duplicated=%d", r.lost, r.dups)
	}
}

// TestRollingRestart restarts both edges one after the other with SIGTERM under chat load: each
// drains (healthz 503, paced "move" frames over -drain), its clients reconnect through HAProxy
// to the other edge, the edge comes back, and no acked message is lost. It reports the peak
// handshake rate against the drain pacing.
func TestRollingRestart(t *testing.T) {
	c := newCluster(t, clusterOpts{drain: 4 * time.Second})
	l := startLoad(t, c, pairs)
	l.send(rate)
	l.warm(warmup)
	rollStart := time.Now()
	var drains []string
	maxN, cut := 0, 0
	for i, e := range c.edges {
		n := 0
		for _, cl := range l.clients {
			if id, _, _ := cl.state(); id == e.id {
				n++
			}
		}
		maxN = max(maxN, n)
		movesBefore := l.moves()
		start := time.Now()
		t.Logf("SIGTERM %s at %s", e.id, start.Format("15:04:05.000"))
		e.signal(syscall.SIGTERM)
		if err := e.wait(t, c.drain+40*time.Second); err != nil {
			t.Errorf("%s exited with %v after SIGTERM", e.id, err)
		}
		exited := time.Since(start)
		other := c.edges[1-i].id
		eventually(t, 15*time.Second, "every client connected to "+other, func() bool {
			for _, cl := range l.clients {
				if id, _, ok := cl.state(); !ok || id != other {
					return false
				}
			}
			return true
		})
		moved := time.Since(start)
		gotMove := l.moves() - movesBefore
		cut += max(0, n-gotMove)
		c.restartEdge(i)
		t.Logf("%s back at %s", e.id, time.Now().Format("15:04:05.000"))
		drains = append(drains, e.id+": "+strconv.Itoa(n)+" clients, "+strconv.Itoa(gotMove)+" got a move, exited after "+
			exited.Round(time.Millisecond).String()+", all on "+other+" after "+moved.Round(time.Millisecond).String())
		// Let the load spread again before the next edge goes: new connections are not moved
		// back by themselves, so the second drain moves whatever the second edge holds.
	}
	live := map[string]bool{c.edges[0].id: true, c.edges[1].id: true}
	users := l.users()
	whole := eventually(t, 10*time.Second, "every user online exactly once after the rolling restart", func() bool {
		return c.presenceWhole(users, live)
	})
	t.Logf("presence whole (every user exactly once) %v after the second edge was back", whole.Round(time.Millisecond))
	time.Sleep(time.Second)
	r := l.verify(syncWait)
	moves, codes := l.moves(), map[int]int{}
	for _, cl := range l.clients {
		cl.mu.Lock()
		for k, v := range cl.closeCodes {
			codes[k] += v
		}
		cl.mu.Unlock()
	}
	peak1s := l.hs.peak(rollStart, time.Second)
	peak100 := l.hs.peak(rollStart, 100*time.Millisecond)
	pace := float64(len(l.clients)) / c.drain.Seconds()
	t.Logf("FAULT rolling-restart: %d clients, 2 edges SIGTERMed one at a time (drain %v, move jitter 500ms); %s; moves=%d reconnects=%d close codes seen %v; %d clients of a draining edge cut without a move; peak handshakes %d/s (%d per 100ms) against a drain pacing of ≤%.1f/s; %s",
		len(l.clients), c.drain, strings.Join(drains, "; "), moves, l.reconnects(), codes, cut, peak1s, peak100, pace, r)
	if r.lost != 0 || r.dups != 0 {
		t.Errorf("acked chat messages lost=%d duplicated=%d", r.lost, r.dups)
	}
	if moves == 0 {
		t.Error("no client got a move frame")
	}
	// A drain moves every client it holds: none may be cut (HAProxy must not shut sessions
	// of a server marked down, the edge must not exit before the last move).
	if cut > 0 {
		t.Errorf("%d clients of a draining edge were cut without a move", cut)
	}
	// No storm: the drain spreads an edge's clients over the window, so no second sees all
	// of them at once.
	if peak1s >= maxN {
		t.Errorf("peak %d handshakes in one second: every client of a drained edge (%d) at once, the drain did not pace them", peak1s, maxN)
	}
}

// moves is the number of "move" frames the clients received.
func (l *load) moves() int {
	n := 0
	for _, cl := range l.clients {
		cl.mu.Lock()
		n += cl.moves
		cl.mu.Unlock()
	}
	return n
}
