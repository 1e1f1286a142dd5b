// Package buslat measures a bus's own publish→consume latency: N messages at a fixed rate,
// keys spread like user ids, consumed by a Key_Shared subscription in the same process (one
// clock). cmd/buslat runs it against Pulsar from the command line; an end-to-end test or load
// generator can call Run in the same run as its own measurement, so that the chat round trip
// (which crosses the bus twice) is compared with the bus's figure measured under the same load.
package buslat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
)

// Config configures Run. Zero values mean the defaults.
type Config struct {
	// Topic to use. Zero means a fresh "persistent://public/default/buslat-<random>".
	Topic string
	// N is how many messages are measured. Zero means 5000.
	N int
	// Warmup messages are sent first and not measured. Zero means N/10; negative means none.
	Warmup int
	// Rate is messages per second. Zero means 500.
	Rate int
	// Keys is the number of distinct keys. Zero means 64.
	Keys int
	// Size is the payload size in bytes, at least 16. Zero means 200.
	Size int
	// Timeout bounds the wait for the last delivery. Zero means 60s.
	Timeout time.Duration
}

// Result is one run's figures, in milliseconds.
type Result struct {
	N      int     `json:"n"`
	Rate   int     `json:"rate_per_s"`
	Keys   int     `json:"keys"`
	Size   int     `json:"payload_bytes"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
	Mean   float64 `json:"mean_ms"`
	AckP50 float64 `json:"publish_ack_p50_ms"` // publish → done(nil): the broker accepted it
	AckP99 float64 `json:"publish_ack_p99_ms"`
	Errors int     `json:"publish_errors"`
}

// Run publishes through b and consumes with a Key_Shared subscription on the same bus, and
// returns the publish→handler latency distribution.
func Run(ctx context.Context, b bus.Bus, cfg Config) (*Result, error) {
	if cfg.N == 0 {
		cfg.N = 5000
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = cfg.N / 10
	} else if cfg.Warmup < 0 {
		cfg.Warmup = 0
	}
	if cfg.Rate == 0 {
		cfg.Rate = 500
	}
	if cfg.Keys == 0 {
		cfg.Keys = 64
	}
	if cfg.Size == 0 {
		cfg.Size = 200
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.N < 0 || cfg.Rate < 0 || cfg.Keys < 0 || cfg.Size < 16 {
		return nil, errors.New("buslat: negative N, Rate or Keys, or Size < 16")
	}
	if cfg.Topic == "" {
		rnd := make([]byte, 4)
		_, _ = rand.Read(rnd)
		cfg.Topic = "persistent://public/default/buslat-" + hex.EncodeToString(rnd)
	}
	total := cfg.Warmup + cfg.N

	var mu sync.Mutex
	lat := make([]time.Duration, 0, cfg.N)
	seen := make([]bool, total)
	all := make(chan struct{})
	count := 0
	sub, err := b.Subscribe(ctx, cfg.Topic, "buslat", bus.SubOptions{Mode: bus.KeyShared, FromLatest: true}, func(_ context.Context, d *bus.Delivery) error {
		now := time.Now()
		if len(d.Payload) < 16 {
			return nil
		}
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(d.Payload)))
		i := int(binary.BigEndian.Uint64(d.Payload[8:]))
		mu.Lock()
		defer mu.Unlock()
		if i < 0 || i >= total || seen[i] {
			return nil // a redelivery
		}
		seen[i] = true
		if i >= cfg.Warmup {
			lat = append(lat, now.Sub(sent))
		}
		if count++; count == total {
			close(all)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buslat: %w", err)
	}
	defer sub.Close()

	var ackMu sync.Mutex
	acks := make([]time.Duration, 0, cfg.N)
	errs := 0
	var firstErr error
	interval := time.Second / time.Duration(cfg.Rate)
	start := time.Now()
	for i := range total {
		if at := start.Add(time.Duration(i) * interval); time.Until(at) > 0 {
			t := time.NewTimer(time.Until(at))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		p := make([]byte, cfg.Size)
		sent := time.Now()
		binary.BigEndian.PutUint64(p, uint64(sent.UnixNano()))
		binary.BigEndian.PutUint64(p[8:], uint64(i))
		measured := i >= cfg.Warmup
		b.Publish(ctx, cfg.Topic, bus.Message{Key: "user-" + strconv.Itoa(i%cfg.Keys), Payload: p}, func(err error) {
			if err != nil {
				ackMu.Lock()
				if errs++; firstErr == nil {
					firstErr = err
				}
				ackMu.Unlock()
				mu.Lock()                    // never under ackMu: the end of Run takes mu, then ackMu
				if count++; count == total { // never delivered: do not wait for it
					close(all)
				}
				mu.Unlock()
				return
			}
			if measured {
				ackMu.Lock()
				acks = append(acks, time.Since(sent))
				ackMu.Unlock()
			}
		})
	}
	t := time.NewTimer(cfg.Timeout)
	defer t.Stop()
	select {
	case <-all:
	case <-t.C:
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("buslat: only %d of %d messages consumed within %v", count, total, cfg.Timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	ackMu.Lock()
	defer ackMu.Unlock()
	if len(lat) == 0 {
		return nil, fmt.Errorf("buslat: nothing delivered (%d publish errors, first: %v)", errs, firstErr)
	}
	r := &Result{N: cfg.N, Rate: cfg.Rate, Keys: cfg.Keys, Size: cfg.Size, Errors: errs}
	slices.Sort(lat)
	slices.Sort(acks)
	r.P50, r.P90, r.P99, r.Max = ms(Percentile(lat, 50)), ms(Percentile(lat, 90)), ms(Percentile(lat, 99)), ms(lat[len(lat)-1])
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	r.Mean = ms(sum / time.Duration(len(lat)))
	r.AckP50, r.AckP99 = ms(Percentile(acks, 50)), ms(Percentile(acks, 99))
	return r, nil
}

// Percentile is the p-th percentile (nearest rank) of sorted s; 0 when s is empty.
func Percentile(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
