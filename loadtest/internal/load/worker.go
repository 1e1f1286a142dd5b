package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/switchboard-io/switchboard/loadtest/internal/wire"
	"github.com/switchboard-io/switchboard/loadtest/internal/wsconn"
)

// Command ids of the set-up steps; data commands use ids above them.
const (
	idConnect = 1
	idJoin    = 2
	idInbox   = 3
)

// event is one JSON line from a worker.
type event struct {
	Ev        string                 `json:"ev"` // progress | ready | done | result | fatal
	W         int                    `json:"w"`
	Open      int64                  `json:"open"`
	Dialed    int64                  `json:"dialed"`
	Failed    int64                  `json:"failed"`
	Dropped   int64                  `json:"dropped"`
	Sent      int64                  `json:"sent"`
	Recv      int64                  `json:"recv"`
	Pongs     int64                  `json:"pongs"`
	Reconn    int64                  `json:"reconnected,omitempty"`
	Retried   int64                  `json:"retried,omitempty"`
	ElapsedMs float64                `json:"elapsed_ms,omitempty"`
	Errors    map[string]int64       `json:"errors,omitempty"`
	Lat       *hdrhistogram.Snapshot `json:"lat,omitempty"`
	Msg       string                 `json:"msg,omitempty"`
}

type worker struct {
	cfg workerConfig
	ad  wire.Adapter
	out *json.Encoder
	omu sync.Mutex

	open, dialed, failed, dropped, sent, recv, pongs, reconnected, retried atomic.Int64
	stopping                                                               atomic.Bool

	emu  sync.Mutex
	errs map[string]int64

	lat *shardedHist

	cmu     sync.Mutex
	clients []*client
	readers sync.WaitGroup
}

type client struct {
	w     *worker
	conn  *wsconn.Conn
	key   int // histogram shard key; negative for the fanout publisher
	user  string
	peer  string // chat: the other user of the pair
	isA   bool   // chat: the side that sends and measures
	setup chan wire.Event
	live  atomic.Bool // set up and registered: a later close counts as a drop
}

// RunWorker runs one worker: it reads its config and commands from in and writes events to
// out. It returns when told to stop, when in closes, or when ctx ends.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("load: worker config: %w", err)
	}
	var cfg workerConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fmt.Errorf("load: worker config: %w", err)
	}
	ad, err := wire.For(cfg.Protocol, wire.Options{JoinType: cfg.JoinType, SendType: cfg.SendType, JWTSecret: []byte(cfg.JWTSecret), JWTAudience: cfg.JWTAudience})
	if err != nil {
		return err
	}
	w := &worker{cfg: cfg, ad: ad, out: json.NewEncoder(out), errs: map[string]int64{}, lat: newShardedHist()}

	cmds := make(chan string, 4)
	go func() {
		defer close(cmds)
		for {
			l, err := br.ReadString('\n')
			if s := strings.TrimSpace(l); s != "" {
				cmds <- s
			}
			if err != nil {
				return
			}
		}
	}()
	waitCmd := func(want string) bool {
		for {
			select {
			case c, ok := <-cmds:
				if !ok {
					return false
				}
				if c == want || c == "stop" {
					return c == want
				}
			case <-ctx.Done():
				return false
			}
		}
	}

	progressDone := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				w.emit(w.snapshot("progress"))
			case <-progressDone:
				return
			}
		}
	}()
	hbDone := make(chan struct{})
	hbStopped := make(chan struct{})
	go func() { defer close(hbStopped); w.heartbeats(hbDone) }()

	finish := func() error {
		close(hbDone)
		<-hbStopped
		w.closeAll()
		close(progressDone)
		ev := w.snapshot("result")
		ev.Lat = exportHist(w.lat.merged())
		w.emit(ev)
		return nil
	}

	// Set-up.
	switch cfg.Scenario {
	case ScenarioIdle, ScenarioReconnect:
		w.setupConns(ctx, cfg.Count, false)
	case ScenarioFanout:
		w.setupConns(ctx, cfg.Count, true)
		if cfg.Publisher {
			for p := range max(cfg.Publishers, 1) {
				if err := w.openClient(ctx, &client{key: -1 - p, user: w.userName("pub", p)}, p, true, false); err != nil {
					w.emit(event{Ev: "fatal", W: cfg.Index, Msg: "publisher: " + err.Error()})
					return finish()
				}
			}
		}
	case ScenarioChat:
		w.setupPairs(ctx)
	case ScenarioStorm:
	}
	w.emit(w.snapshot("ready"))
	if !waitCmd("go") {
		return finish()
	}
	// Measured part.
	switch cfg.Scenario {
	case ScenarioStorm:
		start := time.Now()
		w.storm(ctx)
		ev := w.snapshot("done")
		ev.ElapsedMs = float64(time.Since(start)) / 1e6
		w.emit(ev)
	case ScenarioFanout:
		if cfg.Publisher {
			w.publish(ctx)
		}
		w.emit(w.snapshot("done"))
	case ScenarioChat:
		w.chat(ctx)
		w.emit(w.snapshot("done"))
	default:
		w.emit(w.snapshot("done"))
	}
	waitCmd("stop")
	return finish()
}

func (w *worker) emit(ev event) {
	w.omu.Lock()
	defer w.omu.Unlock()
	_ = w.out.Encode(ev) // the coordinator is gone if this fails; stdin EOF stops us
}

func (w *worker) snapshot(kind string) event {
	ev := event{Ev: kind, W: w.cfg.Index, Open: w.open.Load(), Dialed: w.dialed.Load(),
		Failed: w.failed.Load(), Dropped: w.dropped.Load(), Sent: w.sent.Load(), Recv: w.recv.Load(),
		Pongs: w.pongs.Load(), Reconn: w.reconnected.Load(), Retried: w.retried.Load()}
	w.emu.Lock()
	if len(w.errs) > 0 {
		ev.Errors = make(map[string]int64, len(w.errs))
		for k, v := range w.errs {
			ev.Errors[k] = v
		}
	}
	w.emu.Unlock()
	return ev
}

// noteErr counts an error under a short class: the phase and the last ": " segment, which
// drops addresses and ports.
func (w *worker) noteErr(phase string, err error) {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if len(msg) > 80 {
		msg = msg[:80]
	}
	w.emu.Lock()
	w.errs[phase+": "+msg]++
	w.emu.Unlock()
}

// noteErrMsg counts a server-sent error message as is (it holds no addresses).
func (w *worker) noteErrMsg(phase, msg string) {
	if len(msg) > 80 {
		msg = msg[:80]
	}
	w.emu.Lock()
	w.errs[phase+": "+msg]++
	w.emu.Unlock()
}

func (w *worker) userName(role string, i int) string {
	return fmt.Sprintf("lt%s-%s%d", w.cfg.RunID, role, i)
}

func (w *worker) target(g int) (string, string) {
	t := w.cfg.Targets[g%len(w.cfg.Targets)]
	src := ""
	if len(w.cfg.SourceIPs) > 0 {
		src = w.cfg.SourceIPs[g%len(w.cfg.SourceIPs)]
	}
	return t, src
}

// setupConns opens n connections (joining the room if join), paced by ConnectRate.
func (w *worker) setupConns(ctx context.Context, n int, join bool) {
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if w.cfg.ConnectRate > 0 {
			due := start.Add(time.Duration(float64(i) / w.cfg.ConnectRate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		g := w.cfg.First + i
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			role := "i"
			if join {
				role = "m"
			}
			w.openWithRetries(ctx, func() error {
				return w.openClient(ctx, &client{key: g, user: w.userName(role, g)}, g, join, false)
			})
		}()
	}
	wg.Wait()
}

// openWithRetries runs open up to 1+Retries times with jittered backoff (200 ms doubling).
// A failed attempt that is retried moves from the failed count to the retried count, so
// Failed counts the connections that never came up.
func (w *worker) openWithRetries(ctx context.Context, open func() error) {
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if open() == nil || attempt >= w.cfg.Retries || ctx.Err() != nil {
			return
		}
		w.failed.Add(-1)
		w.retried.Add(1)
		time.Sleep(backoff/2 + time.Duration(rand.Int64N(int64(backoff))))
		backoff *= 2
	}
}

// setupPairs opens both sides of every chat pair, each side on a different target.
func (w *worker) setupPairs(ctx context.Context) {
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < w.cfg.Count && ctx.Err() == nil; i++ {
		if w.cfg.ConnectRate > 0 {
			due := start.Add(time.Duration(float64(2*i) / w.cfg.ConnectRate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		p := w.cfg.First + i
		a, b := w.userName("a", p), w.userName("b", p)
		for side := 0; side < 2; side++ {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				me, peer := a, b
				if side == 1 {
					me, peer = b, a
				}
				_ = w.openClient(ctx, &client{key: p*2 + side, user: me, peer: peer, isA: side == 0}, p+side, false, true)
			}()
		}
	}
	wg.Wait()
}

// openClient dials c (key, user, peer, isA filled in), waits for the welcome, and joins the
// room / subscribes to the inbox. tgt selects the target and source address. The client is
// registered on success.
func (w *worker) openClient(ctx context.Context, c *client, tgt int, join, inbox bool) error {
	if err := w.dialClient(ctx, c, tgt); err != nil {
		return err
	}
	if join {
		if err := c.command(w.ad.Join(w.cfg.Room, idJoin), idJoin, w.cfg.DialTimeout); err != nil {
			w.failSetup(c, "join", err)
			return err
		}
	}
	if inbox {
		if f := w.ad.Inbox(c.user, idInbox); f != nil {
			if err := c.command(f, idInbox, w.cfg.DialTimeout); err != nil {
				w.failSetup(c, "inbox", err)
				return err
			}
		}
	}
	w.register(c)
	return nil
}

func (w *worker) register(c *client) {
	c.live.Store(true)
	w.cmu.Lock()
	w.clients = append(w.clients, c)
	w.cmu.Unlock()
}

func (w *worker) failSetup(c *client, phase string, err error) {
	w.noteErr(phase, err)
	w.failed.Add(1)
	w.open.Add(-1)
	_ = c.conn.Close()
}

var errTimeout = errors.New("timeout")

// dialClient connects one client and waits for the server's welcome (after sending the
// protocol's connect frame, if any).
func (w *worker) dialClient(ctx context.Context, c *client, tgt int) error {
	base, src := w.target(tgt)
	u, err := w.ad.URL(base, c.user)
	if err != nil {
		return err
	}
	w.dialed.Add(1)
	dctx, cancel := context.WithTimeout(ctx, w.cfg.DialTimeout)
	defer cancel()
	conn, err := wsconn.Dial(dctx, u, wsconn.DialConfig{LocalIP: src, Timeout: w.cfg.DialTimeout})
	if err != nil {
		w.noteErr("dial", err)
		w.failed.Add(1)
		return err
	}
	c.w, c.conn, c.setup = w, conn, make(chan wire.Event, 2)
	w.open.Add(1)
	w.readers.Add(1)
	go c.readLoop()
	if f := w.ad.Connect(c.user, idConnect); f != nil {
		if err := conn.WriteText(f); err != nil {
			w.failSetup(c, "connect", err)
			return err
		}
	}
	if err := c.await(0, w.cfg.DialTimeout); err != nil {
		w.failSetup(c, "welcome", err)
		return err
	}
	return nil
}

// command sends f and waits for the ack or error of id.
func (c *client) command(f []byte, id uint64, timeout time.Duration) error {
	if err := c.conn.WriteText(f); err != nil {
		return err
	}
	return c.await(id, timeout)
}

// await waits for a set-up event: the welcome (id 0) or the ack/error of id.
func (c *client) await(id uint64, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-c.setup:
			if !ok {
				return errors.New("connection closed")
			}
			switch {
			case id == 0 && ev.Kind == wire.KindWelcome:
				return nil
			case id != 0 && ev.ID == id && ev.Kind == wire.KindAck:
				return nil
			case ev.Kind == wire.KindError && (ev.ID == id || ev.ID == 0):
				return errors.New("server error " + ev.Err)
			}
		case <-t.C:
			return errTimeout
		}
	}
}

func (c *client) readLoop() {
	w := c.w
	defer w.readers.Done()
	err := c.conn.ReadLoop(c.onMessage)
	close(c.setup)
	if !w.stopping.Load() && c.live.Swap(false) {
		w.dropped.Add(1)
		w.open.Add(-1)
		if err != nil {
			w.noteErr("read", err)
		} else {
			w.noteErr("read", errors.New("closed by server"))
		}
		if w.cfg.Reconnect {
			w.readers.Add(1)
			go w.redial(c)
		}
	}
}

// redial brings a dropped client back with exponential backoff and full jitter (50 ms
// doubling to 2 s), recording the time from the drop to the new welcome.
func (w *worker) redial(old *client) {
	defer w.readers.Done()
	dropped := time.Now()
	backoff := 50 * time.Millisecond
	for attempt := 0; !w.stopping.Load(); attempt++ {
		time.Sleep(time.Duration(rand.Int64N(int64(backoff)) + 1))
		if w.stopping.Load() {
			return
		}
		c := &client{key: old.key, user: old.user, peer: old.peer, isA: old.isA}
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.DialTimeout)
		err := w.dialClient(ctx, c, old.key+attempt)
		cancel()
		if err == nil {
			w.lat.record(c.key, time.Since(dropped))
			w.reconnected.Add(1)
			w.register(c)
			return
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// fanoutMark finds fanout stamps in any protocol's JSON without decoding it: the texts are
// the generator's own ("F|seq|nanos|xxx", no escapes), and a full decode of every delivery
// would cost the shared cores more than the target spends sending it.
var fanoutMark = []byte(`"text":"F|`)

// fastFanout counts and times the fanout stamps in msg; false when there are none.
func (c *client) fastFanout(msg []byte) bool {
	i := bytes.Index(msg, fanoutMark)
	if i < 0 {
		return false
	}
	if c.key < 0 {
		return true // the publisher's own copy
	}
	w := c.w
	now := time.Now().UnixNano()
	for i >= 0 {
		rest := msg[i+len(fanoutMark)-2:]
		end := bytes.IndexByte(rest, '"')
		if end < 0 {
			break
		}
		if k, _, at, ok := parseStampBytes(rest[:end]); ok && k == stampFanout {
			w.recv.Add(1)
			w.lat.record(c.key, time.Duration(now-at))
		}
		msg = rest[end:]
		i = bytes.Index(msg, fanoutMark)
	}
	return true
}

func (c *client) onMessage(msg []byte) {
	w := c.w
	if c.fastFanout(msg) {
		return
	}
	err := w.ad.Parse(msg, func(ev *wire.Event) {
		switch ev.Kind {
		case wire.KindWelcome, wire.KindAck, wire.KindError:
			if ev.ID <= idInbox {
				select {
				case c.setup <- wire.Event{Kind: ev.Kind, ID: ev.ID, Err: ev.Err}:
				default:
				}
			}
			if ev.Kind == wire.KindError {
				// Counted even for set-up ids: Switchboard acks a frame when the bus accepts
				// it, and a plugin's refusal arrives later as an error with the same id.
				w.noteErrMsg("server", ev.Err)
			}
		case wire.KindPing:
			if p := w.ad.Pong(); p != nil {
				_ = c.conn.WriteText(p)
				w.pongs.Add(1)
			}
		case wire.KindRoom:
			if c.key < 0 {
				return // the publisher's own copy
			}
			now := time.Now().UnixNano()
			for _, t := range ev.Texts {
				if k, _, at, ok := parseStamp(t); ok && k == stampFanout {
					w.recv.Add(1)
					w.lat.record(c.key, time.Duration(now-at))
				}
			}
		case wire.KindChat:
			if ev.From == c.user {
				return // a copy of our own message
			}
			k, seq, at, ok := parseStamp(ev.Text)
			if !ok {
				return
			}
			switch {
			case k == stampChat && !c.isA:
				reply := makeStamp(stampReply, seq, time.Unix(0, at), len(ev.Text))
				if err := c.conn.WriteText(w.ad.Chat(c.user, ev.From, reply, fmt.Sprintf("r%d", seq), 0)); err != nil {
					w.noteErr("reply", err)
				}
			case k == stampReply && c.isA:
				w.recv.Add(1)
				w.lat.record(c.key, time.Duration(time.Now().UnixNano()-at))
			}
		}
	})
	if err != nil {
		w.noteErr("parse", err)
	}
}

// heartbeats pings every client once per Heartbeat interval, spread evenly over the interval.
// Protocols whose server pings (Centrifugo) are answered in onMessage instead.
func (w *worker) heartbeats(done <-chan struct{}) {
	if w.cfg.Protocol == "centrifugo" || w.cfg.Heartbeat <= 0 {
		<-done
		return
	}
	const slots = 50
	t := time.NewTicker(w.cfg.Heartbeat / slots)
	defer t.Stop()
	slot := 0
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		w.cmu.Lock()
		cs := w.clients
		w.cmu.Unlock()
		for i := slot; i < len(cs); i += slots {
			if !cs[i].live.Load() {
				continue
			}
			if err := cs[i].conn.Ping(); err != nil {
				w.noteErr("ping", err)
			}
		}
		slot = (slot + 1) % slots
	}
}

// publish sends Rate messages per second for Duration, round-robin over the publishers.
func (w *worker) publish(ctx context.Context) {
	w.cmu.Lock()
	var pubs []*client
	for _, c := range w.clients {
		if c.key < 0 {
			pubs = append(pubs, c)
		}
	}
	w.cmu.Unlock()
	if len(pubs) == 0 {
		return
	}
	total := int64(w.cfg.Rate * w.cfg.Duration.Seconds())
	start := time.Now()
	for i := int64(0); i < total && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(float64(i) / w.cfg.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		pub := pubs[int(i)%len(pubs)]
		text := makeStamp(stampFanout, i, time.Now(), w.cfg.Size)
		if err := pub.conn.WriteText(w.ad.Send(w.cfg.Room, pub.user, text, 0)); err != nil {
			w.noteErr("publish", err)
			return
		}
		w.sent.Add(1)
	}
}

// chat sends Rate messages per second (this worker's share) for Duration, round-robin over
// the A sides of its pairs; B sides answer in onMessage.
func (w *worker) chat(ctx context.Context) {
	w.cmu.Lock()
	var senders []*client
	for _, c := range w.clients {
		if c.isA {
			senders = append(senders, c)
		}
	}
	w.cmu.Unlock()
	if len(senders) == 0 || w.cfg.Rate <= 0 {
		return
	}
	total := int64(w.cfg.Rate * w.cfg.Duration.Seconds())
	start := time.Now()
	for i := int64(0); i < total && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(float64(i) / w.cfg.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		c := senders[int(i)%len(senders)]
		text := makeStamp(stampChat, i, time.Now(), w.cfg.Size)
		mid := fmt.Sprintf("m%s-%d-%d", w.cfg.RunID, w.cfg.Index, i)
		if err := c.conn.WriteText(w.ad.Chat(c.user, c.peer, text, mid, 0)); err != nil {
			w.noteErr("chat", err)
			continue
		}
		w.sent.Add(1)
	}
}

// storm connects Count clients at once (bounded by Concurrency dials in flight) and records
// each handshake's time to welcome.
func (w *worker) storm(ctx context.Context) {
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := 0; i < w.cfg.Count && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		g := w.cfg.First + i
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			c := &client{key: g, user: w.userName("s", g)}
			if err := w.dialClient(ctx, c, g); err == nil {
				w.lat.record(g, time.Since(t0))
				w.register(c)
			}
		}()
	}
	wg.Wait()
}

// closeAll closes every connection and waits (bounded) for the readers to end.
func (w *worker) closeAll() {
	w.stopping.Store(true)
	w.cmu.Lock()
	cs := w.clients
	w.clients = nil
	w.cmu.Unlock()
	for _, c := range cs {
		_ = c.conn.Close()
	}
	done := make(chan struct{})
	go func() { w.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	w.open.Store(0)
}
