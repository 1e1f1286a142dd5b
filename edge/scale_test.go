package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboard-io/switchboard/protocol"
)

// lightConn is a minimal client for holding thousands of connections in one test: a socket
// and a small read buffer, no goroutine.
type lightConn struct {
	c  net.Conn
	br *bufio.Reader
	id uint64
}

func dialLight(addr, user string) (*lightConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET /ws?user=" + user + " HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	lc := &lightConn{c: c, br: bufio.NewReaderSize(c, 512)}
	resp, err := http.ReadResponse(lc.br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	f, err := lc.frame()
	if err != nil {
		c.Close()
		return nil, err
	}
	i := bytes.Index(f.Payload, []byte(`"conn":"`))
	if i < 0 {
		c.Close()
		return nil, fmt.Errorf("welcome %q", f.Payload)
	}
	rest := f.Payload[i+8:]
	lc.id, err = strconv.ParseUint(string(rest[:bytes.IndexByte(rest, '"')]), 10, 64)
	return lc, err
}

func (lc *lightConn) frame() (ws.Frame, error) {
	_ = lc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	return ws.ReadFrame(lc.br)
}

// TestNineThousandConnections holds 9,000 connections on one edge (both ends in this process,
// under the 20,000-descriptor limit) and checks that every one receives one room delivery
// exactly once.
func TestNineThousandConnections(t *testing.T) {
	const n = 9000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 2*n+200 {
		lim.Cur = min(lim.Max, 2*n+500)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		if lim.Cur < 2*n+200 {
			t.Fatalf("descriptor limit %d is too low for %d connections", lim.Cur, n)
		}
	}
	cfg := testConfig()
	cfg.Tick = 100 * time.Millisecond
	s := startEdge(t, cfg)

	conns := make([]*lightConn, n)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	const workers = 16
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				lc, err := dialLight(s.Addr(), "u"+strconv.Itoa(i))
				if err != nil {
					errs <- fmt.Errorf("conn %d: %w", i, err)
					return
				}
				conns[i] = lc
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, lc := range conns {
			if lc != nil {
				lc.c.Close()
			}
		}
	}()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	checkFor(t, 30*time.Second, func() error {
		if st := s.Stats(); st.Open != n {
			return fmt.Errorf("%d open", st.Open)
		}
		return nil
	})

	ids := make([]uint64, n)
	for i, lc := range conns {
		ids[i] = lc.id
	}
	down(t, s, &protocol.Downstream{Kind: protocol.DownJoin, Target: protocol.TargetConns, Conns: ids, Rooms: []string{"stadium"}})
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "stadium", Frame: deliver("danmaku", `{"goal":1}`)})
	// A marker after it: a duplicate room delivery would be read in its place.
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetAll, Frame: deliver("marker", `{}`)})

	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				lc := conns[i]
				for k, want := range []string{`"danmaku"`, `"marker"`} {
					f, err := lc.frame()
					if err != nil {
						errs <- fmt.Errorf("conn %d frame %d: %w", i, k, err)
						return
					}
					if f.Header.OpCode != ws.OpText || !bytes.Contains(f.Payload, []byte(want)) {
						errs <- fmt.Errorf("conn %d frame %d: %q, want %s", i, k, f.Payload, want)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if st := s.Stats(); st.Written < 2*n {
		t.Fatalf("written %d, want ≥ %d", st.Written, 2*n)
	}
}
