// Package cli holds what the edge binaries (edge/cmd/edge, edge/cmd/switchboard) share: the
// signal-driven main, flag defaults from environment variables, flag parsing and logging
// setup, and the edge's downstream subscription.
package cli

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/edge/cmd/internal/wire"
	"github.com/switchboard-io/switchboard/logic/bus"
)

// RunFunc is a binary's body: it serves until ctx ends and returns why it stopped.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main runs run with the command-line arguments and a context that ends on SIGINT or SIGTERM.
// It exits 0 when run succeeds or -help was asked for, else prints "name: err" to stderr and
// exits 1.
func Main(name string, run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	fmt.Fprintln(os.Stderr, name+":", err)
	os.Exit(1)
}

// Env returns the environment variable name, or def when it is unset or empty.
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// EnvDuration returns the environment variable name as a duration, or def when it is unset or
// not a duration.
func EnvDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// EnvInt returns the environment variable name as an int, or def when it is unset or not an
// integer.
func EnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// EnvBool returns the environment variable name as a bool (strconv.ParseBool), false when it
// is unset or not a bool.
func EnvBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

// Parse parses args into fs and refuses positional arguments.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// LogLevel is the level a -v flag selects: debug when verbose, else info.
func LogLevel(verbose bool) slog.Level {
	if verbose {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// Subscribe starts srv's downstream: deliveries to srv's topic and broadcasts in namespace go
// to srv.HandleDownstream, redelivered while the edge is not running yet. It is not bound to
// the binary's context: the signal ends that, and deliveries must keep reaching the edge's
// clients during the drain; close the result after srv's Shutdown.
func Subscribe(b bus.Bus, srv *edge.Server, namespace string, log *slog.Logger) (*wire.Downstream, error) {
	return wire.Subscribe(context.Background(), b, wire.Config{
		Edge:      srv.ID(),
		Namespace: namespace,
		Retryable: func(err error) bool { return errors.Is(err, edge.ErrNotReady) },
		Logger:    log.With("component", "wire"),
	}, srv.HandleDownstream)
}

// SubscribeRetry is Subscribe for a bus that may not be there yet (a broker starting, restarting
// or overloaded): a subscribe failing with bus.ErrUnavailable is retried with capped backoff
// until it succeeds or ctx ends, so an edge started before its broker comes up by itself, as a
// logic replica does. Other errors are returned at once.
func SubscribeRetry(ctx context.Context, b bus.Bus, srv *edge.Server, namespace string, log *slog.Logger) (*wire.Downstream, error) {
	backoff := 100 * time.Millisecond
	for {
		ds, err := Subscribe(b, srv, namespace, log)
		if err == nil || !errors.Is(err, bus.ErrUnavailable) {
			return ds, err
		}
		log.Warn("edge: bus unavailable, retrying the downstream subscribe", "in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("edge: downstream subscribe: %w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// ReusePort reports whether an edge listening on addr should set SO_REUSEPORT (every event
// loop accepts on its own listener, no hand-off of new connections between threads) when want
// says so. SO_REUSEPORT would let a second process bind the same port and share its
// connections: an address that is taken is refused, as a plain listener would refuse it. Port
// 0 would give every loop a different port, so it gets no SO_REUSEPORT.
func ReusePort(addr string, want bool) (bool, error) {
	if !want {
		return false, nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		return false, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false, fmt.Errorf("listen %s: %w", addr, err)
	}
	_ = ln.Close()
	return true, nil
}

// Pprof serves Go's profiles under /debug/pprof/ on mux, behind a bearer token when token is
// not empty (an edge's HTTP port is its public WebSocket port).
func Pprof(mux *http.ServeMux, token string) {
	guard := func(h http.HandlerFunc) http.HandlerFunc {
		if token == "" {
			return h
		}
		return func(w http.ResponseWriter, r *http.Request) {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("/debug/pprof/", guard(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", guard(pprof.Profile))
	mux.HandleFunc("/debug/pprof/trace", guard(pprof.Trace))
	mux.HandleFunc("/debug/pprof/symbol", guard(pprof.Symbol))
}
