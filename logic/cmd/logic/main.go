// Command logic is a stateless logic replica: it consumes client frames from Pulsar with a
// Key_Shared subscription, runs the echo, chat and danmaku plugins, resolves targets through
// the router and publishes deliveries to the edges' topics. Any number of replicas may run.
//
// The admin address (-admin, default 127.0.0.1:9102) serves /healthz (alive), /readyz (upstream
// subscribed, bus and router reachable, not draining), /stats (JSON), /metrics (Prometheus),
// the operator API and page under /admin/ (package logic/admin) and /debug/pprof/. /admin/ and
// pprof need "Authorization: Bearer $SB_ADMIN_TOKEN"; without a token the binary refuses to
// start unless -admin is a loopback address (then they are open to local users only).
//
// Every flag has an environment variable (shown in -help); flags win.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/admin"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/logic/plugins/echo"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/client"
	"github.com/switchboard-io/switchboard/router/slogtrace"
)

type options struct {
	pulsar, namespace, sub, router    string
	redis, redisCluster, admin, level string
	logFormat                         string
	moderators, adminToken, tokenFile string
	consumers, concurrency            int
	rate                              float64
	batching                          time.Duration
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("logic", flag.ContinueOnError)
	fs.StringVar(&o.pulsar, "pulsar", env("SB_PULSAR_URL", ""), "Pulsar service URL (SB_PULSAR_URL)")
	fs.StringVar(&o.namespace, "namespace", env("SB_NAMESPACE", ""), "Pulsar tenant/namespace; empty = public/default (SB_NAMESPACE)")
	fs.StringVar(&o.sub, "subscription", env("SB_LOGIC_SUBSCRIPTION", "sb-logic"), "upstream Key_Shared subscription (SB_LOGIC_SUBSCRIPTION)")
	fs.StringVar(&o.router, "router", env("SB_ROUTER_ADDR", ""), "router gRPC address (SB_ROUTER_ADDR)")
	fs.StringVar(&o.redis, "redis", env("SB_REDIS_ADDR", ""), "Redis for chat history (SB_REDIS_ADDR)")
	fs.StringVar(&o.redisCluster, "redis-cluster", env("SB_REDIS_CLUSTER_ADDRS", ""), "Redis Cluster seed addresses, comma-separated; wins over -redis unless only -redis is given as a flag (SB_REDIS_CLUSTER_ADDRS)")
	fs.StringVar(&o.admin, "admin", env("SB_LOGIC_ADMIN", "127.0.0.1:9102"), "admin HTTP address: /healthz, /readyz, /stats, /metrics, /admin/, /debug/pprof/ (SB_LOGIC_ADMIN)")
	fs.StringVar(&o.adminToken, "admin-token", env("SB_ADMIN_TOKEN", ""), "bearer token of the admin API under /admin/ and of /debug/pprof/; empty only allowed when -admin is a loopback address; prefer the env variable or -admin-token-file (a flag shows in ps) (SB_ADMIN_TOKEN)")
	fs.StringVar(&o.tokenFile, "admin-token-file", env("SB_ADMIN_TOKEN_FILE", ""), "file holding the admin token; wins over -admin-token (SB_ADMIN_TOKEN_FILE)")
	fs.StringVar(&o.level, "log-level", env("SB_LOG_LEVEL", "info"), "debug, info, warn, error (SB_LOG_LEVEL)")
	fs.StringVar(&o.logFormat, "log-format", env("SB_LOG_FORMAT", "text"), "text or json; json lines carry trace_id/span_id when logged in a span (SB_LOG_FORMAT)")
	fs.StringVar(&o.moderators, "moderators", env("SB_MODERATORS", ""), "danmaku moderator user ids, comma-separated (SB_MODERATORS)")
	fs.IntVar(&o.consumers, "consumers", 4, "upstream consumers in this replica")
	fs.IntVar(&o.concurrency, "concurrency", 64, "frames each upstream consumer handles at once (a user's frames stay in order)")
	fs.Float64Var(&o.rate, "rate", 50, "per-user frames per second over all types (burst 2x)")
	fs.DurationVar(&o.batching, "batching-delay", -1, "Pulsar producer batching delay (0 = the bus default, 1ms; negative: off). Off by default: logic has a producer per edge topic, a batching producer wakes every delay even when idle (1ms: ~1,000 wake-ups/s each), and key-based batches rarely fill at chat rates")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	// Flags win over the environment: an explicit -redis means that standalone Redis, even when
	// SB_REDIS_CLUSTER_ADDRS is exported (deploy/local's env file exports both, and `make
	// cluster` passes -redis; the cluster addresses from the env silently won before).
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["redis"] && !set["redis-cluster"] {
		o.redisCluster = ""
	}
	if o.pulsar == "" || o.router == "" {
		return o, errors.New("logic: -pulsar and -router are required")
	}
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return o, fmt.Errorf("logic: -admin-token-file: %w", err)
		}
		if o.adminToken = strings.TrimSpace(string(b)); o.adminToken == "" {
			return o, fmt.Errorf("logic: -admin-token-file %s is empty", o.tokenFile)
		}
	}
	if err := admin.CheckBind(o.admin, o.adminToken); err != nil {
		return o, err
	}
	return o, nil
}

func main() {
	o, err := parse(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(2)
	}
	log, err := slogtrace.NewLogger(os.Stderr, o.logFormat, o.level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "logic:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("logic: exit", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: o.pulsar, BatchingDelay: o.batching, Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()
	pres, err := client.New(client.Config{Addr: o.router, Logger: log})
	if err != nil {
		return err
	}
	defer pres.Close()
	store, closeStore, err := chatStore(o, log)
	if err != nil {
		return err
	}
	defer closeStore()
	var mods []string
	if o.moderators != "" {
		mods = strings.Split(o.moderators, ",")
	}
	metrics, err := admin.NewMetrics()
	if err != nil {
		return err
	}
	rt, err := logic.New(logic.Config{
		Bus: metrics.InstrumentBus(b), Presence: pres, Namespace: o.namespace, Subscription: o.sub, Consumers: o.consumers, Concurrency: o.concurrency,
		Plugins: []logic.Plugin{
			echo.Plugin{},
			chat.New(chat.Config{Store: store}),
			danmaku.New(danmaku.Config{Moderators: mods}),
		},
		// Metrics inside the limiter: rate-limited frames are not handler work.
		Middleware: []logic.Middleware{logic.RateLimit(logic.RateLimitConfig{Rate: o.rate}), metrics.Middleware()},
		Logger:     log,
	})
	if err != nil {
		return err
	}
	metrics.SetSource(rt)
	api, err := admin.New(admin.Config{Token: o.adminToken, Sender: rt.Sender(), Presence: pres, Logger: log})
	if err != nil {
		return err
	}
	ready := &admin.Readiness{Runtime: rt,
		Router: func(ctx context.Context) error { _, err := pres.Edges(ctx); return err },
		Bus:    func(ctx context.Context) error { return publishHealth(ctx, b, o.namespace) }}
	adm, err := serveAdmin(o.admin, rt, api, metrics, ready, log)
	if err != nil {
		return err
	}
	defer adm.Close()
	log.Info("logic: running", "pulsar", o.pulsar, "router", o.router, "admin", o.admin)
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(ctx) }()
	select {
	case err = <-runErr:
		return err
	case <-ctx.Done():
	}
	ready.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := rt.Shutdown(sctx); err != nil {
		return err
	}
	return <-runErr
}

func chatStore(o options, log *slog.Logger) (chat.Store, func(), error) {
	var c redis.UniversalClient
	switch {
	case o.redisCluster != "":
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(o.redisCluster, ",")})
	case o.redis != "":
		c = redis.NewClient(&redis.Options{Addr: o.redis})
	default:
		log.Warn("logic: no Redis configured: chat history is in memory, per replica")
		return chat.NewMemoryStore(0, 0), func() {}, nil
	}
	s, err := chat.NewRedisStore(chat.RedisConfig{Client: c})
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return s, func() { _ = c.Close() }, nil
}

func serveAdmin(addr string, rt *logic.Runtime, api *admin.API, metrics, ready http.Handler, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("logic: admin listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-rt.Ready():
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rt.Stats())
	})
	mux.Handle("GET /readyz", ready)
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/admin/", api)
	// pprof needs the admin token too: it reveals command lines and costs CPU.
	mux.Handle("/debug/pprof/", api.Require(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", api.Require(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", api.Require(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", api.Require(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", api.Require(http.HandlerFunc(pprof.Trace)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("logic: admin server", "err", err)
		}
	}()
	return srv, nil
}

// publishHealth publishes an empty message to the namespace's non-persistent health topic:
// nobody subscribes, the broker drops it, and its acknowledgement proves the bus is reachable.
func publishHealth(ctx context.Context, b bus.Bus, namespace string) error {
	ns := strings.Trim(namespace, "/")
	if ns == "" {
		ns = protocol.DefaultNamespace
	}
	done := make(chan error, 1)
	b.Publish(ctx, "non-persistent://"+ns+"/sb-health", bus.Message{Key: "logic"}, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
