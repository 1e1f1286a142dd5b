package load

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/loadtest/internal/naivehub"
)

// workerEnv makes the test binary act as a forked wsload worker (see TestFanoutForkedWorkers).
const workerEnv = "LOADTEST_AS_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := RunWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// startHub runs a naive hub on port 0 until the test ends.
func startHub(t *testing.T) string {
	t.Helper()
	h := naivehub.New(naivehub.Config{Addr: "127.0.0.1:0"})
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	return "ws://" + h.Addr() + "/ws"
}

func baseConfig(t *testing.T, scenario string) Config {
	return Config{
		Scenario:    scenario,
		Protocol:    "naive",
		Targets:     []string{startHub(t)},
		TargetPIDs:  []int{os.Getpid()}, // the hub runs in this process
		SourceIPs:   []string{"127.0.0.2", "127.0.0.3"},
		InProcess:   true,
		MaxDuration: time.Minute,
	}
}

func TestFanoutAgainstHub(t *testing.T) {
	cfg := baseConfig(t, ScenarioFanout)
	cfg.Conns, cfg.Rate, cfg.Duration, cfg.Grace, cfg.Size = 300, 50, time.Second, 20*time.Second, 64
	cfg.PerWorker = 200 // two in-process workers: exercises the split and the merge
	cfg.Publishers = 3
	res, err := Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Summary(res))
	if res.Workers != 2 {
		t.Errorf("workers = %d, want 2", res.Workers)
	}
	if res.Connected != 303 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("connected %d failed %d dropped %d, want 303/0/0", res.Connected, res.Failed, res.Dropped)
	}
	if res.Sent != 50 {
		t.Errorf("sent = %d, want 50", res.Sent)
	}
	if res.Expected != 50*300 || res.Received != res.Expected || res.Lost != 0 {
		t.Errorf("received %d of %d (lost %d), want all of %d", res.Received, res.Expected, res.Lost, 50*300)
	}
	if res.Latency.Count != res.Received || res.Latency.P99Ms <= 0 || len(res.Latency.Percentiles) == 0 {
		t.Errorf("latency %+v does not cover the deliveries", res.Latency)
	}
	if res.Target == nil || res.Target.RSSBytes <= 0 || res.Target.DeliveriesPerCPUSecond <= 0 {
		t.Errorf("target stats %+v", res.Target)
	}
}

func TestChatAgainstHub(t *testing.T) {
	cfg := baseConfig(t, ScenarioChat)
	cfg.Pairs, cfg.Rate, cfg.Duration, cfg.Grace = 100, 200, time.Second, 20*time.Second
	res, err := Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Summary(res))
	if res.Connected != 200 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("connected %d failed %d dropped %d", res.Connected, res.Failed, res.Dropped)
	}
	if res.Sent != 200 || res.Received != 200 || res.Lost != 0 {
		t.Errorf("sent %d received %d lost %d, want 200/200/0", res.Sent, res.Received, res.Lost)
	}
	if res.Latency.Count != 200 {
		t.Errorf("round trips measured = %d, want 200", res.Latency.Count)
	}
}

func TestIdleAndStormAgainstHub(t *testing.T) {
	cfg := baseConfig(t, ScenarioIdle)
	cfg.Conns, cfg.Settle, cfg.Hold, cfg.Heartbeat = 400, 100*time.Millisecond, time.Second, time.Second
	res, err := Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Summary(res))
	if res.Connected != 400 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("idle: connected %d failed %d dropped %d", res.Connected, res.Failed, res.Dropped)
	}
	if res.Target == nil || res.Target.RSSPerConnB == 0 {
		t.Errorf("idle: target stats %+v", res.Target)
	}

	cfg.Scenario, cfg.Conns = ScenarioStorm, 400
	res, err = Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Summary(res))
	if res.Connected != 400 || res.Failed != 0 || res.Latency.Count != 400 || res.AllConnectedMs <= 0 {
		t.Errorf("storm: connected %d failed %d handshakes timed %d all-connected %.1fms",
			res.Connected, res.Failed, res.Latency.Count, res.AllConnectedMs)
	}
}

func TestConfigRefusesRemoteTargets(t *testing.T) {
	for _, target := range []string{"ws://10.0.0.1:80/ws", "http://127.0.0.1/ws", "ws://example.com/ws"} {
		cfg := Config{Scenario: ScenarioIdle, Targets: []string{target}}
		if _, err := Run(context.Background(), cfg, nil); err == nil {
			t.Errorf("target %q accepted", target)
		}
	}
	if _, err := Run(context.Background(), Config{Scenario: "nope", Targets: []string{"ws://127.0.0.1/ws"}}, nil); err == nil {
		t.Error("unknown scenario accepted")
	}
}

func TestReconnectAfterHubRestart(t *testing.T) {
	h := naivehub.New(naivehub.Config{Addr: "127.0.0.1:0"})
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := h.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var restarted bool
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	cfg := Config{
		Scenario: ScenarioReconnect, Protocol: "naive", Targets: []string{"ws://" + addr + "/ws"},
		SourceIPs: []string{"127.0.0.2"}, InProcess: true, MaxDuration: time.Minute,
		Conns: 200, Hold: 20 * time.Second,
		Restart: func(context.Context) ([]int, error) {
			cancel() // stop the hub: every connection drops
			if err := <-done; err != nil {
				return nil, err
			}
			h2 := naivehub.New(naivehub.Config{Addr: addr})
			if err := h2.Listen(); err != nil {
				return nil, err
			}
			ctx, cancel = context.WithCancel(context.Background())
			go func() { done <- h2.Run(ctx) }()
			restarted = true
			return nil, nil
		},
	}
	res, err := Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Summary(res))
	if !restarted {
		t.Fatal("restart hook not called")
	}
	if res.Connected != 200 || res.Dropped != 200 || res.Reconnected != 200 {
		t.Errorf("connected %d dropped %d reconnected %d, want 200 each", res.Connected, res.Dropped, res.Reconnected)
	}
	if res.Latency.Count != 200 || res.AllConnectedMs <= 0 {
		t.Errorf("reconnect latency n=%d, all-connected %.1f ms", res.Latency.Count, res.AllConnectedMs)
	}
}

// TestFanoutForkedWorkers runs the workers as child processes (the test binary re-executed),
// exercising the stdin/stdout protocol between the coordinator and its workers.
func TestFanoutForkedWorkers(t *testing.T) {
	t.Setenv(workerEnv, "1")
	cfg := baseConfig(t, ScenarioFanout)
	cfg.InProcess = false
	cfg.WorkerCommand = []string{os.Args[0]}
	cfg.Conns, cfg.PerWorker, cfg.Rate, cfg.Duration, cfg.Grace = 200, 120, 20, time.Second, 20*time.Second
	res, err := Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Summary(res))
	if res.Workers != 2 || res.Connected != 201 || res.Failed != 0 {
		t.Errorf("workers %d connected %d failed %d, want 2/201/0", res.Workers, res.Connected, res.Failed)
	}
	if res.Sent != 20 || res.Received != 20*200 || res.Latency.Count != res.Received {
		t.Errorf("sent %d received %d (latency n=%d), want 20 and 4000", res.Sent, res.Received, res.Latency.Count)
	}
}
