//go:build integration

package bus_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
)

const killChildEnv = "BUSTEST_KILL_CHILD_TOPIC"

// TestPulsarConsumerProcessKilled: a Key_Shared consumer in another process is SIGKILLed
// mid-stream (no Close, no unsubscribe: the broker only sees its connection drop). Its
// unacknowledged messages are redelivered to the surviving consumer, every message is handled,
// and no key's messages are handled out of order (duplicates of what the dead process handled
// but had not yet acknowledged are allowed: at-least-once).
func TestPulsarConsumerProcessKilled(t *testing.T) {
	if topic := os.Getenv(killChildEnv); topic != "" {
		killChild(t, topic)
		return
	}
	svc, _ := pulsarEnv(t)
	topic := fmt.Sprintf("persistent://public/default/bustest-kill-%d", time.Now().UnixNano())
	b := newPulsar(t, bus.PulsarConfig{URL: svc})
	defer b.Close()

	type rec struct {
		key string
		seq int
	}
	var mu sync.Mutex
	var mine, theirs []rec
	sub, err := b.Subscribe(context.Background(), topic, "logic", bus.SubOptions{Mode: bus.KeyShared}, func(_ context.Context, d *bus.Delivery) error {
		n, _ := strconv.Atoi(string(d.Payload))
		mu.Lock()
		mine = append(mine, rec{d.Key, n})
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestPulsarConsumerProcessKilled$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+topic)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	ready, stuck, eof := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eof)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 1 && f[0] == "ready":
				close(ready)
			case len(f) == 1 && f[0] == "stuck":
				close(stuck)
			case len(f) == 3 && f[0] == "handled":
				n, _ := strconv.Atoi(f[2])
				mu.Lock()
				theirs = append(theirs, rec{f[1], n})
				mu.Unlock()
			}
		}
	}()
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("child: no %s within 30s", what)
		}
	}
	wait(ready, "ready")

	const keys, per = 16, 30
	errc := make(chan error, keys*per)
	for i := range per {
		for k := range keys {
			b.Publish(context.Background(), topic, bus.Message{Key: "user-" + strconv.Itoa(k), Payload: []byte(strconv.Itoa(i))}, func(err error) { errc <- err })
		}
	}
	for range keys * per {
		if err := <-errc; err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	wait(stuck, "stuck")
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed = true
	_ = cmd.Wait()
	wait(eof, "end of output")

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		// Per key: what the dead process handled, then what the survivor handled (a key
		// moves to the survivor only once its owner is gone).
		seqs := map[string][]int{}
		for _, r := range theirs {
			seqs[r.key] = append(seqs[r.key], r.seq)
		}
		for _, r := range mine {
			seqs[r.key] = append(seqs[r.key], r.seq)
		}
		nTheirs, nMine := len(theirs), len(mine)
		mu.Unlock()
		complete := len(seqs) == keys
		for k, ss := range seqs {
			high := -1
			for _, s := range ss {
				if s > high+1 {
					t.Fatalf("key %s handled #%d before #%d: %v (dead process handled %d messages)", k, s, high+1, ss, nTheirs)
				}
				high = max(high, s)
			}
			complete = complete && high == per-1
		}
		if complete {
			if nTheirs == 0 {
				t.Fatal("the killed process handled nothing: the test proved nothing")
			}
			t.Logf("killed process handled %d, survivor %d (of %d; duplicates are redeliveries)", nTheirs, nMine, keys*per)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every message handled within 60s after the kill (survivor handled %d)", nMine)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killChild is the consumer process TestPulsarConsumerProcessKilled kills: it handles 20
// messages, then blocks in its handler until it is killed.
func killChild(t *testing.T, topic string) {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: os.Getenv("SB_PULSAR_URL")})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	block := make(chan struct{})
	_, err = b.Subscribe(context.Background(), topic, "logic", bus.SubOptions{Mode: bus.KeyShared}, func(_ context.Context, d *bus.Delivery) error {
		if n++; n > 20 {
			fmt.Println("stuck")
			<-block // until SIGKILL
		}
		fmt.Printf("handled %s %s\n", d.Key, d.Payload)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	<-time.After(2 * time.Minute) // a watchdog, should the parent die without killing it
	os.Exit(2)
}
