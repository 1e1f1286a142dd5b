package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runRouter starts the command with args plus an admin address, waits for /readyz, then stops
// it with ctx and checks it exits cleanly.
func runRouter(t *testing.T, args ...string) {
	admin := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-listen", "127.0.0.1:0", "-admin", admin, "-log-level", "error"}, args...))
	}()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case err := <-done:
			t.Fatalf("router exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("router not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunMemory(t *testing.T) { runRouter(t, "-redis", "") }

func TestBadFlags(t *testing.T) {
	if err := run(context.Background(), []string{"-log-level", "loud"}); err == nil {
		t.Fatal("bad -log-level accepted")
	}
	if err := run(context.Background(), []string{"-nope"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}
