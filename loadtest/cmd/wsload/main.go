// Command wsload is Switchboard's load generator: many WebSocket connections from several
// worker processes and 127.0.0.x source addresses, the scenarios idle, fanout, chat and storm,
// target CPU and RSS read from /proc, and a JSON result.
//
//	wsload -scenario fanout -protocol naive -target ws://127.0.0.1:8090/ws -pid $(pgrep -n hub) \
//	       -conns 5000 -rate 20 -size 100 -duration 10s -out fanout.json
//
// Every run is bounded (-max-duration) and stops by itself.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-io/switchboard/loadtest/internal/load"
)

func main() {
	os.Exit(run())
}

func run() int {
	var cfg load.Config
	var targets, pids, srcs, out string
	var workers int
	var worker, fork bool
	flag.StringVar(&cfg.Scenario, "scenario", "idle", "idle, fanout, chat, storm or reconnect")
	flag.StringVar(&cfg.Protocol, "protocol", "switchboard", "switchboard, naive or centrifugo")
	flag.StringVar(&cfg.Label, "label", "", "name of the system under test in results (default: protocol)")
	flag.StringVar(&targets, "target", "ws://127.0.0.1:8080/ws", "comma-separated ws:// URLs (loopback only); connections spread round-robin")
	flag.StringVar(&pids, "pid", "", "comma-separated pids of the target processes to measure (RSS, CPU)")
	flag.StringVar(&srcs, "src", "", "comma-separated local source addresses (default 127.0.0.2-127.0.0.17)")
	flag.IntVar(&cfg.Conns, "conns", 1000, "connections (idle, storm) or room members (fanout)")
	flag.IntVar(&cfg.Pairs, "pairs", 500, "chat pairs (two connections each)")
	flag.IntVar(&cfg.PerWorker, "per-worker", 18000, "max connections per worker process (fd limit 20,000)")
	flag.IntVar(&workers, "workers", 0, "worker processes (0: as many as -per-worker needs)")
	flag.BoolVar(&fork, "fork", false, "run even a single worker as a child process")
	flag.Float64Var(&cfg.ConnectRate, "connect-rate", 4000, "set-up connections per second, all workers")
	flag.IntVar(&cfg.Concurrency, "concurrency", 0, "dials in flight per worker (0: 256, storm 2000)")
	flag.DurationVar(&cfg.Heartbeat, "heartbeat", 25*time.Second, "client ping interval")
	flag.DurationVar(&cfg.Settle, "settle", 3*time.Second, "idle: wait after set-up before measuring")
	flag.DurationVar(&cfg.Hold, "hold", 15*time.Second, "idle: measurement window")
	flag.Float64Var(&cfg.Rate, "rate", 0, "fanout: messages/s from the publisher; chat: messages/s over all pairs (0: 20 / 1000)")
	flag.IntVar(&cfg.Publishers, "publishers", 1, "fanout: publishing connections (distinct users, round-robin; per-user rate limits)")
	flag.IntVar(&cfg.Size, "size", 100, "message text size in bytes (≥ 24)")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "fanout, chat: how long to send")
	flag.DurationVar(&cfg.Grace, "grace", 5*time.Second, "fanout, chat: max wait for deliveries after sending stops (ends early when all arrived)")
	flag.IntVar(&cfg.Retries, "retries", 0, "idle, fanout, reconnect set-up: retry a failed connection this many times (jittered backoff)")
	flag.DurationVar(&cfg.DialTimeout, "dial-timeout", 15*time.Second, "one dial + handshake + set-up step")
	flag.DurationVar(&cfg.MaxDuration, "max-duration", 15*time.Minute, "hard bound of the whole run")
	flag.StringVar(&cfg.Room, "room", "", "fanout room (default lt-room)")
	flag.StringVar(&cfg.JoinType, "join-type", "", "frame type that joins a room (default room.join)")
	flag.StringVar(&cfg.SendType, "send-type", "", "frame type that sends to a room (default danmaku.send)")
	flag.StringVar(&cfg.JWTSecret, "jwt-secret", os.Getenv("SB_JWT_SECRET"), "switchboard: sign HS256 tokens (sub = user) with this secret instead of ?user= (default $SB_JWT_SECRET)")
	flag.StringVar(&cfg.JWTAudience, "jwt-audience", os.Getenv("SB_JWT_AUDIENCE"), "aud claim of the -jwt-secret tokens (default $SB_JWT_AUDIENCE)")
	var restartCmd string
	flag.StringVar(&restartCmd, "restart-cmd", "", "reconnect: shell command that restarts the target; its last stdout line may list the new pids")
	flag.StringVar(&out, "out", "", "write the JSON result to this file ('-' for stdout)")
	flag.BoolVar(&worker, "worker", false, "internal: run as a worker of a coordinator (stdin/stdout)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if worker {
		if err := load.RunWorker(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "wsload worker:", err)
			return 1
		}
		return 0
	}

	cfg.Targets = split(targets)
	cfg.SourceIPs = split(srcs)
	for _, p := range split(pids) {
		n, err := strconv.Atoi(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "wsload: bad -pid %q\n", p)
			return 2
		}
		cfg.TargetPIDs = append(cfg.TargetPIDs, n)
	}
	if restartCmd != "" {
		cfg.RestartCommand = []string{"/bin/sh", "-c", restartCmd}
	}
	total := cfg.Conns
	if cfg.Scenario == load.ScenarioChat {
		total = 2 * cfg.Pairs
	}
	if workers > 0 {
		cfg.PerWorker = (total + workers - 1) / workers
		if cfg.Scenario == load.ScenarioFanout && workers > 1 {
			cfg.PerWorker += max(cfg.Publishers, 1)
		}
		if cfg.Scenario == load.ScenarioChat && cfg.PerWorker%2 == 1 {
			cfg.PerWorker++
		}
	}
	if cfg.PerWorker == 0 {
		cfg.PerWorker = 18000
	}
	cfg.InProcess = !fork && total < cfg.PerWorker

	res, err := load.Run(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		return 1
	}
	if out != "" {
		b, _ := json.Marshal(res) // compact: the histogram counts would take a line each
		b = append(b, '\n')
		if out == "-" {
			_, _ = os.Stdout.Write(b)
		} else if err := os.WriteFile(out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "wsload:", err)
			return 1
		}
	}
	return 0
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
