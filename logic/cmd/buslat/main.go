// Command buslat measures Pulsar's own publish→consume latency through the bus package
// (package logic/bus/buslat): it publishes N messages at a fixed rate (keys spread like user
// ids) to a fresh topic, consumes them with a Key_Shared subscription in the same process (one
// clock), and prints p50/p90/p99 of publish→handler latency and of publish→broker-ack latency
// as JSON, one object per batching setting.
//
//	source .run/env && go run ./logic/cmd/buslat -n 5000 -rate 500 -sweep
//
// The chat round trip (client → edge → Pulsar → logic → Pulsar → edge → client) crosses the
// bus twice; the goal compares it with this figure: p50 ≤ 2 × bus p50 + 2 ms.
//
// Figures measured with it, and the choice of PulsarConfig.BatchingDelay they led to, are in
// that field's comment (logic/bus/pulsar.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/buslat"
)

type output struct {
	BatchingDelay string `json:"batching_delay"`
	*buslat.Result
}

func main() {
	var cfg buslat.Config
	var url, delays string
	var sweep bool
	flag.StringVar(&url, "url", os.Getenv("SB_PULSAR_URL"), "Pulsar service URL (default $SB_PULSAR_URL)")
	flag.IntVar(&cfg.N, "n", 5000, "messages measured")
	flag.IntVar(&cfg.Warmup, "warmup", 500, "messages sent first and not measured")
	flag.IntVar(&cfg.Rate, "rate", 500, "messages per second")
	flag.IntVar(&cfg.Keys, "keys", 64, "distinct keys (user ids)")
	flag.IntVar(&cfg.Size, "size", 200, "payload bytes (≥ 16)")
	flag.StringVar(&delays, "batch-delay", "1ms", "comma-separated BatchingMaxPublishDelay values; \"off\" disables batching")
	flag.BoolVar(&sweep, "sweep", false, "measure batching off, 1ms and 10ms (overrides -batch-delay)")
	flag.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "give up waiting for deliveries after this long")
	flag.Parse()
	if sweep {
		delays = "off,1ms,10ms"
	}
	var ds []time.Duration
	for _, s := range strings.Split(delays, ",") {
		if s == "off" {
			ds = append(ds, -1)
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			fail(fmt.Errorf("bad -batch-delay %q", s))
		}
		ds = append(ds, d)
	}
	if url == "" {
		fail(errors.New("no -url and SB_PULSAR_URL is not set (source .run/env)"))
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = -1 // buslat.Config: zero means a default, negative none
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	for _, d := range ds {
		r, err := run(ctx, url, d, cfg)
		if err != nil {
			fail(err)
		}
		name := d.String()
		if d < 0 {
			name = "off"
		}
		_ = enc.Encode(output{name, r})
	}
}

func run(ctx context.Context, url string, delay time.Duration, cfg buslat.Config) (*buslat.Result, error) {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: url, BatchingDelay: delay})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return buslat.Run(ctx, b, cfg)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "buslat:", err)
	os.Exit(1)
}
