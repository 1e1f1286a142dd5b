// Command buslat measures Pulsar's own publish→consume latency through the bus package: it
// publishes N messages at a fixed rate (keys spread like user ids) to a fresh topic, consumes
// them with a Key_Shared subscription in the same process (one clock), and prints p50/p90/p99
// of publish→handler latency and of publish→broker-ack latency as JSON, one object per
// batching setting.
//
//	source .run/env && go run ./logic/cmd/buslat -n 5000 -rate 2000 -sweep
//
// The chat round trip (client → edge → Pulsar → logic → Pulsar → edge → client) crosses the
// bus twice; the goal compares it with this figure: p50 ≤ 2 × bus p50 + 2 ms.
//
// Figures measured with it, and the choice of PulsarConfig.BatchingDelay they led to, are in
// that field's comment (logic/bus/pulsar.go).
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
)

type config struct {
	url     string
	n       int
	warmup  int
	rate    int
	keys    int
	size    int
	delays  []time.Duration // batching delays; negative = off
	timeout time.Duration
}

// result is one run's figures, in milliseconds.
type result struct {
	BatchingDelay string  `json:"batching_delay"`
	N             int     `json:"n"`
	Rate          int     `json:"rate_per_s"`
	Keys          int     `json:"keys"`
	Size          int     `json:"payload_bytes"`
	P50           float64 `json:"p50_ms"`
	P90           float64 `json:"p90_ms"`
	P99           float64 `json:"p99_ms"`
	Max           float64 `json:"max_ms"`
	Mean          float64 `json:"mean_ms"`
	AckP50        float64 `json:"publish_ack_p50_ms"`
	AckP99        float64 `json:"publish_ack_p99_ms"`
	Errors        int     `json:"publish_errors"`
}

func main() {
	var cfg config
	var delays string
	var sweep bool
	flag.StringVar(&cfg.url, "url", os.Getenv("SB_PULSAR_URL"), "Pulsar service URL (default $SB_PULSAR_URL)")
	flag.IntVar(&cfg.n, "n", 5000, "messages measured")
	flag.IntVar(&cfg.warmup, "warmup", 500, "messages sent first and not measured")
	flag.IntVar(&cfg.rate, "rate", 2000, "messages per second")
	flag.IntVar(&cfg.keys, "keys", 64, "distinct keys (user ids)")
	flag.IntVar(&cfg.size, "size", 200, "payload bytes (≥ 16)")
	flag.StringVar(&delays, "batch-delay", "1ms", "comma-separated BatchingMaxPublishDelay values; \"off\" disables batching")
	flag.BoolVar(&sweep, "sweep", false, "measure batching off, 1ms and 10ms (overrides -batch-delay)")
	flag.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "give up waiting for deliveries after this long")
	flag.Parse()
	if sweep {
		delays = "off,1ms,10ms"
	}
	for _, s := range strings.Split(delays, ",") {
		if s == "off" {
			cfg.delays = append(cfg.delays, -1)
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			fail(fmt.Errorf("bad -batch-delay %q", s))
		}
		cfg.delays = append(cfg.delays, d)
	}
	if cfg.url == "" {
		fail(errors.New("no -url and SB_PULSAR_URL is not set (source .run/env)"))
	}
	if cfg.n <= 0 || cfg.rate <= 0 || cfg.keys <= 0 || cfg.size < 16 || cfg.warmup < 0 {
		fail(errors.New("-n, -rate, -keys must be positive, -size ≥ 16, -warmup ≥ 0"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	for _, d := range cfg.delays {
		r, err := run(ctx, cfg, d)
		if err != nil {
			fail(err)
		}
		_ = enc.Encode(r)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "buslat:", err)
	os.Exit(1)
}

func run(ctx context.Context, cfg config, delay time.Duration) (*result, error) {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: cfg.url, BatchingDelay: delay})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	topic := "persistent://public/default/buslat-" + hex.EncodeToString(rnd)
	total := cfg.warmup + cfg.n

	var mu sync.Mutex
	lat := make([]time.Duration, 0, cfg.n)
	seen := make([]bool, total)
	all := make(chan struct{})
	count := 0
	sub, err := b.Subscribe(ctx, topic, "buslat", bus.SubOptions{Mode: bus.KeyShared}, func(_ context.Context, d *bus.Delivery) error {
		now := time.Now()
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(d.Payload)))
		i := int(binary.BigEndian.Uint64(d.Payload[8:]))
		mu.Lock()
		defer mu.Unlock()
		if i < 0 || i >= total || seen[i] {
			return nil
		}
		seen[i] = true
		if i >= cfg.warmup {
			lat = append(lat, now.Sub(sent))
		}
		if count++; count == total {
			close(all)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer sub.Close()

	var ackMu sync.Mutex
	acks := make([]time.Duration, 0, cfg.n)
	errs := 0
	interval := time.Second / time.Duration(cfg.rate)
	start := time.Now()
	for i := range total {
		if at := start.Add(time.Duration(i) * interval); time.Until(at) > 0 {
			time.Sleep(time.Until(at))
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p := make([]byte, cfg.size)
		sent := time.Now()
		binary.BigEndian.PutUint64(p, uint64(sent.UnixNano()))
		binary.BigEndian.PutUint64(p[8:], uint64(i))
		key := "user-" + strconv.Itoa(i%cfg.keys)
		measured := i >= cfg.warmup
		b.Publish(ctx, topic, bus.Message{Key: key, Payload: p}, func(err error) {
			ackMu.Lock()
			defer ackMu.Unlock()
			if err != nil {
				errs++
				return
			}
			if measured {
				acks = append(acks, time.Since(sent))
			}
		})
	}
	select {
	case <-all:
	case <-time.After(cfg.timeout):
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("only %d of %d messages consumed within %v", count, total, cfg.timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	ackMu.Lock()
	defer ackMu.Unlock()
	name := delay.String()
	if delay < 0 {
		name = "off"
	}
	r := &result{BatchingDelay: name, N: cfg.n, Rate: cfg.rate, Keys: cfg.keys, Size: cfg.size, Errors: errs}
	slices.Sort(lat)
	slices.Sort(acks)
	r.P50, r.P90, r.P99, r.Max = ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), ms(lat[len(lat)-1])
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	r.Mean = ms(sum / time.Duration(len(lat)))
	r.AckP50, r.AckP99 = ms(pct(acks, 50)), ms(pct(acks, 99))
	return r, nil
}

// pct is the p-th percentile of sorted s (nearest rank).
func pct(s []time.Duration, p int) time.Duration {
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
