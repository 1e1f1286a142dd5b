//go:build integration

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
)

// TestHostile runs hostile clients against the cluster through HAProxy while honest clients
// chat: bad tokens are refused before the upgrade, a flooder is rate limited and closed, a
// reader that never reads is closed as a slow consumer, and the honest clients lose nothing.
func TestHostile(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	t.Run("tokens", func(t *testing.T) { hostileTokens(t, c) })
	t.Run("token-expires-live", func(t *testing.T) { hostileExpiry(t, c) })
	t.Run("flood", func(t *testing.T) { hostileFlood(t, c) })
	t.Run("slow-reader", func(t *testing.T) { hostileSlowReader(t, c) })
}

func hostileTokens(t *testing.T, c *cluster) {
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, claims jwt.RegisteredClaims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hour := jwt.NewNumericDate(now.Add(time.Hour))
	cases := []struct {
		name, token string
	}{
		{"expired", sign(jwt.SigningMethodHS256, c.secret, jwt.RegisteredClaims{Subject: "mallory", ExpiresAt: jwt.NewNumericDate(now.Add(-time.Minute))})},
		{"not-yet-valid", sign(jwt.SigningMethodHS256, c.secret, jwt.RegisteredClaims{Subject: "mallory", NotBefore: hour, ExpiresAt: jwt.NewNumericDate(now.Add(2 * time.Hour))})},
		{"wrong-signature", sign(jwt.SigningMethodHS256, []byte("not-the-cluster-secret"), jwt.RegisteredClaims{Subject: "mallory", ExpiresAt: hour})},
		{"alg-none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.RegisteredClaims{Subject: "mallory", ExpiresAt: hour})},
		{"garbage", "not.a.jwt"},
		{"none", ""},
	}
	var got []string
	for _, tc := range cases {
		url := c.wsURL()
		if tc.token != "" {
			url += "?token=" + tc.token
		} else {
			url += "?user=mallory" // -insecure-dev-auth is off: a bare user id is no credential
		}
		status, err := rawDial(url, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got = append(got, tc.name+"="+strconv.Itoa(status))
		if status != http.StatusUnauthorized {
			t.Errorf("%s token: HTTP %d through HAProxy, want 401", tc.name, status)
		}
	}
	// The same token in the Authorization header.
	h := http.Header{"Authorization": {"Bearer " + cases[3].token}}
	if status, err := rawDial(c.wsURL(), h); err != nil || status != http.StatusUnauthorized {
		t.Errorf("alg:none in Authorization: HTTP %d %v, want 401", status, err)
	}
	if status, err := rawDial(c.wsURL()+"?token="+c.token(c.user("alice")), nil); err != nil || status != 101 {
		t.Errorf("a valid token: HTTP %d %v, want 101", status, err)
	}
	t.Logf("FAULT bad-tokens: through HAProxy %s; Authorization: Bearer alg-none=401; a valid token=101", strings.Join(got, " "))
}

// hostileExpiry: a token that expires while its connection is open closes the connection with
// 4001 (protocol.CloseTokenExpired), within a tick of the expiry.
func hostileExpiry(t *testing.T, c *cluster) {
	exp := time.Now().Add(2 * time.Second)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: c.user("expiring"),
		ExpiresAt: jwt.NewNumericDate(exp)}).SignedString(c.secret)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(c.wsURL()+"?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	code := -1
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			break
		}
	}
	// exp has a one-second resolution (NumericDate): measure from the truncated instant.
	late := time.Since(exp.Truncate(time.Second))
	t.Logf("FAULT token-expires-live: a connection whose token expired was closed with %d, %v after the expiry", code, late.Round(time.Millisecond))
	if code != int(protocol.CloseTokenExpired) {
		t.Errorf("close code %d when the token expired, want %d", code, protocol.CloseTokenExpired)
	}
	if late > 3*time.Second {
		t.Errorf("closed %v after the token expired, want within 3s (one wheel tick and the close handshake)", late)
	}
}

// edgeStats reads an edge's /stats.
func edgeStats(t testing.TB, addr string) (closes map[string]uint64, open int64) {
	t.Helper()
	hc := http.Client{Timeout: 2 * time.Second}
	res, err := hc.Get("http://" + addr + "/stats")
	if err != nil {
		return nil, 0
	}
	defer res.Body.Close()
	var s struct {
		Closes map[string]uint64
		Open   int64
	}
	_ = json.NewDecoder(res.Body).Decode(&s)
	return s.Closes, s.Open
}

func hostileFlood(t *testing.T, c *cluster) {
	l := startLoad(t, c, 5)
	l.send(rate)
	l.warm(time.Second)

	user := c.user("flooder")
	ws, _, err := websocket.DefaultDialer.Dial(c.wsURL()+"?token="+c.token(user), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var mu sync.Mutex
	errs := map[int]int{}
	acks := 0
	closeCode := -1
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				mu.Lock()
				if errors.As(err, &ce) {
					closeCode = ce.Code
				}
				mu.Unlock()
				return
			}
			var f frame
			_ = json.Unmarshal(b, &f)
			mu.Lock()
			switch f.Type {
			case protocol.TypeError:
				errs[f.Code]++
			case protocol.TypeAck:
				acks++
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	written := 0
	for i := range 2000 {
		b, _ := json.Marshal(clientFrame{Type: "echo", ID: "f" + strconv.Itoa(i), Data: map[string]string{"n": strconv.Itoa(i)}})
		_ = ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if ws.WriteMessage(websocket.TextMessage, b) != nil {
			break
		}
		written++
	}
	select {
	case <-readDone:
	case <-time.After(15 * time.Second):
		t.Fatal("the flooder was not closed within 15s")
	}
	closedIn := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	r := l.verify(syncWait)
	var lat []time.Duration
	for _, cl := range l.clients {
		cl.mu.Lock()
		lat = append(lat, cl.latencies...)
		cl.mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("FAULT flood: a client wrote %d frames as fast as it could: %d acks, %d rate-limited error frames (1004), closed with %d after %v; %d honest clients meanwhile: %s, delivery latency p50=%v p99=%v",
		written, acks, errs[int(protocol.ErrRateLimited)], closeCode, closedIn.Round(time.Millisecond), len(l.clients), r,
		percentile(lat, 0.5).Round(time.Millisecond), percentile(lat, 0.99).Round(time.Millisecond))
	if closeCode != int(protocol.CloseRateLimited) {
		t.Errorf("flooder closed with %d, want %d", closeCode, protocol.CloseRateLimited)
	}
	if errs[int(protocol.ErrRateLimited)] == 0 {
		t.Error("no rate-limited error frame before the close")
	}
	if r.lost != 0 || r.dups != 0 || r.liveMissed != 0 {
		t.Errorf("honest clients affected: %s", r)
	}
}

// rss is the resident set of pid in KiB (Linux).
func rss(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

func hostileSlowReader(t *testing.T, c *cluster) {
	sfx := c.user("")
	group := "slow-" + sfx
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The slow reader connects straight to edge 1 with a tiny receive buffer, joins the group,
	// then never reads again.
	edge := c.edges[0]
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			if err != nil {
				return err
			}
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	slowUser := "slow-" + sfx
	slow, _, err := d.Dial("ws://"+edge.addr+"/ws?token="+c.token(slowUser), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	b, _ := json.Marshal(clientFrame{Type: chat.TypeJoin, ID: "j", Data: map[string]string{"group": group}})
	if err := slow.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var f frame
		if err := slow.ReadJSON(&f); err != nil {
			t.Fatalf("slow reader's join: %v", err)
		}
		if f.Type == chat.TypeJoin && f.ID == "j" {
			break
		}
		if f.Type == protocol.TypeError {
			t.Fatalf("slow reader's join: %+v", f)
		}
	}

	// An honest member and four writers, through HAProxy.
	hs := &handshakes{}
	member := newChatClient(c, "member-"+sfx, hs)
	clients := []*chatClient{member}
	for i := range 4 {
		clients = append(clients, newChatClient(c, "writer"+strconv.Itoa(i)+"-"+sfx, hs))
	}
	cctx, ccancel := context.WithCancel(context.Background())
	for _, cl := range clients {
		cl.start(cctx)
	}
	defer func() {
		ccancel()
		for _, cl := range clients {
			<-cl.done
		}
	}()
	for _, cl := range clients {
		eventually(t, 20*time.Second, cl.user+" connected", func() bool { _, _, ok := cl.state(); return ok })
		if _, err := cl.request(ctx, chat.TypeJoin, map[string]string{"group": group}); err != nil {
			t.Fatal(err)
		}
	}
	rssBefore := rss(edge.cmd.Process.Pid)
	closes0, _ := edgeStats(t, edge.addr)

	text := strings.Repeat("x", 4000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range clients[1:] {
		tick(&wg, stop, 30, func() { w.sendText("", group, text) })
	}
	start := time.Now()
	rssPeak := rssBefore
	var closedIn time.Duration
	for closedIn == 0 {
		if time.Since(start) > 60*time.Second {
			close(stop)
			wg.Wait()
			t.Fatalf("the slow reader was not closed within 60s (edge RSS %d KiB → %d KiB)", rssBefore, rssPeak)
		}
		rssPeak = max(rssPeak, rss(edge.cmd.Process.Pid))
		if cs, _ := edgeStats(t, edge.addr); cs["4002"] > closes0["4002"] {
			closedIn = time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The room goes on for another second without the slow reader.
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	rssAfter := rss(edge.cmd.Process.Pid)

	// Every group message a writer got acked reaches the honest member, live.
	var acked []string
	for _, w := range clients[1:] {
		for _, m := range w.acked() {
			acked = append(acked, m.cmid)
		}
	}
	var missing int
	eventually(t, 30*time.Second, "the honest member received every acked group message", func() bool {
		member.mu.Lock()
		defer member.mu.Unlock()
		missing = 0
		for _, id := range acked {
			if _, ok := member.live[id]; !ok {
				missing++
			}
		}
		return missing == 0
	})
	member.mu.Lock()
	lat := append([]time.Duration(nil), member.latencies...)
	member.mu.Unlock()
	_, memberConnects, _ := member.state()

	// What the slow reader sees once it reads again: its backlog, then the close.
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	slowCode, slowFrames := -1, 0
	for {
		if _, _, err := slow.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				slowCode = ce.Code
			}
			break
		}
		slowFrames++
	}
	t.Logf("FAULT slow-reader: a member that never reads (4 KiB receive buffer) closed by the edge with 4002 after %v of 4 writers × 30 msg/s × 4 KB; on reading it got %d frames then close code %d; edge RSS %d KiB before, peak %d KiB, %d KiB after; the honest member got all %d acked messages live (reconnects %d), latency p50=%v p99=%v",
		closedIn.Round(time.Millisecond), slowFrames, slowCode, rssBefore, rssPeak, rssAfter, len(acked), memberConnects-1,
		percentile(lat, 0.5).Round(time.Millisecond), percentile(lat, 0.99).Round(time.Millisecond))
	if memberConnects != 1 {
		t.Errorf("the honest member reconnected %d times", memberConnects-1)
	}
	// gorilla reports a TCP close without a close frame as 1006 (the edge may have reset the
	// connection before its close frame got through the full socket buffer).
	if slowCode != -1 && slowCode != websocket.CloseAbnormalClosure && slowCode != int(protocol.CloseSlowConsumer) {
		t.Errorf("the slow reader saw close code %d, want %d (or the TCP close)", slowCode, protocol.CloseSlowConsumer)
	}
	if grow := rssPeak - rssBefore; grow > 64<<10 {
		t.Errorf("edge RSS grew by %d KiB while one reader was stuck: not bounded", grow)
	}
}
