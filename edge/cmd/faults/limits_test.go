//go:build integration

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/protocol"
)

// Per-source limits of the test's HAProxy (deploy/haproxy/haproxy.cfg.tmpl reads them from
// the environment; the deployed defaults are 1000 / 1000 per 10 s) and of its direct edge.
const (
	hapMaxConns   = 20
	hapConnRate   = 50
	hapRatePeriod = 3 * time.Second

	edgeMaxConns = 20
	edgeRate     = 10 // per second; burst 2×
)

// Loopback sources, one per simulated client host.
const (
	srcHog    = "127.0.0.5" // holds its connection cap and asks for more
	srcHonest = "127.0.0.6" // connects and chats at the same moment
	srcBurst  = "127.0.0.7" // a handshake burst beyond the rate
)

// outcomes tallies dial results: upgraded, refused with an HTTP status, refused before any
// HTTP answer (by the TCP connection being closed or reset).
type outcomes struct {
	mu     sync.Mutex
	ok     int
	status map[int]int
	noHTTP map[string]int
}

func newOutcomes() *outcomes { return &outcomes{status: map[int]int{}, noHTTP: map[string]int{}} }

func (o *outcomes) add(ws *websocket.Conn, status int, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case ws != nil:
		o.ok++
	case status != 0:
		o.status[status]++
	default:
		o.noHTTP[errClass(err)]++
	}
}

func (o *outcomes) refused() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, v := range o.status {
		n += v
	}
	for _, v := range o.noHTTP {
		n += v
	}
	return n
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("%d upgraded, HTTP %v, closed before any HTTP answer %v", o.ok, o.status, o.noHTTP)
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}

// dialFrom opens a WebSocket to url as user from source ip and reads the welcome. A refused
// handshake returns its HTTP status, or 0 and the error when no HTTP answer came.
func dialFrom(c *cluster, url, ip, user string) (*websocket.Conn, int, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second,
		NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).DialContext}
	ws, res, err := d.Dial(url+"?token="+c.token(user), nil)
	if err != nil {
		if res != nil {
			return nil, res.StatusCode, err
		}
		return nil, 0, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f frame
	if err := ws.ReadJSON(&f); err != nil || f.Type != protocol.TypeWelcome {
		ws.Close()
		return nil, 0, fmt.Errorf("welcome: %+v %w", f, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, 0, nil
}

// burst makes n dial-and-close handshakes from ip with workers at once and tallies them.
func burst(c *cluster, url, ip, name string, n, workers int) (*outcomes, time.Duration) {
	o := newOutcomes()
	var wg sync.WaitGroup
	next := make(chan int)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ws, st, err := dialFrom(c, url, ip, c.user(name+strconv.Itoa(i)))
				o.add(ws, st, err)
				if ws != nil {
					ws.Close()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return o, time.Since(start)
}

// holdFrom opens n WebSockets from ip (each must upgrade) and closes them at cleanup.
func holdFrom(t *testing.T, c *cluster, url, ip, name string, n int) []*websocket.Conn {
	t.Helper()
	var held []*websocket.Conn
	t.Cleanup(func() {
		for _, ws := range held {
			ws.Close()
		}
	})
	for i := range n {
		ws, st, err := dialFrom(c, url, ip, c.user(name+strconv.Itoa(i)))
		if ws == nil {
			t.Fatalf("connection %d of %d from %s refused (HTTP %d, %v) below the limit", i+1, n, ip, st, err)
		}
		held = append(held, ws)
	}
	return held
}

// chatFrom runs a pair of chat clients from source ip against url, each sending n messages to
// the other, and returns how many arrived live and their latency's p99.
func chatFrom(t *testing.T, c *cluster, url, ip string, n int) (got int, p99 time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sfx := suffix()[:4]
	a, b := newChatClient(c, c.user("hon"+sfx+"a"), nil), newChatClient(c, c.user("hon"+sfx+"b"), nil)
	for _, cl := range []*chatClient{a, b} {
		cl.url, cl.local = url, &net.TCPAddr{IP: net.ParseIP(ip)}
		cl.start(ctx)
	}
	defer func() {
		cancel()
		<-a.done
		<-b.done
	}()
	eventually(t, 20*time.Second, "the honest source's chat clients connected", func() bool {
		_, _, okA := a.state()
		_, _, okB := b.state()
		return okA && okB
	})
	// A chat to a user the router does not list yet is stored but not delivered live.
	eventually(t, 10*time.Second, "the honest source's users online in the router", func() bool {
		p, err := c.presenceOf([]string{a.user, b.user})
		return err == nil && len(p[a.user]) == 1 && len(p[b.user]) == 1
	})
	for range n {
		a.sendChat(b.user)
		b.sendChat(a.user)
		time.Sleep(20 * time.Millisecond) // the pace of the chat, not synchronisation
	}
	delivered := func() int {
		got := 0
		for _, p := range [][2]*chatClient{{a, b}, {b, a}} {
			from, to := p[0], p[1]
			from.mu.Lock()
			ids := make([]string, 0, len(from.order))
			for _, m := range from.order {
				ids = append(ids, m.cmid)
			}
			from.mu.Unlock()
			to.mu.Lock()
			for _, id := range ids {
				if _, ok := to.live[id]; ok {
					got++
				}
			}
			to.mu.Unlock()
		}
		return got
	}
	start := time.Now()
	for got = delivered(); got < 2*n && time.Since(start) < 20*time.Second; got = delivered() {
		time.Sleep(10 * time.Millisecond)
	}
	var lat []time.Duration
	for _, cl := range []*chatClient{a, b} {
		cl.mu.Lock()
		lat = append(lat, cl.latencies...)
		cl.mu.Unlock()
	}
	return got, percentile(lat, 0.99)
}

// frontendStat reads one column of HAProxy's frontend line from its CSV stats.
func (c *cluster) frontendStat(col string) int {
	hc := http.Client{Timeout: time.Second}
	res, err := hc.Get("http://" + c.stats + "/stats;csv")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	lines := strings.Split(string(b), "\n")
	head := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	idx := -1
	for i, h := range head {
		if h == col {
			idx = i
		}
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if idx >= 0 && len(f) > idx && f[0] == "switchboard" && f[1] == "FRONTEND" {
			n, _ := strconv.Atoi(f[idx])
			return n
		}
	}
	return -1
}

// edgeRejects reads an edge's /stats: handshakes it refused, by HTTP status.
func edgeRejects(addr string) map[int]uint64 {
	hc := http.Client{Timeout: time.Second}
	res, err := hc.Get("http://" + addr + "/stats")
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var st struct{ Rejects map[int]uint64 }
	_ = json.NewDecoder(res.Body).Decode(&st)
	return st.Rejects
}

// TestPerSourceLimits drives the per-source limits on the real cluster.
//
// Behind HAProxy every edge sees one source, HAProxy's own address: the edge determines the
// source from the TCP peer (X-Forwarded-For is only logged, no PROXY protocol), so its
// -max-conns-per-source would count all clients together. What protects the cluster is
// HAProxy's stick table: the "haproxy" subtest dials through it from distinct loopback
// sources, with the template's limits lowered by environment. The edge's own limits, meant for
// an edge exposed directly, are driven against an extra edge's port in the "edge" subtest.
func TestPerSourceLimits(t *testing.T) {
	c := newCluster(t, clusterOpts{haproxyEnv: []string{
		"SB_HAPROXY_SRC_MAX_CONNS=" + strconv.Itoa(hapMaxConns),
		"SB_HAPROXY_SRC_CONN_RATE=" + strconv.Itoa(hapConnRate),
		"SB_HAPROXY_SRC_RATE_PERIOD=" + hapRatePeriod.String(),
	}})

	t.Run("haproxy", func(t *testing.T) {
		url := c.wsURL()
		// One source holds its cap; every further connection is refused before any HTTP.
		held := holdFrom(t, c, url, srcHog, "hog", hapMaxConns)
		dconBefore := c.frontendStat("dcon")
		surplus := newOutcomes()
		for i := range 10 {
			surplus.add(dialFrom(c, url, srcHog, c.user("hogx"+strconv.Itoa(i))))
		}
		// At the same moment another source connects and chats normally.
		const msgs = 20
		got, p99 := chatFrom(t, c, url, srcHonest, msgs)
		dcon := c.frontendStat("dcon") - dconBefore
		// A closed connection frees a place for the source.
		held[0].Close()
		var readmitted time.Duration
		closed := time.Now()
		for attempt := 0; ; attempt++ {
			ws, _, _ := dialFrom(c, url, srcHog, c.user("hogy"+strconv.Itoa(attempt)))
			if ws != nil {
				ws.Close()
				readmitted = time.Since(closed)
				break
			}
			if attempt == 10 {
				t.Fatalf("the capped source is not admitted again after closing one of its %d connections", hapMaxConns)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, ws := range held {
			ws.Close()
		}

		// A handshake burst beyond the rate from a fresh source: refused beyond the limit, while
		// the honest source still connects; admitted again once the window has passed.
		const n = hapConnRate + 30
		bo, took := burst(c, url, srcBurst, "burst", n, 8)
		burstEnd := time.Now()
		honestDuring, st, err := dialFrom(c, url, srcHonest, c.user("honx"))
		if honestDuring == nil {
			t.Errorf("the honest source refused (HTTP %d, %v) while another source was over its rate", st, err)
		} else {
			honestDuring.Close()
		}
		var recovered time.Duration
		for attempt := 0; ; attempt++ {
			ws, _, _ := dialFrom(c, url, srcBurst, c.user("bursty"+strconv.Itoa(attempt)))
			if ws != nil {
				ws.Close()
				recovered = time.Since(burstEnd)
				break
			}
			if time.Since(burstEnd) > 2*hapRatePeriod+2*time.Second {
				t.Fatalf("the bursting source is still refused %v after its burst (rate window %v)", time.Since(burstEnd), hapRatePeriod)
			}
			time.Sleep(250 * time.Millisecond)
		}

		t.Logf("FAULT per-source-haproxy: limits %d conns, %d per %v per source; source %s held %d, its next %d: %s (HAProxy dcon +%d); source %s at the same moment: %d/%d chat messages live, p99 %v; %s admitted again %v after closing one; burst of %d handshakes from %s in %v: %s; source %s connected during the burst: %v; %s admitted again %v after the burst",
			hapMaxConns, hapConnRate, hapRatePeriod, srcHog, hapMaxConns, 10, surplus, dcon, srcHonest, got, 2*msgs, p99.Round(time.Millisecond),
			srcHog, readmitted.Round(time.Millisecond), n, srcBurst, took.Round(time.Millisecond), bo, srcHonest, honestDuring != nil, srcBurst, recovered.Round(time.Millisecond))
		if surplus.ok != 0 || len(surplus.status) != 0 {
			t.Errorf("connections over the source's cap: %s; want all closed by HAProxy before any HTTP answer", surplus)
		}
		if dcon < surplus.refused() {
			t.Errorf("HAProxy counted %d denied connections, the clients saw %d refused", dcon, surplus.refused())
		}
		if got != 2*msgs {
			t.Errorf("the honest source's chat: %d/%d messages delivered live", got, 2*msgs)
		}
		if bo.ok < hapConnRate-hapMaxConns/2 || bo.ok > hapConnRate+hapConnRate/5 || bo.refused() != n-bo.ok || len(bo.status) != 0 {
			t.Errorf("burst of %d over a rate of %d per %v: %s; want about %d upgraded, the rest closed before any HTTP answer", n, hapConnRate, hapRatePeriod, bo, hapConnRate)
		}
		if bo.refused() == 0 {
			t.Error("no handshake of the burst was refused")
		}
	})

	t.Run("edge", func(t *testing.T) {
		e := c.startDirectEdge("fx", "-max-conns-per-source", strconv.Itoa(edgeMaxConns),
			"-source-handshake-rate", strconv.Itoa(edgeRate))
		url := "ws://" + e.addr + "/ws"
		held := holdFrom(t, c, url, srcHog, "ehog", edgeMaxConns)
		// Right after the cap's connections the bucket is empty too: wait until it has
		// refilled, so that what refuses the next ones is the connection cap alone.
		time.Sleep(time.Duration(2*edgeRate)*time.Second/edgeRate + 200*time.Millisecond) // burst/rate
		surplus := newOutcomes()
		for i := range 10 {
			surplus.add(dialFrom(c, url, srcHog, c.user("ehogx"+strconv.Itoa(i))))
		}
		const msgs = 20
		got, p99 := chatFrom(t, c, url, srcHonest, msgs)
		held[0].Close()
		closed := time.Now()
		var readmitted time.Duration
		for attempt := 0; ; attempt++ {
			ws, _, _ := dialFrom(c, url, srcHog, c.user("ehogy"+strconv.Itoa(attempt)))
			if ws != nil {
				ws.Close()
				readmitted = time.Since(closed)
				break
			}
			if attempt == 50 {
				t.Fatalf("the capped source is not admitted again after closing one of its %d connections", edgeMaxConns)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, ws := range held {
			ws.Close()
		}

		const n = 3 * edgeMaxConns
		bo, took := burst(c, url, srcBurst, "eburst", n, 6)
		burstEnd := time.Now()
		var recovered time.Duration
		for attempt := 0; ; attempt++ {
			ws, _, _ := dialFrom(c, url, srcBurst, c.user("ebursty"+strconv.Itoa(attempt)))
			if ws != nil {
				ws.Close()
				recovered = time.Since(burstEnd)
				break
			}
			if time.Since(burstEnd) > 3*time.Second {
				t.Fatalf("the bursting source is still refused %v after its burst (rate %d/s)", time.Since(burstEnd), edgeRate)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rejects := edgeRejects(e.addr)
		maxOK := 2*edgeRate + int(took.Seconds()*edgeRate) + 1

		t.Logf("FAULT per-source-edge: edge limits %d conns, %d/s (burst %d) per source, direct to its port; source %s held %d, then (bucket full again) its next %d: %s; source %s at the same moment: %d/%d chat messages live, p99 %v; %s admitted again %v after closing one; burst of %d handshakes from %s in %v: %s (bound %d upgraded); admitted again %v after the burst; edge /stats Rejects %v",
			edgeMaxConns, edgeRate, 2*edgeRate, srcHog, edgeMaxConns, 10, surplus, srcHonest, got, 2*msgs, p99.Round(time.Millisecond),
			srcHog, readmitted.Round(time.Millisecond), n, srcBurst, took.Round(time.Millisecond), bo, maxOK, recovered.Round(time.Millisecond), rejects)
		if surplus.ok != 0 || surplus.status[http.StatusTooManyRequests] != 10 {
			t.Errorf("connections over the source's cap: %s; want all 10 answered 429", surplus)
		}
		if got != 2*msgs {
			t.Errorf("the honest source's chat: %d/%d messages delivered live", got, 2*msgs)
		}
		if bo.ok > maxOK || bo.ok < edgeRate || bo.status[http.StatusTooManyRequests] != n-bo.ok {
			t.Errorf("burst of %d at a rate of %d/s (burst %d) took %v: %s; want at most %d upgraded and every other one answered 429", n, edgeRate, 2*edgeRate, took, bo, maxOK)
		}
		if recovered > time.Second {
			t.Errorf("the bursting source was admitted again only %v after its burst (rate %d/s)", recovered, edgeRate)
		}
		seen429 := surplus.status[http.StatusTooManyRequests] + bo.status[http.StatusTooManyRequests]
		if int(rejects[http.StatusTooManyRequests]) < seen429 {
			t.Errorf("the edge counted %d rejects 429, the clients saw %d", rejects[http.StatusTooManyRequests], seen429)
		}
		c.noPanics(t)
	})
}
