package load

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-io/switchboard/loadtest/internal/procstat"
)

// Result is the merged outcome of a run, written as JSON by wsload.
type Result struct {
	Scenario  string    `json:"scenario"`
	Label     string    `json:"label"`
	Protocol  string    `json:"protocol"`
	Targets   []string  `json:"targets"`
	Started   time.Time `json:"started"`
	Workers   int       `json:"workers"`
	GoVersion string    `json:"go_version"`
	CPUs      int       `json:"cpus"`
	Params    Params    `json:"params"`

	// Connections.
	Requested int64 `json:"requested"` // connections asked for
	Connected int64 `json:"connected"` // peak open connections (set up and live)
	Dialed    int64 `json:"dialed"`
	Failed    int64 `json:"failed"`            // connections that never came up (reconnect: failed redials)
	Retried   int64 `json:"retried,omitempty"` // failed set-up attempts that were retried (-retries)
	Dropped   int64 `json:"dropped"`           // connections closed by the server or the network mid-run

	// Messages (fanout, chat).
	Sent     int64   `json:"sent"`
	Received int64   `json:"received"` // fanout: deliveries to members; chat: replies back at A
	Expected int64   `json:"expected"` // fanout: sent × members; chat: sent
	Lost     int64   `json:"lost"`
	LossPct  float64 `json:"loss_pct"`

	// Storm: ms from "go" to the last welcome. Reconnect: the slowest client's drop → welcome.
	AllConnectedMs float64 `json:"all_connected_ms,omitempty"`
	// Reconnect: connections back after the restart (Failed counts every failed redial).
	Reconnected int64 `json:"reconnected,omitempty"`

	// Target (the system under test), measured from /proc over the measured window.
	Target *TargetStats `json:"target,omitempty"`

	// Latency: fanout delivery, chat round trip, storm handshake (dial → welcome).
	Latency LatencyStats `json:"latency"`

	Errors    map[string]int64 `json:"errors,omitempty"`
	ElapsedMs float64          `json:"elapsed_ms"`
	// LoadAvg is /proc/loadavg at the start and at the end: the box is shared, and a high
	// load average means the generator and the target competed for the cores.
	LoadAvg [2]string `json:"loadavg"`
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Params are the knobs a run used.
type Params struct {
	Conns       int     `json:"conns"`
	Pairs       int     `json:"pairs,omitempty"`
	Publishers  int     `json:"publishers,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Size        int     `json:"size,omitempty"`
	DurationS   float64 `json:"duration_s,omitempty"`
	HoldS       float64 `json:"hold_s,omitempty"`
	SourceIPs   int     `json:"source_ips"`
	PerWorker   int     `json:"per_worker"`
	ConnectRate float64 `json:"connect_rate"`
	HeartbeatS  float64 `json:"heartbeat_s"`
}

// TargetStats are the figures of the measured processes (summed over TargetPIDs).
type TargetStats struct {
	PIDs           []int   `json:"pids"`
	RSSBaseBytes   int64   `json:"rss_base_bytes"` // before the first connection
	RSSBytes       int64   `json:"rss_bytes"`      // at the end of the measured window
	RSSPerConnB    float64 `json:"rss_per_conn_bytes,omitempty"`
	CPUSeconds     float64 `json:"cpu_seconds"` // CPU spent in the measured window
	WindowSeconds  float64 `json:"window_seconds"`
	CPUPct         float64 `json:"cpu_pct"` // CPUSeconds / WindowSeconds × 100
	CPUPer100kConn float64 `json:"cpu_per_100k_conns,omitempty"`
	// DeliveriesPerCPUSecond is fanout deliveries (chat: messages through) per CPU-second.
	DeliveriesPerCPUSecond float64 `json:"deliveries_per_cpu_second,omitempty"`
	// HandshakesPerCPUSecond is storm connections per CPU-second.
	HandshakesPerCPUSecond float64 `json:"handshakes_per_cpu_second,omitempty"`
}

// workerHandle is the coordinator's side of one worker.
type workerHandle struct {
	cfg     workerConfig
	in      io.WriteCloser
	last    event // latest snapshot (progress, ready, done)
	ready   bool
	done    bool
	exited  bool
	elapsed float64 // storm: ms from go to the last handshake, from the done event
	result  *event
}

// workerEvent is an event tagged with its worker; ev.Ev "exit" means the stream ended.
type workerEvent struct {
	w  int
	ev event
}

// Run runs cfg's scenario and returns the merged result. Progress lines go to progress (nil:
// none). The run is bounded by cfg.MaxDuration.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	start := time.Now()
	res := &Result{Scenario: cfg.Scenario, Label: cfg.Label, Protocol: cfg.Protocol,
		Targets: cfg.Targets, Started: start.UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		Params: Params{Conns: cfg.Conns, Size: cfg.Size, SourceIPs: len(cfg.SourceIPs),
			PerWorker: cfg.PerWorker, ConnectRate: cfg.ConnectRate, HeartbeatS: cfg.Heartbeat.Seconds()},
		LoadAvg: [2]string{loadAvg()}}
	switch cfg.Scenario {
	case ScenarioFanout:
		res.Params.Rate, res.Params.DurationS = cfg.Rate, cfg.Duration.Seconds()
		res.Params.Publishers = cfg.Publishers
	case ScenarioChat:
		res.Params.Conns, res.Params.Pairs = 2*cfg.Pairs, cfg.Pairs
		res.Params.Rate, res.Params.DurationS = cfg.Rate, cfg.Duration.Seconds()
	case ScenarioIdle:
		res.Params.Size, res.Params.HoldS = 0, cfg.Hold.Seconds()
	default:
		res.Params.Size = 0
	}

	var base procstat.Sample
	if len(cfg.TargetPIDs) > 0 {
		s, err := procstat.ReadAll(cfg.TargetPIDs)
		if err != nil {
			return nil, fmt.Errorf("load: target pid: %w", err)
		}
		base = s
	}

	plans := plan(cfg)
	res.Workers = len(plans)
	res.Requested = int64(cfg.Conns)
	switch cfg.Scenario {
	case ScenarioChat:
		res.Requested = int64(2 * cfg.Pairs)
	case ScenarioFanout:
		res.Requested = int64(cfg.Conns + cfg.Publishers) // the members and the publishers
	}
	fmt.Fprintf(progress, "wsload: %s against %s (%s): %d connections, %d worker(s)\n",
		cfg.Scenario, cfg.Label, strings.Join(cfg.Targets, ","), res.Requested, len(plans))

	ws := make([]*workerHandle, 0, len(plans))
	evc := make(chan workerEvent, 64)
	var wg sync.WaitGroup
	defer func() {
		// Closing stdin stops every worker; drain their last events until all have ended.
		cancelLate := time.AfterFunc(30*time.Second, cancel)
		defer cancelLate.Stop()
		for _, h := range ws {
			_ = h.in.Close()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for {
			select {
			case <-evc:
			case <-done:
				return
			}
		}
	}()
	for _, wc := range plans {
		h, err := startWorker(ctx, cfg, wc, evc, &wg)
		if err != nil {
			return nil, err
		}
		ws = append(ws, h)
	}

	c := &coord{cfg: cfg, ws: ws, evc: evc, progress: progress, start: start}
	if err := c.waitAll(ctx, func(h *workerHandle) bool { return h.ready }); err != nil {
		return nil, err
	}
	if cfg.Scenario == ScenarioIdle {
		if err := c.sleep(ctx, cfg.Settle); err != nil {
			return nil, err
		}
	}
	var a procstat.Sample
	if len(cfg.TargetPIDs) > 0 {
		a, _ = procstat.ReadAll(cfg.TargetPIDs)
	}
	c.broadcast("go")
	if err := c.waitAll(ctx, func(h *workerHandle) bool { return h.done }); err != nil {
		return nil, err
	}
	var before int64
	if cfg.Scenario == ScenarioReconnect {
		before = c.sumOpen()
		var pids []int
		var err error
		if cfg.Restart != nil {
			pids, err = cfg.Restart(ctx)
		} else {
			pids, err = restart(ctx, cfg.RestartCommand, progress)
		}
		if err != nil {
			return nil, err
		}
		if len(pids) > 0 {
			cfg.TargetPIDs, c.cfg.TargetPIDs = pids, pids
			// The new process did all of its work inside the window: count from zero.
			a = procstat.Sample{At: time.Now()}
		}
		// Wait (bounded by Hold) until as many connections are open as before the restart.
		if err := c.until(ctx, cfg.Hold, func() bool {
			var open, drops int64
			for _, h := range c.ws {
				open += h.last.Open
				drops += h.last.Dropped
			}
			return drops > 0 && open >= before
		}); err != nil {
			return nil, err
		}
	}
	switch cfg.Scenario {
	case ScenarioIdle:
		if err := c.sleep(ctx, cfg.Hold); err != nil {
			return nil, err
		}
	case ScenarioFanout, ScenarioChat:
		// Wait for the deliveries in flight: until everything expected arrived, at most Grace.
		if err := c.until(ctx, cfg.Grace, func() bool {
			var open, sent, recv int64
			for _, h := range c.ws {
				open, sent, recv = open+h.last.Open, sent+h.last.Sent, recv+h.last.Recv
			}
			want := sent
			if cfg.Scenario == ScenarioFanout {
				want = sent * (open - int64(cfg.Publishers))
			}
			return recv >= want
		}); err != nil {
			return nil, err
		}
	}
	var b procstat.Sample
	if len(cfg.TargetPIDs) > 0 {
		var err error
		if b, err = procstat.ReadAll(cfg.TargetPIDs); err != nil {
			return nil, fmt.Errorf("load: target pid: %w", err)
		}
	}
	peakOpen := c.sumOpen()
	var reconnected int64
	for _, h := range ws {
		reconnected += h.last.Reconn
	}
	c.broadcast("stop")
	if err := c.waitAll(ctx, func(h *workerHandle) bool { return h.result != nil }); err != nil {
		return nil, err
	}

	// Merge.
	lat := newHist()
	res.Errors = map[string]int64{}
	var maxElapsed float64
	for _, h := range ws {
		r := h.result
		res.Dialed += r.Dialed
		res.Failed += r.Failed
		res.Retried += r.Retried
		res.Dropped += r.Dropped
		res.Sent += r.Sent
		res.Received += r.Recv
		for k, v := range r.Errors {
			res.Errors[k] += v
		}
		if r.Lat != nil {
			lat.Merge(importHist(r.Lat))
		}
		if h.elapsed > maxElapsed {
			maxElapsed = h.elapsed
		}
	}
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	res.Connected = peakOpen
	res.Latency = summarize(lat)
	switch cfg.Scenario {
	case ScenarioFanout:
		members := peakOpen - int64(cfg.Publishers) // publishers do not count deliveries
		if members < 0 {
			members = 0
		}
		res.Expected = res.Sent * members
	case ScenarioChat:
		res.Expected = res.Sent
	case ScenarioStorm:
		res.AllConnectedMs = maxElapsed
	case ScenarioReconnect:
		res.Reconnected = reconnected
		res.Connected = before
		if reconnected >= before && before > 0 {
			res.AllConnectedMs = res.Latency.MaxMs // the slowest client's drop → welcome
		}
	}
	if res.Expected > 0 {
		res.Lost = res.Expected - res.Received
		if res.Lost < 0 {
			res.Lost = 0
		}
		res.LossPct = 100 * float64(res.Lost) / float64(res.Expected)
	}
	if len(cfg.TargetPIDs) > 0 {
		t := &TargetStats{PIDs: cfg.TargetPIDs, RSSBaseBytes: base.RSSBytes, RSSBytes: b.RSSBytes}
		t.CPUSeconds = (b.CPU - a.CPU).Seconds()
		t.WindowSeconds = b.At.Sub(a.At).Seconds()
		if t.WindowSeconds > 0 {
			t.CPUPct = 100 * t.CPUSeconds / t.WindowSeconds
		}
		if peakOpen > 0 {
			t.RSSPerConnB = float64(b.RSSBytes-base.RSSBytes) / float64(peakOpen)
			if cfg.Scenario == ScenarioIdle && t.WindowSeconds > 0 {
				t.CPUPer100kConn = t.CPUSeconds / t.WindowSeconds * 100_000 / float64(peakOpen)
			}
		}
		if t.CPUSeconds > 0 {
			switch cfg.Scenario {
			case ScenarioFanout, ScenarioChat:
				t.DeliveriesPerCPUSecond = float64(res.Received) / t.CPUSeconds
			case ScenarioStorm:
				t.HandshakesPerCPUSecond = float64(peakOpen) / t.CPUSeconds
			case ScenarioReconnect:
				t.HandshakesPerCPUSecond = float64(reconnected) / t.CPUSeconds
			}
		}
		res.Target = t
	}
	res.ElapsedMs = float64(time.Since(start)) / 1e6
	res.LoadAvg[1] = loadAvg()
	fmt.Fprintln(progress, Summary(res))
	return res, nil
}

// plan splits the run into worker configs of at most PerWorker connections each.
func plan(cfg Config) []workerConfig {
	base := workerConfig{Scenario: cfg.Scenario, Protocol: cfg.Protocol, Targets: cfg.Targets,
		SourceIPs: cfg.SourceIPs, Concurrency: cfg.Concurrency, Heartbeat: cfg.Heartbeat,
		Rate: cfg.Rate, Size: cfg.Size, Duration: cfg.Duration, DialTimeout: cfg.DialTimeout, Retries: cfg.Retries,
		Room: cfg.Room, JoinType: cfg.JoinType, SendType: cfg.SendType, JWTSecret: cfg.JWTSecret, JWTAudience: cfg.JWTAudience, RunID: cfg.RunID}
	total, per := cfg.Conns, cfg.PerWorker
	if cfg.Scenario == ScenarioChat {
		total, per = cfg.Pairs, cfg.PerWorker/2
	}
	if cfg.Scenario == ScenarioFanout {
		per -= cfg.Publishers // room for the publishers
	}
	n := (total + per - 1) / per
	if n < 1 {
		n = 1
	}
	out := make([]workerConfig, n)
	first := 0
	for i := range out {
		wc := base
		wc.Index = i
		wc.First = first
		wc.Count = total / n
		if i < total%n {
			wc.Count++
		}
		first += wc.Count
		wc.ConnectRate = cfg.ConnectRate / float64(n)
		if cfg.Scenario == ScenarioChat {
			wc.Rate = cfg.Rate * float64(wc.Count) / float64(max(total, 1))
		}
		wc.Publisher = cfg.Scenario == ScenarioFanout && i == 0
		if wc.Publisher {
			wc.Publishers = cfg.Publishers
		}
		wc.Reconnect = cfg.Scenario == ScenarioReconnect
		out[i] = wc
	}
	return out
}

func startWorker(ctx context.Context, cfg Config, wc workerConfig, evc chan<- workerEvent, wg *sync.WaitGroup) (*workerHandle, error) {
	h := &workerHandle{cfg: wc}
	line, _ := json.Marshal(wc)
	line = append(line, '\n')
	var out io.Reader
	var wait func() error
	if cfg.InProcess {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		h.in, out = inW, outR
		errc := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := RunWorker(ctx, inR, outW)
			_ = inR.Close()
			_ = outW.Close()
			errc <- err
		}()
		wait = func() error { return <-errc }
	} else {
		argv := cfg.WorkerCommand
		if len(argv) == 0 {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("load: worker executable: %w", err)
			}
			argv = []string{exe}
		}
		cmd := exec.CommandContext(ctx, argv[0], append(append([]string(nil), argv[1:]...), "-worker")...)
		cmd.Stderr = os.Stderr
		cmd.WaitDelay = 5 * time.Second
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, fmt.Errorf("load: worker stdin: %w", err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("load: worker stdout: %w", err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("load: start worker: %w", err)
		}
		h.in, out, wait = in, stdout, cmd.Wait
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 64<<20) // result lines carry histograms
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Ev: "fatal", Msg: "bad worker line: " + err.Error()}
			}
			evc <- workerEvent{w: wc.Index, ev: ev}
		}
		_, _ = io.Copy(io.Discard, out)
		msg := ""
		if err := wait(); err != nil {
			msg = err.Error()
		}
		evc <- workerEvent{w: wc.Index, ev: event{Ev: "exit", Msg: msg}}
	}()
	if _, err := h.in.Write(line); err != nil {
		return nil, fmt.Errorf("load: worker config: %w", err)
	}
	return h, nil
}

// coord drives the workers through the phases.
type coord struct {
	cfg      Config
	ws       []*workerHandle
	evc      chan workerEvent
	progress io.Writer
	start    time.Time
	lastLine time.Time
	prevRecv int64
	prevAt   time.Time
	fatal    error
}

func (c *coord) broadcast(cmd string) {
	for _, h := range c.ws {
		_, _ = io.WriteString(h.in, cmd+"\n") // a gone worker shows up as an exit event
	}
}

func (c *coord) handle(we workerEvent) {
	h := c.ws[we.w]
	ev := we.ev
	switch ev.Ev {
	case "progress":
		h.last = ev
	case "ready":
		h.last, h.ready = ev, true
	case "done":
		h.last, h.done, h.elapsed = ev, true, ev.ElapsedMs
	case "result":
		r := ev
		h.result = &r
	case "fatal":
		c.fatal = fmt.Errorf("load: worker %d: %s", we.w, ev.Msg)
	case "exit":
		h.exited = true
		if h.result == nil && c.fatal == nil {
			msg := ev.Msg
			if msg == "" {
				msg = "exited early"
			}
			c.fatal = fmt.Errorf("load: worker %d: %s", we.w, msg)
		}
	}
}

// waitAll processes events until pred holds for every worker, printing progress each second.
func (c *coord) waitAll(ctx context.Context, pred func(*workerHandle) bool) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		all := true
		for _, h := range c.ws {
			if !pred(h) {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if c.fatal != nil {
			return c.fatal
		}
		select {
		case we := <-c.evc:
			c.handle(we)
		case <-t.C:
			c.printProgress()
		case <-ctx.Done():
			return fmt.Errorf("load: run exceeded its bound: %w", ctx.Err())
		}
	}
}

// until processes events until cond holds or d passes.
func (c *coord) until(ctx context.Context, d time.Duration, cond func() bool) error {
	end := time.NewTimer(d)
	defer end.Stop()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for !cond() {
		if c.fatal != nil {
			return c.fatal
		}
		select {
		case we := <-c.evc:
			c.handle(we)
		case <-t.C:
			c.printProgress()
		case <-end.C:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("load: run exceeded its bound: %w", ctx.Err())
		}
	}
	return nil
}

// restart runs the restart command; the last non-empty line of its stdout may list the new
// target pids.
func restart(ctx context.Context, argv []string, progress io.Writer) ([]int, error) {
	fmt.Fprintf(progress, "wsload: restarting the target: %s\n", strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("load: restart command: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	var pids []int
	for _, f := range strings.Split(last, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, nil // not a pid list: keep measuring the old pids
		}
		pids = append(pids, n)
	}
	return pids, nil
}

// sleep processes events for d.
func (c *coord) sleep(ctx context.Context, d time.Duration) error {
	end := time.NewTimer(d)
	defer end.Stop()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if c.fatal != nil {
			return c.fatal
		}
		select {
		case we := <-c.evc:
			c.handle(we)
		case <-t.C:
			c.printProgress()
		case <-end.C:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("load: run exceeded its bound: %w", ctx.Err())
		}
	}
}

func (c *coord) sumOpen() int64 {
	var n int64
	for _, h := range c.ws {
		n += h.last.Open
	}
	return n
}

func (c *coord) printProgress() {
	var open, dialed, failed, dropped, sent, recv int64
	errs := map[string]int64{}
	for _, h := range c.ws {
		e := h.last
		open += e.Open
		dialed += e.Dialed
		failed += e.Failed
		dropped += e.Dropped
		sent += e.Sent
		recv += e.Recv
		for k, v := range e.Errors {
			errs[k] += v
		}
	}
	now := time.Now()
	rate := 0.0
	if !c.prevAt.IsZero() {
		rate = float64(recv-c.prevRecv) / now.Sub(c.prevAt).Seconds()
	}
	c.prevRecv, c.prevAt = recv, now
	line := fmt.Sprintf("[%6.1fs] open=%d dialed=%d failed=%d dropped=%d sent=%d recv=%d (%.0f/s)",
		now.Sub(c.start).Seconds(), open, dialed, failed, dropped, sent, recv, rate)
	if len(c.cfg.TargetPIDs) > 0 {
		if s, err := procstat.ReadAll(c.cfg.TargetPIDs); err == nil {
			line += fmt.Sprintf(" target: rss=%.1fMiB cpu=%.1fs", float64(s.RSSBytes)/(1<<20), s.CPU.Seconds())
		}
	}
	if len(errs) > 0 {
		keys := make([]string, 0, len(errs))
		for k := range errs {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return errs[keys[i]] > errs[keys[j]] })
		if len(keys) > 3 {
			keys = keys[:3]
		}
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%q=%d", k, errs[k])
		}
		line += " errors: " + strings.Join(parts, " ")
	}
	fmt.Fprintln(c.progress, line)
}

// Summary renders a result as a few human-readable lines.
func Summary(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "== %s / %s: connected %d of %d (failed %d, retried %d, dropped %d) in %.1fs (loadavg %s → %s)\n",
		r.Scenario, r.Label, r.Connected, r.Requested, r.Failed, r.Retried, r.Dropped, r.ElapsedMs/1000, r.LoadAvg[0], r.LoadAvg[1])
	if r.Expected > 0 || r.Sent > 0 {
		fmt.Fprintf(&b, "   sent %d, received %d of %d expected, lost %d (%.3f%%)\n",
			r.Sent, r.Received, r.Expected, r.Lost, r.LossPct)
	}
	if r.Scenario == ScenarioReconnect {
		fmt.Fprintf(&b, "   reconnected %d of %d (failed redials %d)\n", r.Reconnected, r.Connected, r.Failed)
	}
	if r.AllConnectedMs > 0 {
		fmt.Fprintf(&b, "   all connected after %.0f ms\n", r.AllConnectedMs)
	}
	if l := r.Latency; l.Count > 0 {
		fmt.Fprintf(&b, "   latency (n=%d): p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n",
			l.Count, l.P50Ms, l.P99Ms, l.P999Ms, l.MaxMs)
	}
	if t := r.Target; t != nil {
		fmt.Fprintf(&b, "   target: rss %.1f MiB (base %.1f MiB, %.0f B/conn), cpu %.2fs over %.1fs (%.0f%%)",
			float64(t.RSSBytes)/(1<<20), float64(t.RSSBaseBytes)/(1<<20), t.RSSPerConnB,
			t.CPUSeconds, t.WindowSeconds, t.CPUPct)
		if t.CPUPer100kConn > 0 {
			fmt.Fprintf(&b, ", %.3f cpu/s per 100k conns", t.CPUPer100kConn)
		}
		if t.DeliveriesPerCPUSecond > 0 {
			fmt.Fprintf(&b, ", %.0f deliveries/cpu-s", t.DeliveriesPerCPUSecond)
		}
		if t.HandshakesPerCPUSecond > 0 {
			fmt.Fprintf(&b, ", %.0f handshakes/cpu-s", t.HandshakesPerCPUSecond)
		}
		b.WriteByte('\n')
	}
	for k, v := range r.Errors {
		fmt.Fprintf(&b, "   error %q × %d\n", k, v)
	}
	return strings.TrimRight(b.String(), "\n")
}
