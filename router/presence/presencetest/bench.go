package presencetest

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/router/presence"
)

// Bench measures presence throughput of s, shared by the store benchmarks and the gRPC
// service benchmark (router/client):
//
//   - connect/batch=N: concurrent edges (2 per GOMAXPROCS) report connects, each a connect op
//     plus a room join (100 rooms), applied in batches of N connects, as edges do. Metrics:
//     connects/s and updates/s (ops/s, two per connect).
//   - resolve/batch=N: concurrent readers resolve connected users N per call. Metric:
//     resolves/s (users resolved per second).
//
// Edges stay registered across rounds and connection ids never repeat, so every round adds
// new connections (no re-registration, no reaping in the background of a measurement).
func Bench(b *testing.B, s presence.Store) {
	ctx := context.Background()
	const par = 2 // goroutines per GOMAXPROCS
	nEdges := par * runtime.GOMAXPROCS(0)
	pool := make(chan edgeReg, nEdges)
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	var regs []edgeReg
	for i := 0; i < nEdges; i++ {
		name := fmt.Sprintf("bench-%s-edge-%d", run, i)
		ep, err := s.Register(ctx, name, 10*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		regs = append(regs, edgeReg{name, ep})
		pool <- edgeReg{name, ep}
	}
	b.Cleanup(func() {
		for _, r := range regs {
			_ = s.Deregister(ctx, r.name, r.epoch)
		}
	})
	var next atomic.Int64 // last connection id / user number handed out
	for _, batch := range []int{64, 256} {
		b.Run(fmt.Sprintf("connect/batch=%d", batch), func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(par)
			var errOnce sync.Once
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				e := <-pool
				defer func() { pool <- e }()
				ops := make([]presence.Op, 0, 2*batch)
				meta := map[string]string{"device": "web"}
				flush := func() {
					if len(ops) == 0 {
						return
					}
					if err := s.Apply(ctx, e.name, e.epoch, ops); err != nil {
						errOnce.Do(func() { b.Error(err) })
					}
					ops = ops[:0]
				}
				for pb.Next() {
					id := next.Add(1)
					ops = append(ops,
						presence.Op{Kind: presence.OpConnect, ConnID: uint64(id), User: fmt.Sprintf("u%d", id), Meta: meta},
						presence.Op{Kind: presence.OpJoin, ConnID: uint64(id), Room: fmt.Sprintf("room-%d", id%100)})
					if len(ops) >= 2*batch {
						flush()
					}
				}
				flush()
			})
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N)/el, "connects/s")
			b.ReportMetric(float64(2*b.N)/el, "updates/s")
		})
	}
	for _, batch := range []int{100} {
		b.Run(fmt.Sprintf("resolve/batch=%d", batch), func(b *testing.B) {
			total := next.Load()
			if total == 0 {
				b.Skip("no connected users (run the connect benchmarks first)")
			}
			b.ReportAllocs()
			b.SetParallelism(par)
			var errOnce sync.Once
			var seed atomic.Int64
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				users := make([]string, 0, batch)
				i := seed.Add(7919)
				for pb.Next() {
					i += 104729
					users = append(users, fmt.Sprintf("u%d", i%total+1))
					if len(users) == batch {
						m, err := s.ResolveUsers(ctx, users)
						if err != nil || len(m) == 0 {
							errOnce.Do(func() { b.Errorf("resolve: %d users, err %v", len(m), err) })
						}
						users = users[:0]
					}
				}
			})
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N)/el, "resolves/s")
		})
	}
}

type edgeReg struct {
	name  string
	epoch uint64
}
