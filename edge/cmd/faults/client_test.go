//go:build integration

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
)

// frame is a server frame in the JSON form.
type frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Code    int             `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// handshakes records when every client of a test completed a handshake (its welcome).
type handshakes struct {
	mu sync.Mutex
	at []time.Time
}

func (h *handshakes) add(t time.Time) {
	h.mu.Lock()
	h.at = append(h.at, t)
	h.mu.Unlock()
}

// peak is the largest number of handshakes in any window w starting at a handshake after since.
func (h *handshakes) peak(since time.Time, w time.Duration) int {
	h.mu.Lock()
	var ts []time.Time
	for _, t := range h.at {
		if t.After(since) {
			ts = append(ts, t)
		}
	}
	h.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// sentMsg is one chat.send of a client.
type sentMsg struct {
	cmid    string
	to      string
	idx     int
	sentAt  time.Time
	acked   bool // the edge's "ack": the bus accepted the frame
	replied bool // the chat.send reply: stored with seq
	seq     uint64
	errCode int
}

// chatClient is a gorilla/websocket client through HAProxy that reconnects by itself (backoff
// with jitter after a failure, the hinted delay after a "move") and records what it sent and
// received.
type chatClient struct {
	user  string
	url   string
	token func(user string) string
	hs    *handshakes

	// Optional, set before start: local is the dial's source address (one loopback IP per
	// simulated client host); onConnect runs after each welcome, before the first read (e.g.
	// to join rooms again); onFrame sees every server frame, outside mu.
	local     *net.TCPAddr
	onConnect func(ws *websocket.Conn, connects int)
	onFrame   func(f frame, now time.Time)

	wmu sync.Mutex // one writer at a time (gorilla)

	mu         sync.Mutex
	ws         *websocket.Conn
	edge       string
	connects   int
	connectAt  time.Time
	closeCodes map[int]int
	dialFails  int
	moves      int
	sent       map[string]*sentMsg
	order      []*sentMsg
	live       map[string]time.Time // cmid of chat.msg received live → when
	latencies  []time.Duration      // chat.msg: receive time − the server's ts
	errors     map[int]int          // error frames by code
	pending    map[string]chan frame
	reqs       int
	nextIdx    int

	done chan struct{}
}

func newChatClient(c *cluster, user string, hs *handshakes) *chatClient {
	return &chatClient{user: user, url: c.wsURL(), token: c.token, hs: hs,
		closeCodes: map[int]int{}, sent: map[string]*sentMsg{}, live: map[string]time.Time{},
		errors: map[int]int{}, pending: map[string]chan frame{}, done: make(chan struct{})}
}

// start runs the client until ctx ends.
func (cl *chatClient) start(ctx context.Context) { go cl.loop(ctx) }

func (cl *chatClient) loop(ctx context.Context) {
	defer close(cl.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		ws, edge, err := cl.dial(ctx)
		if err != nil {
			cl.mu.Lock()
			cl.dialFails++
			cl.mu.Unlock()
			sleepCtx(ctx, backoff/2+rand.N(backoff/2+1))
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		now := time.Now()
		cl.mu.Lock()
		cl.ws, cl.edge = ws, edge
		cl.connects++
		n := cl.connects
		cl.connectAt = now
		cl.mu.Unlock()
		if cl.hs != nil {
			cl.hs.add(now)
		}
		if cl.onConnect != nil {
			cl.onConnect(ws, n)
		}
		stop := context.AfterFunc(ctx, func() { ws.Close() })
		moved := cl.read(ws)
		stop()
		ws.Close()
		cl.mu.Lock()
		cl.ws = nil
		for id, ch := range cl.pending {
			close(ch)
			delete(cl.pending, id)
		}
		cl.mu.Unlock()
		if !moved {
			sleepCtx(ctx, backoff/2+rand.N(backoff/2+1))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (cl *chatClient) dial(ctx context.Context) (*websocket.Conn, string, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if cl.local != nil {
		d.NetDialContext = (&net.Dialer{LocalAddr: cl.local, Timeout: 5 * time.Second}).DialContext
	}
	ws, _, err := d.DialContext(ctx, cl.url+"?token="+cl.token(cl.user), nil)
	if err != nil {
		return nil, "", err
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f frame
	if err := ws.ReadJSON(&f); err != nil || f.Type != protocol.TypeWelcome {
		ws.Close()
		return nil, "", fmt.Errorf("welcome: %+v %v", f, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	var w struct{ Edge string }
	_ = json.Unmarshal(f.Data, &w)
	return ws, w.Edge, nil
}

// read handles frames until the connection fails; moved reports a "move" closed it.
func (cl *chatClient) read(ws *websocket.Conn) (moved bool) {
	var movedFlag bool
	var mu sync.Mutex
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			code := -1
			if errors.As(err, &ce) {
				code = ce.Code
			}
			cl.mu.Lock()
			cl.closeCodes[code]++
			cl.mu.Unlock()
			mu.Lock()
			defer mu.Unlock()
			return movedFlag
		}
		now := time.Now()
		var f frame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		if cl.onFrame != nil {
			cl.onFrame(f, now)
		}
		cl.mu.Lock()
		switch f.Type {
		case protocol.TypeAck:
			if m := cl.sent[f.ID]; m != nil {
				m.acked = true
			}
		case chat.TypeSend:
			if m := cl.sent[f.ID]; m != nil {
				var r struct{ Seq uint64 }
				_ = json.Unmarshal(f.Data, &r)
				m.replied, m.seq = true, r.Seq
			}
		case chat.TypeMsg:
			var m chat.Message
			if json.Unmarshal(f.Data, &m) == nil {
				if _, ok := cl.live[m.CMID]; !ok {
					cl.live[m.CMID] = now
					cl.latencies = append(cl.latencies, now.Sub(time.UnixMilli(m.TS)))
				}
			}
		case protocol.TypeError:
			cl.errors[f.Code]++
			if m := cl.sent[f.ID]; m != nil {
				m.errCode = f.Code
			}
		case protocol.TypeMove:
			var mv struct {
				DelayMs int64 `json:"delay_ms"`
			}
			_ = json.Unmarshal(f.Data, &mv)
			cl.moves++
			mu.Lock()
			movedFlag = true
			mu.Unlock()
			time.AfterFunc(time.Duration(mv.DelayMs)*time.Millisecond, func() {
				cl.wmu.Lock()
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "moving"), time.Now().Add(time.Second))
				cl.wmu.Unlock()
				ws.Close()
			})
		}
		if ch, ok := cl.pending[f.ID]; ok && f.Type != protocol.TypeAck {
			ch <- f
			delete(cl.pending, f.ID)
		}
		cl.mu.Unlock()
	}
}

func (cl *chatClient) write(ws *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	cl.wmu.Lock()
	defer cl.wmu.Unlock()
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteMessage(websocket.TextMessage, b)
}

type clientFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Data any    `json:"data,omitempty"`
}

// sendChat sends the client's next numbered message to user to; false when not connected.
func (cl *chatClient) sendChat(to string) bool {
	return cl.sendText(to, "", "")
}

// sendText sends a chat.send to user to, or to group; text "" means a numbered text.
func (cl *chatClient) sendText(to, group, text string) bool {
	cl.mu.Lock()
	ws := cl.ws
	if ws == nil {
		cl.mu.Unlock()
		return false
	}
	cl.nextIdx++
	m := &sentMsg{cmid: cl.user + "." + strconv.Itoa(cl.nextIdx), to: to, idx: cl.nextIdx, sentAt: time.Now()}
	cl.sent[m.cmid] = m
	cl.order = append(cl.order, m)
	cl.mu.Unlock()
	if text == "" {
		text = "message " + strconv.Itoa(m.idx) + " from " + cl.user
	}
	data := map[string]string{"text": text, "cmid": m.cmid}
	if group != "" {
		data["group"] = group
	} else {
		data["to"] = to
	}
	return cl.write(ws, clientFrame{Type: chat.TypeSend, ID: m.cmid, Data: data}) == nil
}

// request sends a frame with a fresh id and waits for the reply of that id (retrying on
// reconnects) until ctx ends.
func (cl *chatClient) request(ctx context.Context, typ string, data any) (frame, error) {
	for {
		cl.mu.Lock()
		ws := cl.ws
		cl.reqs++
		id := "r" + strconv.Itoa(cl.reqs)
		ch := make(chan frame, 1)
		if ws != nil {
			cl.pending[id] = ch
		}
		cl.mu.Unlock()
		if ws != nil && cl.write(ws, clientFrame{Type: typ, ID: id, Data: data}) == nil {
			t := time.NewTimer(5 * time.Second)
			select {
			case f, ok := <-ch:
				t.Stop()
				if ok {
					if f.Type == protocol.TypeError {
						if f.Code == int(protocol.ErrUnavailable) || f.Code == int(protocol.ErrTimeout) || f.Code == int(protocol.ErrRateLimited) {
							break
						}
						return f, fmt.Errorf("%s: error %d %s", typ, f.Code, f.Message)
					}
					return f, nil
				}
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			cl.mu.Lock()
			delete(cl.pending, id)
			cl.mu.Unlock()
		}
		if ctx.Err() != nil {
			return frame{}, fmt.Errorf("%s as %s: %w", typ, cl.user, ctx.Err())
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// history fetches the whole conversation with chat.sync from seq 0.
func (cl *chatClient) history(ctx context.Context, conv string) ([]chat.Message, error) {
	var all []chat.Message
	since := uint64(0)
	for {
		f, err := cl.request(ctx, chat.TypeSync, map[string]any{"conv": conv, "since": since, "limit": 100})
		if err != nil {
			return nil, err
		}
		var r struct {
			Messages []chat.Message
			More     bool
		}
		if err := json.Unmarshal(f.Data, &r); err != nil {
			return nil, err
		}
		all = append(all, r.Messages...)
		if !r.More || len(r.Messages) == 0 {
			return all, nil
		}
		since = r.Messages[len(r.Messages)-1].Seq
	}
}

func (cl *chatClient) state() (edge string, connects int, connected bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.edge, cl.connects, cl.ws != nil
}

// acked returns the messages the bus accepted (ack or reply), in send order.
func (cl *chatClient) acked() []*sentMsg {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*sentMsg
	for _, m := range cl.order {
		if m.acked || m.replied {
			out = append(out, m)
		}
	}
	return out
}

// load is pairs of users exchanging numbered 1:1 chat messages through HAProxy.
type load struct {
	t       testing.TB
	c       *cluster
	clients []*chatClient
	peer    map[*chatClient]*chatClient
	hs      *handshakes
	cancel  context.CancelFunc
	stopTx  chan struct{}
	txWG    sync.WaitGroup
	stopped bool
}

// startLoad connects 2×pairs clients and waits until all are connected; rate is each
// client's messages per second once send() is called.
func startLoad(t testing.TB, c *cluster, pairs int) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, c: c, peer: map[*chatClient]*chatClient{}, hs: &handshakes{}, cancel: cancel, stopTx: make(chan struct{})}
	sfx := c.user(suffix()[:4])
	for i := range pairs {
		a := newChatClient(c, fmt.Sprintf("%s-a%d", sfx, i), l.hs)
		b := newChatClient(c, fmt.Sprintf("%s-b%d", sfx, i), l.hs)
		l.peer[a], l.peer[b] = b, a
		l.clients = append(l.clients, a, b)
	}
	for _, cl := range l.clients {
		cl.start(ctx)
	}
	t.Cleanup(l.close)
	eventually(t, 30*time.Second, "every client connected", func() bool { return l.connected() == len(l.clients) })
	return l
}

func (l *load) close() {
	l.stopSending()
	l.cancel()
	for _, cl := range l.clients {
		<-cl.done
	}
}

func (l *load) connected() int {
	n := 0
	for _, cl := range l.clients {
		if _, _, ok := cl.state(); ok {
			n++
		}
	}
	return n
}

func (l *load) users() []string {
	var us []string
	for _, cl := range l.clients {
		us = append(us, cl.user)
	}
	return us
}

// send starts every client sending rate messages per second to its peer, until stopSending.
func (l *load) send(rate float64) {
	for _, cl := range l.clients {
		tick(&l.txWG, l.stopTx, rate, func() { cl.sendChat(l.peer[cl].user) })
	}
}

// tick calls fn rate times a second, from a random phase, on a goroutine of its own (tracked by
// wg) until stop is closed.
func tick(wg *sync.WaitGroup, stop <-chan struct{}, rate float64, fn func()) {
	every := time.Duration(float64(time.Second) / rate)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sleepCtx(context.Background(), rand.N(every))
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				fn()
			}
		}
	}()
}

func (l *load) stopSending() {
	if !l.stopped {
		l.stopped = true
		close(l.stopTx)
	}
	l.txWG.Wait()
}

// result is what verify found.
type result struct {
	sent, acked, unacked int // messages written, accepted by the bus, never accepted
	lost                 int // acked but not in the history
	dups                 int // one cmid stored twice
	outOfOrder           int // a sender's later acked message stored before an earlier one
	liveMissed           int // acked messages the peer did not get live (recovered by sync)
	errored              int // acked messages the sender got an error frame for (e.g. 1005 after the redeliveries)
}

func (r result) String() string {
	return fmt.Sprintf("sent=%d acked=%d unacked=%d lost=%d dups=%d out_of_order=%d recovered_by_sync=%d sender_error_frames=%d",
		r.sent, r.acked, r.unacked, r.lost, r.dups, r.outOfOrder, r.liveMissed, r.errored)
}

// verify stops the senders and, for every pair, syncs the conversation until every acked
// message is in it (or d passes) and checks duplicates and per-sender order.
func (l *load) verify(d time.Duration) result {
	t := l.t
	t.Helper()
	l.stopSending()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var r result
	for i := 0; i < len(l.clients); i += 2 {
		a, b := l.clients[i], l.clients[i+1]
		conv := chat.DirectConv(a.user, b.user)
		var hist []chat.Message
		missing := -1
		for missing != 0 {
			h, err := b.history(ctx, conv)
			if err != nil {
				break
			}
			hist = h
			have := map[string]bool{}
			for _, m := range hist {
				have[m.CMID] = true
			}
			missing = 0
			for _, cl := range []*chatClient{a, b} {
				for _, m := range cl.acked() {
					if !have[m.cmid] {
						missing++
					}
				}
			}
			if missing != 0 {
				sleepCtx(ctx, 200*time.Millisecond)
			}
			if ctx.Err() != nil {
				break
			}
		}
		seqOf := map[string]uint64{}
		for _, m := range hist {
			if _, ok := seqOf[m.CMID]; ok {
				r.dups++
				continue
			}
			seqOf[m.CMID] = m.Seq
		}
		for _, cl := range []*chatClient{a, b} {
			peer := l.peer[cl]
			cl.mu.Lock()
			r.sent += len(cl.order)
			cl.mu.Unlock()
			acked := cl.acked()
			r.acked += len(acked)
			var last uint64
			peer.mu.Lock()
			for _, m := range acked {
				if m.errCode != 0 {
					r.errored++
				}
				seq, ok := seqOf[m.cmid]
				if !ok {
					r.lost++
					if r.lost <= 5 {
						t.Logf("LOST: %s (sent %v, acked=%v replied=%v err=%d)", m.cmid, m.sentAt.Format("15:04:05.000"), m.acked, m.replied, m.errCode)
					}
					continue
				}
				if seq < last {
					r.outOfOrder++
				}
				last = seq
				if _, ok := peer.live[m.cmid]; !ok {
					r.liveMissed++
					if os.Getenv("FAULTS_DEBUG") != "" {
						t.Logf("not live: %s at %s to %s", m.cmid, m.sentAt.Format("15:04:05.000"), peer.user)
					}
				}
			}
			peer.mu.Unlock()
		}
	}
	r.unacked = r.sent - r.acked
	return r
}

// reconnects is the total of connects beyond each client's first.
func (l *load) reconnects() int {
	n := 0
	for _, cl := range l.clients {
		_, c, _ := cl.state()
		n += c - 1
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// rawDial dials with a raw query and returns the HTTP status of a refused handshake.
func rawDial(url string, header http.Header) (int, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, res, err := d.Dial(url, header)
	if err == nil {
		ws.Close()
		return 101, nil
	}
	if res != nil {
		return res.StatusCode, nil
	}
	return 0, err
}

var _ = strings.TrimSpace
