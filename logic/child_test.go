package logic_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/router/presence"
)

// childReplicaEnv, set to a Pulsar namespace, makes the test binary run as a logic replica
// (TestPulsarReplicaKilled kills it with SIGKILL mid-stream). SB_PULSAR_URL is the broker.
const childReplicaEnv = "SB_LOGIC_TEST_CHILD_NS"

// seqRecorder handles "t.seq" frames (data: the frame's number) and reports each one to
// record before acknowledging it.
func seqRecorder(record func(user string, n int)) logic.Plugin {
	return funcPlugin{name: "seq", init: func(h *logic.Host) error {
		h.Handle("t.seq", func(_ context.Context, c *logic.Context) error {
			var n int
			if err := json.Unmarshal(c.Data, &n); err != nil {
				return err
			}
			record(c.User, n)
			return nil
		})
		return nil
	}}
}

// runChildReplica runs a replica that writes "user n unixnano" to stdout for every frame it
// handles (an unbuffered write, so the parent sees it even if killed right after) and "ready"
// once subscribed.
func runChildReplica() int {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: os.Getenv("SB_PULSAR_URL")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pres, _ := presence.NewMemoryStore(presence.MemoryConfig{})
	rt, err := logic.New(logic.Config{Bus: b, Presence: pres, Namespace: os.Getenv(childReplicaEnv), Consumers: 2,
		Plugins: []logic.Plugin{seqRecorder(func(user string, n int) {
			fmt.Fprintf(os.Stdout, "%s %d %d\n", user, n, time.Now().UnixNano())
		})}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-rt.Ready()
		fmt.Fprintln(os.Stdout, "ready")
	}()
	if err := rt.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
