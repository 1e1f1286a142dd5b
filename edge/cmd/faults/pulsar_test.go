//go:build integration

package faults

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/protocol"
)

// privatePulsar is a Pulsar standalone of one test, started with deploy/local/pulsar.sh in a
// state directory of its own on ports of its own: the lead's shared broker is never touched.
type privatePulsar struct {
	t      testing.TB
	state  string
	url    string
	admin  string
	env    []string
	script string // deploy/local/pulsar.sh
}

// run runs pulsar.sh arg with the broker's environment plus env.
func (p *privatePulsar) run(arg string, env ...string) ([]byte, error) {
	cmd := exec.Command(p.script, arg)
	cmd.Env = append(append([]string(nil), p.env...), env...)
	return cmd.CombinedOutput()
}

func startPrivatePulsar(t *testing.T) *privatePulsar {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ports := stablePorts(t, 3)
	bp, wp, bk := ports[0], ports[1], ports[2]
	p := &privatePulsar{t: t, state: t.TempDir(), url: "pulsar://127.0.0.1:" + bp, admin: "http://127.0.0.1:" + wp}
	p.env = append(os.Environ(), "SB_STATE_DIR="+p.state, "SB_PULSAR_PORT="+bp, "SB_PULSAR_WEB_PORT="+wp,
		"SB_PULSAR_BOOKIE_PORT="+bk, "SB_PULSAR_START_TIMEOUT=150", "SB_PULSAR_STOP_TIMEOUT=20")
	p.script = filepath.Join(root, "deploy", "local", "pulsar.sh")
	t.Cleanup(func() {
		p.signal(syscall.SIGCONT) // a stopped JVM cannot handle TERM
		if out, err := p.run("stop"); err != nil {
			t.Errorf("pulsar.sh stop: %v\n%s", err, out)
		}
		if t.Failed() || os.Getenv("FAULTS_LOGS") != "" {
			// The state directory goes with the test: keep the broker's log for the post-mortem.
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("sbfaults-pulsar-%s-%d.log", t.Name(), time.Now().Unix()))
			if b, err := os.ReadFile(filepath.Join(p.state, "pulsar", "pulsar.log")); err == nil && os.WriteFile(keep, b, 0o644) == nil {
				t.Logf("private broker's log kept in %s", keep)
			}
		}
	})
	start := time.Now()
	if out, err := p.run("start"); err != nil {
		t.Fatalf("pulsar.sh start (private broker on %s): %v\n%s", p.url, err, out)
	}
	t.Logf("private Pulsar standalone on %s ready in %v", p.url, time.Since(start).Round(time.Millisecond))
	p.warm()
	return p
}

// warm loads a topic of a throwaway namespace once (ledger, cursor, the namespace's policy
// topic): a fresh broker's first topic load can exceed the edges' 5 s operation timeout on a
// busy box, and an edge whose first subscribe fails exits.
func (p *privatePulsar) warm() {
	start := time.Now()
	ns := "public/sbwarm-" + suffix()
	tp := "persistent/" + ns + "/warm"
	for _, step := range []struct{ method, path, body string }{
		{http.MethodPut, "namespaces/" + ns, ""},
		{http.MethodPut, tp, ""},
		{http.MethodPut, tp + "/subscription/warm", `{"ledgerId":-1,"entryId":-1}`},
		{http.MethodDelete, tp + "?force=true", ""},
		{http.MethodDelete, "namespaces/" + ns, ""},
	} {
		req, _ := http.NewRequest(step.method, p.admin+"/admin/v2/"+step.path, strings.NewReader(step.body))
		req.Header.Set("Content-Type", "application/json")
		hc := http.Client{Timeout: 60 * time.Second}
		res, err := hc.Do(req)
		if err != nil {
			p.t.Fatalf("warming the private broker: %s %s: %v", step.method, step.path, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			p.t.Fatalf("warming the private broker: %s %s: HTTP %d %s", step.method, step.path, res.StatusCode, b)
		}
	}
	p.t.Logf("private broker warmed (a topic and a subscription created and deleted) in %v", time.Since(start).Round(time.Millisecond))
}

// stablePorts returns n free ports below the kernel's ephemeral range (ip_local_port_range),
// where no outgoing connection of any process can take one while the broker is down: a broker
// restarted on the same ports (TestPulsarRestart) must bind them again, and on this shared box
// load generators cycle through the whole ephemeral range within a minute.
func stablePorts(t testing.TB, n int) []string {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				lo = v
			}
		}
	}
	const base = 20000 // above the shared services' ports (16379, 17001-17003, 16650, 18081)
	if lo-base < 1000 {
		t.Fatalf("ephemeral port range starts at %d: no room below it for the private broker's ports", lo)
	}
	var out []string
	seen := map[int]bool{}
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no %d free ports in [%d, %d)", n, base, lo)
		}
		p := base + rand.IntN(lo-base)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		out = append(out, strconv.Itoa(p))
	}
	return out
}

// pid is the broker's pid (pulsar.sh keeps it in its state directory), 0 if unknown.
func (p *privatePulsar) pid() int {
	b, err := os.ReadFile(filepath.Join(p.state, "pulsar", "pulsar.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func (p *privatePulsar) signal(sig syscall.Signal) {
	if pid := p.pid(); pid > 0 {
		_ = syscall.Kill(pid, sig)
	}
}

// rssKiB is the resident set of process pid in KiB (VmRSS), 0 if it cannot be read.
func rssKiB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

// rssSampler records the peak RSS of a set of processes every 50 ms until stopped.
type rssSampler struct {
	mu   sync.Mutex
	peak map[int]int
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pids []int) *rssSampler {
	s := &rssSampler{peak: map[int]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			s.mu.Lock()
			for _, pid := range pids {
				s.peak[pid] = max(s.peak[pid], rssKiB(pid))
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) finish() map[int]int {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// outageTally classifies every chat.send of the load.
type outageTally struct {
	answered   int // an ack, a reply or an error frame
	errored    int // an error frame (1005 unavailable…)
	closedConn int // no answer, but the connection it was sent on closed (the client saw it)
	silent     int // no answer on a connection that is still the same: vanished silently
	sentDuring int // sent while the broker was stopped
	ackedDurng int // … and acked anyway (held and accepted after the broker came back)
	errDuring  int // … and answered with an error frame
	errStored  int // answered with an error frame, yet stored and replied to later
}

func (l *load) tally(from, to time.Time) outageTally {
	var o outageTally
	for _, cl := range l.clients {
		cl.mu.Lock()
		for _, m := range cl.order {
			during := !m.sentAt.Before(from) && m.sentAt.Before(to)
			if during {
				o.sentDuring++
			}
			switch {
			case m.acked || m.replied || m.errCode != 0:
				o.answered++
				if m.errCode != 0 {
					o.errored++
					if m.replied {
						o.errStored++
					}
					if during {
						o.errDuring++
					}
				} else if during {
					o.ackedDurng++
				}
			case cl.connects > 1 && m.sentAt.Before(cl.connectAt):
				o.closedConn++
			default:
				o.silent++
			}
		}
		cl.mu.Unlock()
	}
	return o
}

// edgeWatch samples the edges' peak RSS from just before a fault.
type edgeWatch struct {
	c      *cluster
	pids   []int
	before map[int]int // KiB
	rss    *rssSampler
}

func watchEdges(c *cluster) *edgeWatch {
	w := &edgeWatch{c: c, before: map[int]int{}}
	for _, e := range c.edges {
		pid := e.cmd.Process.Pid
		w.pids = append(w.pids, pid)
		w.before[pid] = rssKiB(pid)
	}
	w.rss = sampleRSS(w.pids)
	return w
}

// repliedSince reports whether cl got a chat.send reply for a message it sent after since.
func repliedSince(cl *chatClient, since time.Time) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for i := len(cl.order) - 1; i >= 0 && cl.order[i].sentAt.After(since); i-- {
		if cl.order[i].replied {
			return true
		}
	}
	return false
}

// brokerBack is what the Pulsar tests measure once the broker is back.
type brokerBack struct {
	firstFlow, recovered time.Duration // first client's / every client's chat.send reply after back
	settle               time.Duration // every frame answered, after the load stopped
	o                    outageTally   // frames sent in [down, back) are "during"
	r                    result
	rss                  string // per edge: before → peak
}

// afterBroker waits for chat to flow again for every client (within recoverBound of back),
// stops the load, waits for every frame to be answered and verifies the history, then asserts
// what both Pulsar tests promise: no process exited, the edges' RSS grew by less than rssBound
// KiB, no frame vanished silently, no acked message lost, duplicated or out of order, and
// frames were sent during the outage.
func (l *load) afterBroker(c *cluster, w *edgeWatch, down, back time.Time, recoverBound time.Duration, rssBound int) brokerBack {
	t := l.t
	t.Helper()
	var b brokerBack
	b.recovered = eventually(t, recoverBound, "chat flowing again for every client after the broker came back", func() bool {
		n := 0
		for _, cl := range l.clients {
			if repliedSince(cl, back) {
				n++
			}
		}
		if n > 0 && b.firstFlow == 0 {
			b.firstFlow = time.Since(back)
		}
		return n == len(l.clients)
	})
	// A little more traffic on the recovered bus, then every frame must be answered.
	time.Sleep(2 * time.Second)
	l.stopSending()
	b.settle = eventually(t, 30*time.Second, "every chat.send answered (ack, reply or error frame)", func() bool {
		b.o = l.tally(down, back)
		return b.o.silent == 0
	})
	peak := w.rss.finish()
	b.r = l.verify(syncWait)

	for _, p := range append(append([]*proc{}, c.logics...), c.edges[0].proc, c.edges[1].proc) {
		if p.exited() {
			t.Errorf("%s exited while the broker was away: %v\n%s", p.name, p.err, p.tail(20))
		}
	}
	var notes []string
	for i, pid := range w.pids {
		notes = append(notes, fmt.Sprintf("%s %d→peak %d MiB", c.edges[i].id, w.before[pid]>>10, peak[pid]>>10))
		if peak[pid]-w.before[pid] > rssBound {
			t.Errorf("edge %s RSS grew from %d KiB to %d KiB while the broker was away (bound +%d KiB)", c.edges[i].id, w.before[pid], peak[pid], rssBound)
		}
	}
	b.rss = strings.Join(notes, ", ")
	if b.o.silent != 0 {
		t.Errorf("%d frames vanished silently (no ack, no error, connection still open)", b.o.silent)
	}
	if b.r.lost != 0 || b.r.dups != 0 || b.r.outOfOrder != 0 {
		t.Errorf("acked chat messages lost=%d duplicated=%d out_of_order=%d", b.r.lost, b.r.dups, b.r.outOfOrder)
	}
	if b.o.sentDuring == 0 {
		t.Error("no frame was sent while the broker was away: the fault was not exercised")
	}
	return b
}

// TestPulsarOutage stops the Pulsar broker for 10 s under chat load and lets it run again.
//
// The broker is a private standalone (deploy/local/pulsar.sh in a state directory of the test).
// The outage is SIGSTOP … SIGCONT of the broker's JVM, not pulsar.sh stop/start: pulsar.sh
// start wipes data/, which would be a broker restart with data loss (every namespace, topic
// and unconsumed message gone), and a message the bus acked before that would be lost by the
// broker, not by Switchboard. A frozen broker keeps its data and its TCP connections but answers
// nothing for 10 s: publishes time out (the bus's SendTimeout), lookups and producer creations
// hang, exactly what a network partition or a stalled broker looks like to the edges and logic.
//
// Asserted: edges and logic keep running and chat flows again by itself within 60 s of the
// broker resuming; every frame a client sent got an ack/reply or an explicit error frame (none
// vanish silently); every acked message is in the history (chat.sync), no duplicates; the edges'
// peak RSS stays within 64 MiB of their RSS before the outage.
func TestPulsarOutage(t *testing.T) {
	const (
		outage       = 10 * time.Second
		recoverBound = 60 * time.Second
		rssBound     = 64 << 10 // KiB of growth allowed over the pre-outage RSS
	)
	pp := startPrivatePulsar(t)
	c := newCluster(t, clusterOpts{pulsarURL: pp.url, adminURL: pp.admin})
	l := startLoad(t, c, pairs)
	l.send(rate)
	l.warm(warmup)

	w := watchEdges(c)
	if pp.pid() == 0 {
		t.Fatal("no pid for the private broker")
	}

	stopped := time.Now()
	pp.signal(syscall.SIGSTOP)
	// The outage itself lasts a fixed 10 s (the fault being injected, not a synchronisation);
	// meanwhile the load keeps sending.
	time.Sleep(outage)
	errsDuringOutage := 0
	for _, cl := range l.clients {
		cl.mu.Lock()
		errsDuringOutage += cl.errors[int(protocol.ErrUnavailable)] + cl.errors[int(protocol.ErrTimeout)]
		cl.mu.Unlock()
	}
	pp.signal(syscall.SIGCONT)
	resumed := time.Now()

	b := l.afterBroker(c, w, stopped, resumed, recoverBound, rssBound)
	o := b.o
	t.Logf("FAULT pulsar-outage: broker SIGSTOPped %v under %d clients × %.0f msg/s; %d error frames (1005 unavailable / 1009 timeout) during the outage; first chat.send reply %v and every client's %v after SIGCONT (bound %v); every frame answered %v after the load stopped; frames sent during the outage: %d (acked later %d, error frame %d); all frames: answered=%d errors=%d (of which stored and replied to anyway: %d) closed-with-conn=%d silent=%d; client reconnects %d; edge RSS %s; %s",
		outage, len(l.clients), rate, errsDuringOutage, b.firstFlow.Round(time.Millisecond), b.recovered.Round(time.Millisecond), recoverBound,
		b.settle.Round(time.Millisecond), o.sentDuring, o.ackedDurng, o.errDuring, o.answered, o.errored, o.errStored, o.closedConn, o.silent,
		l.reconnects(), b.rss, b.r)
}
