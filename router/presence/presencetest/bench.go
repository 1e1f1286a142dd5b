package presencetest

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
)

// Bench measures presence throughput of s, shared by the store benchmarks and the gRPC
// service benchmark (router/client):
//
//   - connect/edges=E/batch=N: E edges report connects concurrently (each edge one Apply in
//     flight, as an edge's reporter does), each connect a connect op plus a room join (100
//     rooms), in batches of N connects. Metrics: connects/s and updates/s (ops/s, two per
//     connect).
//   - resolve/batch=N: 16 concurrent readers resolve connected users N per call. Metric:
//     resolves/s (users resolved per second).
//
// Besides wall-clock rates, it reports updates/cpu-s and resolves/cpu-s: operations per
// CPU-second spent by this process (edges, router, store) plus extCPU (CPU of the Redis
// server processes, when given). On a shared machine the wall-clock rate depends on what else
// runs; the per-CPU-second rate does much less.
//
// Edges stay registered across rounds and connection ids never repeat, so every round adds
// new connections (no re-registration, no reaping in the background of a measurement).
func Bench(b *testing.B, s presence.Store, extCPU func() time.Duration) {
	ext := func() time.Duration {
		if extCPU == nil {
			return 0
		}
		return extCPU()
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) + ext()
	}
	ctx := context.Background()
	const maxEdges = 16
	procs := runtime.GOMAXPROCS(0)
	nEdges := max(maxEdges, procs)
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
	for _, cs := range []struct{ edges, batch int }{{4, 64}, {4, 256}, {16, 64}, {16, 256}} {
		batch := cs.batch
		b.Run(fmt.Sprintf("connect/edges=%d/batch=%d", cs.edges, batch), func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(max(1, cs.edges/procs))
			var errOnce sync.Once
			start, cpu0, ext0 := time.Now(), cpu(), ext()
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
			el, used := time.Since(start).Seconds(), (cpu() - cpu0).Seconds()
			b.ReportMetric(float64(b.N)/el, "connects/s")
			b.ReportMetric(float64(2*b.N)/el, "updates/s")
			b.ReportMetric(float64(2*b.N)/used, "updates/cpu-s")
			if extCPU != nil {
				b.ReportMetric(float64((ext()-ext0).Microseconds())/float64(2*b.N), "redis-cpu-us/update")
			}
		})
	}
	for _, batch := range []int{100} {
		b.Run(fmt.Sprintf("resolve/batch=%d", batch), func(b *testing.B) {
			total := next.Load()
			if total == 0 {
				b.Skip("no connected users (run the connect benchmarks first)")
			}
			b.ReportAllocs()
			b.SetParallelism(max(1, 16/procs))
			var errOnce sync.Once
			var seed atomic.Int64
			start, cpu0 := time.Now(), cpu()
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
			el, used := time.Since(start).Seconds(), (cpu() - cpu0).Seconds()
			b.ReportMetric(float64(b.N)/el, "resolves/s")
			b.ReportMetric(float64(b.N)/used, "resolves/cpu-s")
		})
	}
}

type edgeReg struct {
	name  string
	epoch uint64
}

// RedisCPU returns a function summing used_cpu_user + used_cpu_sys (INFO cpu) of the Redis
// server, or of every Cluster master, behind c: Bench's extCPU. It counts everything those
// servers do, including other clients' work (a pessimistic figure on a shared server).
func RedisCPU(c redis.UniversalClient) func() time.Duration {
	parse := func(out string) float64 {
		var total float64
		for _, line := range strings.Split(out, "\n") {
			line = strings.TrimSpace(line)
			for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
				if v, ok := strings.CutPrefix(line, k); ok {
					f, _ := strconv.ParseFloat(v, 64)
					total += f
				}
			}
		}
		return total
	}
	return func() time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var mu sync.Mutex
		var total float64
		info := func(ctx context.Context, n *redis.Client) error {
			out, err := n.Info(ctx, "cpu").Result()
			mu.Lock()
			total += parse(out)
			mu.Unlock()
			return err
		}
		switch cc := c.(type) {
		case *redis.ClusterClient:
			_ = cc.ForEachMaster(ctx, info)
		case *redis.Client:
			_ = info(ctx, cc)
		}
		return time.Duration(total * float64(time.Second))
	}
}
