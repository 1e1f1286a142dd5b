// Command presbench loads a running router with presence traffic and prints throughput:
// E simulated edges (each one Apply in flight, renewing its lease) report connects (a connect
// plus a room join each) in batches, then R readers resolve the connected users in batches.
//
//	router -listen 127.0.0.1:7070 -redis 127.0.0.1:16379 &
//	presbench -addr 127.0.0.1:7070 -edges 16 -batch 256 -duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/presence"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "presbench:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:7070", "router gRPC address")
	edges := flag.Int("edges", 16, "concurrent edges")
	batch := flag.Int("batch", 256, "connects per Apply")
	rooms := flag.Int("rooms", 100, "rooms joined round-robin")
	readers := flag.Int("readers", 16, "concurrent resolvers")
	rbatch := flag.Int("resolve-batch", 100, "users per ResolveUsers call")
	dur := flag.Duration("duration", 10*time.Second, "length of each phase")
	flag.Parse()
	c, err := client.New(client.Config{Addr: *addr, CacheTTL: -1})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := context.Background()
	run := time.Now().UnixNano() & 0xffffff

	type reg struct {
		name  string
		epoch atomic.Uint64
	}
	regs := make([]*reg, *edges)
	for i := range regs {
		regs[i] = &reg{name: fmt.Sprintf("presbench-%x-%d", run, i)}
		ep, err := c.Register(ctx, regs[i].name, 0)
		if err != nil {
			return err
		}
		regs[i].epoch.Store(ep)
	}
	defer func() {
		for _, r := range regs {
			_ = c.Deregister(ctx, r.name, r.epoch.Load())
		}
	}()
	// Heartbeats, as edges do: each edge renews its own lease every lease/3 and registers
	// again if it lost it (then its next batches go to the new epoch).
	hbCtx, hbStop := context.WithCancel(ctx)
	var hbWG sync.WaitGroup
	defer func() { hbStop(); hbWG.Wait() }()
	var lost atomic.Int64
	for _, r := range regs {
		hbWG.Add(1)
		go func() {
			defer hbWG.Done()
			t := time.NewTicker(presence.DefaultLeaseTTL / 3)
			defer t.Stop()
			for {
				select {
				case <-hbCtx.Done():
					return
				case <-t.C:
				}
				if err := c.Renew(hbCtx, r.name, r.epoch.Load()); errors.Is(err, presence.ErrLeaseLost) {
					lost.Add(1)
					if ep, err := c.Register(hbCtx, r.name, 0); err == nil {
						r.epoch.Store(ep)
					}
				}
			}
		}()
	}

	var next, done, errs atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(*dur)
	start := time.Now()
	for _, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := make([]presence.Op, 0, 2**batch)
			meta := map[string]string{"device": "web"}
			for time.Now().Before(end) {
				ops = ops[:0]
				for j := 0; j < *batch; j++ {
					id := next.Add(1)
					ops = append(ops,
						presence.Op{Kind: presence.OpConnect, ConnID: uint64(id), User: fmt.Sprintf("pb%x-u%d", run, id), Meta: meta},
						presence.Op{Kind: presence.OpJoin, ConnID: uint64(id), Room: fmt.Sprintf("pb%x-room-%d", run, id%int64(*rooms))})
				}
				if err := c.Apply(ctx, r.name, r.epoch.Load(), ops); err != nil {
					if errs.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "apply:", err)
					}
					continue
				}
				done.Add(int64(*batch))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	n := done.Load()
	fmt.Printf("connect: edges=%d batch=%d: %d connects in %.1fs: %.0f connects/s, %.0f updates/s (%d failed Applies, %d leases lost)\n",
		*edges, *batch, n, el, float64(n)/el, float64(2*n)/el, errs.Load(), lost.Load())

	total := next.Load()
	if n == 0 {
		return fmt.Errorf("no connects succeeded: nothing to resolve")
	}
	var resolved atomic.Int64
	errs.Store(0)
	end = time.Now().Add(*dur)
	start = time.Now()
	for i := 0; i < *readers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			users := make([]string, *rbatch)
			k := int64(i) * 7919
			for time.Now().Before(end) {
				for j := range users {
					k += 104729
					users[j] = fmt.Sprintf("pb%x-u%d", run, k%total+1)
				}
				if _, err := c.ResolveUsers(ctx, users); err != nil {
					if errs.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "resolve:", err)
					}
					continue
				}
				resolved.Add(int64(len(users)))
			}
		}(i)
	}
	wg.Wait()
	el = time.Since(start).Seconds()
	fmt.Printf("resolve: readers=%d batch=%d: %d users in %.1fs: %.0f resolves/s (%d failed calls)\n",
		*readers, *rbatch, resolved.Load(), el, float64(resolved.Load())/el, errs.Load())
	return nil
}
