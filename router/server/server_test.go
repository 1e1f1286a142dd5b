package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(t *testing.T, st presence.Store) *server.Server {
	t.Helper()
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Store: st, ReadyTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthReady(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	srv := run(t, mem)
	if code, body := get(t, "http://"+srv.AdminAddr()+"/healthz"); code != 200 {
		t.Fatalf("healthz %d %s", code, body)
	}
	if code, body := get(t, "http://"+srv.AdminAddr()+"/readyz"); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
}

// A router whose Redis is unreachable is alive but not ready.
func TestNotReadyWithoutRedis(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rc.Close()
	st, err := presence.NewRedisStore(presence.RedisConfig{Client: rc})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := run(t, st)
	if code, _ := get(t, "http://"+srv.AdminAddr()+"/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	code, body := get(t, "http://"+srv.AdminAddr()+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d %s, want 503", code, body)
	}
	t.Logf("readyz: %d %s", code, body)
}

func TestConfigInvalid(t *testing.T) {
	if _, err := server.New(server.Config{}); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("nil store: %v", err)
	}
}

// Shutdown before Run and twice is safe.
func TestShutdownIdempotent(t *testing.T) {
	mem, err := presence.NewMemoryStore(presence.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Store: mem})
	if err != nil {
		t.Fatal(err)
	}
	_ = srv.Shutdown(context.Background())
	_ = srv.Shutdown(context.Background())
	if err := srv.Run(context.Background()); err != nil {
		t.Fatalf("Run after Shutdown: %v", err)
	}
}
