package edge

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

var memConns = flag.Int("memconns", 300, "connections for TestMemoryPerConnection (the issue's figure: 19000)")

// TestMemoryPerConnection measures the edge's resident memory per idle connection, with
// heartbeats on. The clients live in a child process (this test binary re-executed), so the
// edge process holds only its own descriptors:
//
//	go test -run TestMemoryPerConnection -memconns 19000 -v .
//
// It asserts nothing about the figure (no timed or sized assertions in unit tests); it reports
// it. By default it runs with a few hundred connections so the harness stays tested.
func TestMemoryPerConnection(t *testing.T) {
	n := *memConns
	cfg := testConfig()
	cfg.Tick = 100 * time.Millisecond
	cfg.PingInterval = 2 * time.Second
	cfg.IdleTimeout = 30 * time.Second
	s := startEdge(t, cfg)

	base := settleRSS()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemClientProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "EDGE_MEM_CLIENT="+s.Addr()+","+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("client process: %v", err)
		}
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "READY") || strings.HasPrefix(line, "FAIL") {
				ready <- line
			}
		}
		close(ready)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "READY") {
			t.Fatalf("client process: %s", line)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("client process did not connect")
	}
	checkFor(t, time.Minute, func() error {
		if st := s.Stats(); st.Open != int64(n) {
			return fmt.Errorf("%d open, stats %+v", st.Open, st)
		}
		return nil
	})
	// Let heartbeats run: every connection is pinged (and answers) at least once.
	time.Sleep(2*cfg.PingInterval + time.Second)
	if st := s.Stats(); st.Open != int64(n) {
		t.Fatalf("%d open after heartbeats, want %d", st.Open, n)
	}
	rss := settleRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	per := float64(rss-base) / float64(n)
	t.Logf("edge RSS: %d KiB before, %d KiB with %d idle connections (heartbeats on): %.0f bytes per connection; Go heap in use %d KiB",
		base>>10, rss>>10, n, per, ms.HeapInuse>>10)
	fmt.Printf("MEM conns=%d rss_before_kib=%d rss_after_kib=%d bytes_per_conn=%.0f\n", n, base>>10, rss>>10, per)
}

// settleRSS collects garbage, returns freed memory to the OS and reads VmRSS in bytes.
func settleRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestMemClientProcess is the client side of TestMemoryPerConnection, run in a child process
// (it does nothing otherwise): it opens the connections, answers pings, and exits when its
// stdin closes.
func TestMemClientProcess(t *testing.T) {
	spec := os.Getenv("EDGE_MEM_CLIENT")
	if spec == "" {
		return
	}
	addr, ns, _ := strings.Cut(spec, ",")
	n, _ := strconv.Atoi(ns)
	conns := make([]*lightConn, n)
	var wg, readers sync.WaitGroup
	var failMu sync.Mutex
	var fail error
	const workers = 16
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				lc, err := dialLight(addr, "m"+strconv.Itoa(i))
				if err != nil {
					failMu.Lock()
					fail = fmt.Errorf("conn %d: %w", i, err)
					failMu.Unlock()
					return
				}
				conns[i] = lc
				_ = lc.c.SetDeadline(time.Time{})
				readers.Add(1)
				go func() {
					defer readers.Done()
					for {
						f, err := ws.ReadFrame(lc.br)
						if err != nil {
							return
						}
						if f.Header.OpCode == ws.OpPing {
							p := ws.NewPongFrame(bytes.Clone(f.Payload))
							if err := ws.WriteFrame(lc.c, ws.MaskFrameInPlace(p)); err != nil {
								return
							}
						}
					}
				}()
			}
		}()
	}
	wg.Wait()
	if fail != nil {
		fmt.Printf("FAIL %v\n", fail)
		for _, lc := range conns {
			if lc != nil {
				lc.c.Close()
			}
		}
		readers.Wait()
		return
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, lc := range conns {
		lc.c.Close()
	}
	readers.Wait()
}
