// Command router runs the presence service: a presence.Store (Redis, Redis Cluster, or in
// memory) served over gRPC, with /healthz and /readyz on an admin address.
//
//	router -listen 127.0.0.1:7070 -admin 127.0.0.1:7071 -redis 127.0.0.1:6379
//	router -redis 10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001     # several addresses: Cluster
//
// Every flag has an environment variable (shown in -help); a flag given on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/server"
	"github.com/switchboard-io/switchboard/router/slogtrace"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// run serves until ctx ends.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	listen := fs.String("listen", env("SB_ROUTER_LISTEN", "127.0.0.1:7070"), "gRPC listen address (SB_ROUTER_LISTEN)")
	admin := fs.String("admin", env("SB_ROUTER_ADMIN", "127.0.0.1:7071"), "admin HTTP address for /healthz, /readyz; empty: none (SB_ROUTER_ADMIN)")
	redisAddrs := fs.String("redis", env("SB_ROUTER_REDIS", os.Getenv("SB_REDIS_ADDR")),
		"Redis address; several comma-separated: Redis Cluster; empty: in-memory store (SB_ROUTER_REDIS, else SB_REDIS_ADDR)")
	cluster := fs.Bool("redis-cluster", env("SB_ROUTER_REDIS_CLUSTER", "") == "true", "use Redis Cluster even with one seed address (SB_ROUTER_REDIS_CLUSTER=true)")
	prefix := fs.String("redis-prefix", env("SB_ROUTER_REDIS_PREFIX", "sb:p:"), "prefix of every presence key (SB_ROUTER_REDIS_PREFIX)")
	lease := fs.Duration("lease", envDuration("SB_ROUTER_LEASE", presence.DefaultLeaseTTL), "edge lease when the edge asks for the default (SB_ROUTER_LEASE)")
	refresh := fs.Duration("refresh", envDuration("SB_ROUTER_REFRESH", 200*time.Millisecond), "lease-cache refresh and reap interval, below lease/2 (SB_ROUTER_REFRESH)")
	noReap := fs.Bool("no-reaper", false, "do not reap lapsed edges on this replica (another replica must)")
	logLevel := fs.String("log-level", env("SB_LOG_LEVEL", "info"), "debug, info, warn or error (SB_LOG_LEVEL)")
	logFormat := fs.String("log-format", env("SB_LOG_FORMAT", "text"), "text or json; json lines carry trace_id/span_id when logged in a span (SB_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := slogtrace.NewLogger(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}

	var store presence.Store
	var rc redis.UniversalClient
	if *redisAddrs == "" {
		log.Warn("router: no -redis: in-memory presence (one replica only)")
		s, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: *lease, ReapInterval: *refresh, Logger: log})
		if err != nil {
			return err
		}
		store = s
	} else {
		addrs := strings.Split(*redisAddrs, ",")
		if len(addrs) > 1 || *cluster {
			rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 64})
		} else {
			rc = redis.NewClient(&redis.Options{Addr: addrs[0], PoolSize: 64})
		}
		defer rc.Close()
		s, err := presence.NewRedisStore(presence.RedisConfig{Client: rc, Prefix: *prefix, LeaseTTL: *lease,
			RefreshInterval: *refresh, DisableReaper: *noReap, Logger: log})
		if err != nil {
			return err
		}
		store = s
	}
	defer store.Close()

	srv, err := server.New(server.Config{Addr: *listen, AdminAddr: *admin, Store: store, Logger: log})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
