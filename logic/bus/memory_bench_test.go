package bus_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/switchboard-io/switchboard/logic/bus"
)

// BenchmarkMemoryPublishConsume measures the in-memory bus end to end: Publish, append, a
// Key_Shared dispatch to `consumers` consumers, handler, ack.
func BenchmarkMemoryPublishConsume(b *testing.B) {
	for _, consumers := range []int{1, 4} {
		b.Run(fmt.Sprintf("consumers=%d", consumers), func(b *testing.B) {
			b.ReportAllocs()
			m, err := bus.NewMemory(bus.MemoryConfig{QueueSize: 1 << 16, MaxBacklog: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			var got atomic.Int64
			all := make(chan struct{})
			target := int64(b.N)
			for range consumers {
				if _, err := m.Subscribe(context.Background(), "t", "s", bus.SubOptions{Mode: bus.KeyShared}, func(context.Context, *bus.Delivery) error {
					if got.Add(1) == target {
						close(all)
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			keys := make([]string, 256)
			for i := range keys {
				keys[i] = "user-" + strconv.Itoa(i)
			}
			payload := make([]byte, 200)
			var pending atomic.Int64
			b.ResetTimer()
			for i := range b.N {
				for pending.Load() > 30000 { // stay under the queue bound
					runtimeGosched()
				}
				pending.Add(1)
				m.Publish(context.Background(), "t", bus.Message{Key: keys[i%len(keys)], Payload: payload}, func(err error) {
					pending.Add(-1)
					if err != nil {
						b.Error(err)
					}
				})
			}
			<-all
		})
	}
}

func runtimeGosched() { runtime.Gosched() }
