//go:build integration

package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/router/client"
)

// binDir holds the router, logic and edge binaries built by TestMain from this tree.
var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(stormClientEnv) != "" {
		os.Exit(m.Run()) // the client process of TestReconnectStorm: no binaries, no services
	}
	code := func() int {
		dir, err := os.MkdirTemp("", "sbfaults-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		root, err := repoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		for _, b := range []struct{ name, pkg string }{
			{"router", "./router/cmd/router"}, {"logic", "./logic/cmd/logic"}, {"edge", "./edge/cmd/edge"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "faults: go build %s: %v\n%s", b.pkg, err, out)
				return 1
			}
		}
		binDir = dir
		code := m.Run()
		if code == 0 {
			if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// repoRoot is the directory holding go.work, found upwards from the test's directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the test directory")
		}
		dir = parent
	}
}

func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: source .run/env (the lead's services)", name)
	}
	return v
}

// eventually polls ok every 10 ms until it holds or d passes, and returns how long it took.
func eventually(t testing.TB, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func suffix() string { return fmt.Sprintf("%08x", rand.Uint32()) }

// freePort returns a loopback address whose port the kernel just handed out (port 0) and that
// is free again: the child process binds it a moment later.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func httpOK(url string) bool {
	c := http.Client{Timeout: time.Second}
	res, err := c.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode/100 == 2
}

// proc is one child process of a test. It is killed (SIGKILL) at cleanup if still running.
type proc struct {
	name string
	bin  string
	args []string
	log  string // stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *proc) kill9(t testing.TB) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not die on SIGKILL", p.name)
	}
}

// wait waits up to d for the process to exit.
func (p *proc) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s still running %v after the signal", p.name, d)
		return nil
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	f, err := os.Open(p.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// cluster is one test's Switchboard: a router (its own key prefix), logic replicas, edges and
// HAProxy, all processes of their own, with a Pulsar namespace of its own.
type cluster struct {
	t          testing.TB
	dir        string
	ns         string
	pulsarURL  string
	adminURL   string
	redisAddr  string // the router's Redis
	chatRedis  string // the chat history's Redis (the shared one)
	prefix     string // the router's key prefix
	users      string // prefix of every user id of the test (chat keys are cleaned by it)
	secret     []byte
	secretFile string
	routerAddr string
	routerAdm  string
	lease      time.Duration
	drain      time.Duration
	edgeArgs   []string // extra flags of every edge of the cluster
	haproxyEnv []string // extra environment of HAProxy (KEY=value)

	router  *proc
	logics  []*proc
	edges   []*edgeProc
	haproxy *proc
	front   string // HAProxy's listen address
	stats   string // HAProxy's stats address

	mu    sync.Mutex
	procs []*proc
	rc    *client.Client
}

type edgeProc struct {
	*proc
	id   string
	addr string
}

type clusterOpts struct {
	redisAddr string        // the router's Redis; "" means SB_REDIS_ADDR
	lease     time.Duration // edge presence lease; 0 means 3s
	drain     time.Duration // edge drain window; 0 means 3s
	pulsarURL string        // the broker; "" means SB_PULSAR_URL
	adminURL  string        // its admin API; "" means SB_PULSAR_ADMIN_URL
	// edgeArgs are extra flags for every edge behind HAProxy (e.g. -max-conns-per-source).
	edgeArgs []string
	// haproxyEnv is extra environment for HAProxy (KEY=value): the template reads its
	// per-source limits from SB_HAPROXY_SRC_MAX_CONNS, SB_HAPROXY_SRC_CONN_RATE and
	// SB_HAPROXY_SRC_RATE_PERIOD (defaults 1000, 1000, 10s).
	haproxyEnv []string
}

// newCluster starts the router, two logic replicas, two edges and HAProxy, each ready.
func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	c := &cluster{
		t: t, dir: t.TempDir(),
		pulsarURL:  o.pulsarURL,
		adminURL:   strings.TrimRight(o.adminURL, "/"),
		chatRedis:  need(t, "SB_REDIS_ADDR"),
		redisAddr:  o.redisAddr,
		lease:      o.lease,
		drain:      o.drain,
		edgeArgs:   o.edgeArgs,
		haproxyEnv: o.haproxyEnv,
	}
	if c.redisAddr == "" {
		c.redisAddr = c.chatRedis
	}
	if c.pulsarURL == "" {
		c.pulsarURL = need(t, "SB_PULSAR_URL")
	}
	if c.adminURL == "" {
		c.adminURL = strings.TrimRight(need(t, "SB_PULSAR_ADMIN_URL"), "/")
	}
	if c.lease == 0 {
		c.lease = 3 * time.Second
	}
	if c.drain == 0 {
		c.drain = 3 * time.Second
	}
	sfx := suffix()
	c.prefix = "sbfaults:" + sfx + ":p:"
	c.users = "fz" + sfx
	c.secret = []byte("faults-secret-" + sfx + suffix())
	c.secretFile = filepath.Join(c.dir, "jwt.secret")
	if err := os.WriteFile(c.secretFile, c.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the namespace goes after every process is dead.
	t.Cleanup(c.deleteNamespace)
	t.Cleanup(c.stopAll)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FAULTS_LOGS") != "" {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, p := range c.procs {
				t.Logf("--- %s log (last 30 lines) ---\n%s", p.name, p.tail(30))
			}
		}
	})
	c.createNamespace()
	c.cleanRedisPrefix(c.redisAddr, c.prefix+"*")
	c.cleanRedisPrefix(c.chatRedis, "sb:chat:*"+c.users+"*")

	c.routerAddr, c.routerAdm = freePort(t), freePort(t)
	c.router = c.start("router", "router", "-listen", c.routerAddr, "-admin", c.routerAdm,
		"-redis", c.redisAddr, "-redis-prefix", c.prefix)
	c.waitReady(c.router, "http://"+c.routerAdm+"/readyz")

	c.logics = make([]*proc, 2)
	for i := range c.logics {
		c.logics[i] = c.startLogic(i + 1)
	}
	c.edges = make([]*edgeProc, 2)
	for i := range c.edges {
		c.edges[i] = &edgeProc{id: fmt.Sprintf("fe%d-%s", i+1, sfx), addr: freePort(t)}
		c.edges[i].proc = c.startEdge(c.edges[i].id, c.edges[i].addr)
	}
	for _, l := range c.logics {
		c.waitReady(l, "http://"+l.args[1]+"/healthz")
	}
	for _, e := range c.edges {
		c.waitReady(e.proc, "http://"+e.addr+"/healthz")
	}
	c.startHAProxy()

	rc, err := client.New(client.Config{Addr: c.routerAddr, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	c.rc = rc
	t.Cleanup(func() { _ = rc.Close() })
	return c
}

func (c *cluster) createNamespace() {
	t := c.t
	c.ns = "public/sbfaults-" + suffix()
	req, _ := http.NewRequest(http.MethodPut, c.adminURL+"/admin/v2/namespaces/"+c.ns, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("create namespace %s: %v", c.ns, err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("create namespace %s: HTTP %d", c.ns, res.StatusCode)
	}
}

// deleteNamespace deletes the namespace's topics, then the namespace (the broker refuses
// ?force=true on namespaces: a non-empty namespace would be left behind).
func (c *cluster) deleteNamespace() {
	if c.ns == "" {
		return
	}
	do := func(method, path string) (int, []byte) {
		req, _ := http.NewRequest(method, c.adminURL+"/admin/v2/"+path, nil)
		hc := http.Client{Timeout: 10 * time.Second}
		res, err := hc.Do(req)
		if err != nil {
			return 0, nil
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	var status int
	for range 5 {
		var topics []string
		if st, b := do(http.MethodGet, "namespaces/"+c.ns+"/topics"); st == http.StatusOK {
			_ = json.Unmarshal(b, &topics)
		}
		for _, tp := range topics {
			do(http.MethodDelete, "persistent/"+strings.TrimPrefix(tp, "persistent://")+"?force=true")
		}
		if status, _ = do(http.MethodDelete, "namespaces/"+c.ns); status/100 == 2 || status == http.StatusNotFound {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Errorf("Pulsar namespace %s left behind: delete answered HTTP %d", c.ns, status)
}

// user is a user id of this test: name with the test's prefix.
func (c *cluster) user(name string) string { return c.users + "-" + name }

// cleanRedisPrefix deletes the keys matching pattern in the Redis at addr at cleanup: the
// router's prefix, the chat history of this test's users.
func (c *cluster) cleanRedisPrefix(addr, pattern string) {
	c.t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		it := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		var keys []string
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			_ = rdb.Del(ctx, keys[:n]...).Err()
			keys = keys[n:]
		}
	})
}

// start runs binary name (from binDir, or a path) with args, output to <dir>/<label>.log.
func (c *cluster) start(label, bin string, args ...string) *proc {
	c.t.Helper()
	return startProc(c.t, c.dir, label, bin, &c.mu, &c.procs, args...)
}

// startEnv is start with extra environment (KEY=value) on top of the test's.
func (c *cluster) startEnv(label, bin string, env []string, args ...string) *proc {
	c.t.Helper()
	return startProcEnv(c.t, c.dir, label, bin, env, &c.mu, &c.procs, args...)
}

func startProc(t testing.TB, dir, label, bin string, mu *sync.Mutex, list *[]*proc, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, dir, label, bin, nil, mu, list, args...)
}

func startProcEnv(t testing.TB, dir, label, bin string, env []string, mu *sync.Mutex, list *[]*proc, args ...string) *proc {
	t.Helper()
	path := bin
	if !strings.Contains(bin, "/") && binDir != "" {
		if _, err := os.Stat(filepath.Join(binDir, bin)); err == nil {
			path = filepath.Join(binDir, bin)
		}
	}
	mu.Lock()
	n := len(*list)
	mu.Unlock()
	logPath := filepath.Join(dir, fmt.Sprintf("%s.%d.log", label, n))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", label, err)
	}
	p := &proc{name: label, bin: path, args: args, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	mu.Lock()
	*list = append(*list, p)
	mu.Unlock()
	return p
}

// stopAll kills every process still running (SIGKILL) and waits for each.
func (c *cluster) stopAll() {
	c.mu.Lock()
	ps := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	killAll(c.t, ps)
}

func killAll(t testing.TB, ps []*proc) {
	for _, p := range ps {
		p.signal(syscall.SIGKILL)
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
		}
	}
}

// waitReady waits for url to answer 2xx while p runs.
func (c *cluster) waitReady(p *proc, url string) time.Duration {
	c.t.Helper()
	start := time.Now()
	for !httpOK(url) {
		if p.exited() {
			c.t.Fatalf("%s exited (%v) before %s answered:\n%s", p.name, p.err, url, p.tail(30))
		}
		if time.Since(start) > 60*time.Second {
			c.t.Fatalf("%s not ready at %s within 60s:\n%s", p.name, url, p.tail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// startLogic starts logic replica i; its admin address is args[1].
func (c *cluster) startLogic(i int) *proc {
	c.t.Helper()
	return c.start(fmt.Sprintf("logic%d", i), "logic", "-admin", freePort(c.t), "-pulsar", c.pulsarURL,
		"-namespace", c.ns, "-router", c.routerAddr, "-redis", c.chatRedis, "-redis-cluster=", "-consumers", "4")
}

func (c *cluster) startEdge(id, addr string) *proc {
	c.t.Helper()
	return c.startEdgeArgs(id, addr, c.edgeArgs...)
}

// startEdgeArgs starts an edge with extra flags (after the harness's, so they win).
func (c *cluster) startEdgeArgs(id, addr string, extra ...string) *proc {
	c.t.Helper()
	bin := "edge"
	if p := os.Getenv("FAULTS_EDGE_BIN"); p != "" {
		bin = p // a changed edge binary to try against these faults
	}
	args := []string{"-id", id, "-addr", addr, "-loops", "1",
		"-pulsar", c.pulsarURL, "-namespace", c.ns, "-router", c.routerAddr,
		"-jwt-secret-file", c.secretFile, "-dev-tokens",
		"-lease", c.lease.String(), "-drain", c.drain.String(), "-move-jitter", "500ms"}
	return c.start(id, bin, append(args, extra...)...)
}

// startDirectEdge starts one more edge of the cluster with extra flags, NOT behind HAProxy
// (clients dial its address directly), and waits until it is ready.
func (c *cluster) startDirectEdge(name string, extra ...string) *edgeProc {
	c.t.Helper()
	e := &edgeProc{id: name + "-" + strings.TrimPrefix(c.users, "fz"), addr: freePort(c.t)}
	e.proc = c.startEdgeArgs(e.id, e.addr, extra...)
	c.waitReady(e.proc, "http://"+e.addr+"/healthz")
	return e
}

// restartEdge starts edge i again with the same id and address and waits until it is ready
// and HAProxy sends it traffic again.
func (c *cluster) restartEdge(i int) {
	c.t.Helper()
	e := c.edges[i]
	// The old process's port may linger a moment in the kernel: retry the start.
	for attempt := 0; ; attempt++ {
		e.proc = c.startEdge(e.id, e.addr)
		start := time.Now()
		for !e.exited() && !httpOK("http://"+e.addr+"/healthz") && time.Since(start) < 60*time.Second {
			time.Sleep(20 * time.Millisecond)
		}
		if !e.exited() {
			break
		}
		if attempt == 5 {
			c.t.Fatalf("%s does not start again: %v\n%s", e.id, e.err, e.tail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.waitReady(e.proc, "http://"+e.addr+"/healthz")
	eventually(c.t, 30*time.Second, e.id+" UP in HAProxy", func() bool { return c.backendUp()[e.id] })
}

// haproxyTemplate is the balancer's config as deployed; FAULTS_HAPROXY_TEMPLATE overrides it
// (to try a changed config against these faults).
func haproxyTemplate() string {
	if p := os.Getenv("FAULTS_HAPROXY_TEMPLATE"); p != "" {
		return p
	}
	return "../../../deploy/haproxy/haproxy.cfg.tmpl"
}

// startHAProxy renders deploy/haproxy/haproxy.cfg.tmpl for the two edges and starts
// haproxy -db, then waits until it reports both edges UP.
func (c *cluster) startHAProxy() {
	t := c.t
	t.Helper()
	tmpl, err := os.ReadFile(haproxyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	c.front, c.stats = freePort(t), freePort(t)
	var servers strings.Builder
	for _, e := range c.edges {
		fmt.Fprintf(&servers, "    server %s %s check\n", e.id, e.addr)
	}
	cfg := strings.NewReplacer("@FRONT@", c.front, "@STATS@", c.stats).Replace(string(tmpl))
	cfg = strings.Replace(cfg, "@SERVERS@\n", servers.String(), 1)
	path := filepath.Join(c.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command("haproxy", "-c", "-q", "-f", path)
	check.Env = append(os.Environ(), c.haproxyEnv...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy rejected the config: %v\n%s", err, out)
	}
	c.haproxy = c.startEnv("haproxy", "haproxy", c.haproxyEnv, "-db", "-f", path)
	c.waitReady(c.haproxy, "http://"+c.stats+"/healthz")
	eventually(t, 30*time.Second, "both edges UP in HAProxy", func() bool {
		up := c.backendUp()
		return up[c.edges[0].id] && up[c.edges[1].id]
	})
}

// backendUp reads HAProxy's CSV stats: which edges are UP.
func (c *cluster) backendUp() map[string]bool {
	hc := http.Client{Timeout: time.Second}
	res, err := hc.Get("http://" + c.stats + "/stats;csv")
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	lines := strings.Split(string(b), "\n")
	if len(lines) == 0 {
		return nil
	}
	head := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := -1
	for i, h := range head {
		if h == "status" {
			col = i
		}
	}
	up := map[string]bool{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if col < 0 || len(f) <= col || f[0] != "edges" {
			continue
		}
		up[f[1]] = strings.HasPrefix(f[col], "UP")
	}
	return up
}

// wsURL is the WebSocket address through HAProxy.
func (c *cluster) wsURL() string { return "ws://" + c.front + "/ws" }

// token mints an HS256 token for user with the cluster's secret, valid for an hour.
func (c *cluster) token(user string) string {
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: user,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(c.secret)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}
