// Command edge runs a production edge: WebSocket connections on gnet, client frames published
// to Pulsar, deliveries consumed from the edge's own Pulsar topic, presence reported to the
// router over gRPC, JWT authentication.
//
//	edge -addr 127.0.0.1:8081 -id edge-1 -pulsar pulsar://127.0.0.1:6650 \
//	     -router 127.0.0.1:7070 -jwt-secret-file /etc/switchboard/jwt.key
//
// The same address serves plain HTTP: /healthz (200 while serving, 503 once draining: balancers
// stop sending new clients), /stats (the edge's counters, JSON), and with -demo the demo page
// and, with -dev-tokens, a development token issuer at /auth/dev-token?user=<id>.
//
// Every flag has an environment variable (shown in -help); a flag on the command line wins.
// SIGINT or SIGTERM drains the edge: clients are told to move in paced, jittered waves over
// -drain, then the edge deregisters from presence and exits.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/edge/cmd/internal/cli"
	"github.com/switchboard-io/switchboard/edge/cmd/internal/wire"
	"github.com/switchboard-io/switchboard/edge/telemetry"
	"github.com/switchboard-io/switchboard/edge/web"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/router/client"
)

func main() { cli.Main("edge", run) }

type options struct {
	addr, id, path, pulsar, namespace, router string
	jwtSecret                                 []byte
	audience, adminToken                      string
	devAuth, devTokens, demo                  bool
	origins                                   []string
	loops, maxPerSource                       int
	sourceRate                                float64
	drain, moveJitter, lease, coalesce, hello time.Duration
	batching                                  time.Duration
	reusePort, pprof                          bool
	logLevel                                  slog.Level
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", cli.Env("SB_EDGE_ADDR", "127.0.0.1:8080"), "listen address (SB_EDGE_ADDR)")
	fs.StringVar(&o.id, "id", cli.Env("SB_EDGE_ID", ""), "edge id, [A-Za-z0-9._-]{1,64}, unique in the cluster; names its Pulsar topic (SB_EDGE_ID; empty: edge-<pid>)")
	fs.StringVar(&o.path, "path", cli.Env("SB_EDGE_PATH", "/ws"), "WebSocket path (SB_EDGE_PATH)")
	fs.StringVar(&o.pulsar, "pulsar", cli.Env("SB_PULSAR_URL", ""), "Pulsar service URL, required (SB_PULSAR_URL)")
	fs.StringVar(&o.namespace, "namespace", cli.Env("SB_NAMESPACE", ""), "Pulsar tenant/namespace of the topics (SB_NAMESPACE; empty: public/default)")
	fs.StringVar(&o.router, "router", cli.Env("SB_ROUTER_ADDR", ""), "router gRPC target, required: host:port or dns:///name:port (SB_ROUTER_ADDR)")
	secretFile := fs.String("jwt-secret-file", cli.Env("SB_JWT_SECRET_FILE", ""), "file holding the HS256 JWT secret (SB_JWT_SECRET_FILE; or the secret itself in SB_JWT_SECRET)")
	fs.StringVar(&o.audience, "jwt-audience", cli.Env("SB_JWT_AUDIENCE", ""), "required aud claim (SB_JWT_AUDIENCE; empty: not checked)")
	fs.BoolVar(&o.devAuth, "insecure-dev-auth", cli.EnvBool("SB_EDGE_INSECURE_DEV_AUTH"), "accept ?user=<id> without a token: development only (SB_EDGE_INSECURE_DEV_AUTH)")
	fs.BoolVar(&o.demo, "demo", cli.EnvBool("SB_EDGE_DEMO"), "serve the demo page at / (SB_EDGE_DEMO)")
	fs.BoolVar(&o.devTokens, "dev-tokens", cli.EnvBool("SB_EDGE_DEV_TOKENS"), "issue HS256 tokens for any user at /auth/dev-token?user=<id>: demos only (SB_EDGE_DEV_TOKENS)")
	origins := fs.String("origins", cli.Env("SB_EDGE_ORIGINS", ""), "comma-separated allowed Origins for browsers (SB_EDGE_ORIGINS; empty: any)")
	fs.IntVar(&o.loops, "loops", cli.EnvInt("SB_EDGE_LOOPS", 0), "event loops (SB_EDGE_LOOPS; 0: one per CPU)")
	fs.DurationVar(&o.drain, "drain", cli.EnvDuration("SB_EDGE_DRAIN", 10*time.Second), "drain window: clients are told to move over this span on SIGTERM (SB_EDGE_DRAIN)")
	fs.DurationVar(&o.moveJitter, "move-jitter", cli.EnvDuration("SB_EDGE_MOVE_JITTER", 5*time.Second), "upper bound of the reconnect delay hint in move frames (SB_EDGE_MOVE_JITTER)")
	fs.DurationVar(&o.lease, "lease", cli.EnvDuration("SB_EDGE_LEASE", 3*time.Second), "presence lease (SB_EDGE_LEASE)")
	fs.DurationVar(&o.hello, "welcome-wait", cli.EnvDuration("SB_EDGE_WELCOME_WAIT", time.Second), "longest a new connection's upgrade and welcome wait for the router to have it, so that a welcomed client is reachable (SB_EDGE_WELCOME_WAIT; negative: no wait)")
	fs.IntVar(&o.maxPerSource, "max-conns-per-source", cli.EnvInt("SB_EDGE_MAX_CONNS_PER_SOURCE", 0), "connections one remote IP may hold; over it 429 (SB_EDGE_MAX_CONNS_PER_SOURCE; 0: no cap — behind a balancer, cap at the balancer)")
	fs.Float64Var(&o.sourceRate, "source-handshake-rate", 0, "new connections per second per remote IP, burst 2x; over it 429 (0: no cap)")
	fs.StringVar(&o.adminToken, "admin-token", cli.Env("SB_ADMIN_TOKEN", ""), "bearer token for POST /admin/drain (SB_ADMIN_TOKEN; empty: no admin endpoint)")
	fs.DurationVar(&o.coalesce, "coalesce", cli.EnvDuration("SB_EDGE_COALESCE", 300*time.Millisecond), "room chatter (ordinary danmaku) to a connection is written at most once per this interval, several frames in one writev; a lone message goes at once; chat, acks and paid/moderator/system messages never wait (SB_EDGE_COALESCE; 0: one write per frame)")
	fs.BoolVar(&o.reusePort, "reuseport", cli.EnvBool("SB_EDGE_REUSEPORT"), "SO_REUSEPORT: every event loop accepts on its own listener: more handshakes per CPU-second, but a busy loop's own accept queue overflows in a reconnect storm (SB_EDGE_REUSEPORT; off for port 0; an address already in use is still an error)")
	fs.DurationVar(&o.batching, "batching-delay", cli.EnvDuration("SB_EDGE_BATCHING_DELAY", -1), "Pulsar producer batching delay of the upstream producer (SB_EDGE_BATCHING_DELAY; negative: off). Off by default: an edge's frames carry one key per user, so key-based batches rarely fill, and a batching producer wakes every delay even when idle (1ms: ~1,000 wake-ups/s per producer)")
	fs.BoolVar(&o.pprof, "pprof", cli.EnvBool("SB_EDGE_PPROF"), "serve Go's profiles under /debug/pprof/, behind -admin-token when set (SB_EDGE_PPROF)")
	verbose := fs.Bool("v", cli.EnvBool("SB_VERBOSE"), "debug logging (SB_VERBOSE)")
	if err := cli.Parse(fs, args); err != nil {
		return o, err
	}
	switch {
	case *secretFile != "":
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return o, fmt.Errorf("jwt secret: %w", err)
		}
		o.jwtSecret = []byte(strings.TrimSpace(string(b)))
	case os.Getenv("SB_JWT_SECRET") != "":
		o.jwtSecret = []byte(os.Getenv("SB_JWT_SECRET"))
	}
	if *origins != "" {
		for _, s := range strings.Split(*origins, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.origins = append(o.origins, s)
			}
		}
	}
	if o.pulsar == "" || o.router == "" {
		return o, errors.New("-pulsar and -router are required (SB_PULSAR_URL, SB_ROUTER_ADDR)")
	}
	if len(o.jwtSecret) == 0 && !o.devAuth {
		return o, errors.New("no authentication: give -jwt-secret-file (or SB_JWT_SECRET), or -insecure-dev-auth for development")
	}
	if o.devTokens && len(o.jwtSecret) == 0 {
		return o, errors.New("-dev-tokens needs a JWT secret to sign with")
	}
	o.logLevel = cli.LogLevel(*verbose)
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	// Tracing from the standard OTEL_* variables; nothing installed (no cost) when unset.
	stopTracing, err := telemetry.Setup(ctx, "switchboard-edge")
	if err != nil {
		return err
	}
	defer func() { _ = stopTracing(context.Background()) }()

	// HeldTimeout: a client hears within seconds that a frame's fate is unknown (1009) even while
	// the broker is down or restarting, instead of waiting for it to come back.
	// MaxPendingMessages: a reconnect storm publishes a connect event per client at once,
	// unbatched (one key per user), faster than a broker confirms them; the bus's default of
	// 4096 refused thousands of them in a 3,000-client storm against one edge (connects and
	// the previous storm's disconnects in flight), which the edge then retried. 32768 covers
	// a full edge (< 20,000 descriptors) reconnecting; HeldTimeout still bounds every wait.
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: o.pulsar, BatchingDelay: o.batching, HeldTimeout: 6 * time.Second,
		MaxPendingMessages: 32768, Logger: log.With("component", "pulsar")})
	if err != nil {
		return err
	}
	defer b.Close()
	rc, err := client.New(client.Config{Addr: o.router, CacheTTL: -1, Logger: log.With("component", "router-client")})
	if err != nil {
		return err
	}
	defer rc.Close()

	var draining atomic.Bool
	var srv *edge.Server
	// An operator drains the edge like SIGTERM does: stop accepting, paced moves, close.
	ctx, requestDrain := context.WithCancel(ctx)
	defer requestDrain()
	mux := http.NewServeMux()
	if o.adminToken != "" {
		mux.HandleFunc("POST /admin/drain", func(w http.ResponseWriter, r *http.Request) {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(o.adminToken)) != 1 {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			log.Warn("drain requested through the admin API", "remote", r.RemoteAddr)
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, "draining\n")
			requestDrain()
		})
	}
	if o.pprof {
		cli.Pprof(mux, o.adminToken)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(srv.Stats())
	})
	if o.devTokens {
		mux.Handle("GET /auth/dev-token", devTokens(o.jwtSecret, o.audience))
	}
	if o.demo {
		auth := "token"
		if len(o.jwtSecret) == 0 {
			auth = "dev"
		}
		mux.Handle("/", web.Handler(web.Config{WS: strings.TrimPrefix(o.path, "/"), Auth: auth}))
	}

	reusePort, err := cli.ReusePort(o.addr, o.reusePort)
	if err != nil {
		return err
	}
	srv, err = edge.New(edge.Config{
		ID:                  o.id,
		Addr:                o.addr,
		Path:                o.path,
		Loops:               o.loops,
		AllowedOrigins:      o.origins,
		MaxConnsPerSource:   o.maxPerSource,
		SourceHandshakeRate: o.sourceRate,
		JWTSecret:           o.jwtSecret,
		JWTAudience:         o.audience,
		InsecureDevAuth:     o.devAuth,
		Publisher:           wire.NewPublisher(b, o.namespace),
		Presence:            rc,
		PresenceLease:       o.lease,
		WelcomeWait:         o.hello,
		HTTPHandler:         mux,
		DrainWindow:         o.drain,
		MoveJitter:          o.moveJitter,
		WriteCoalesce:       o.coalesce,
		ReusePort:           reusePort,
		Logger:              log.With("component", "edge"),
	})
	if err != nil {
		return err
	}
	mux.Handle("GET /metrics", telemetry.MetricsHandler(srv))
	// Closed after Shutdown: deliveries keep reaching the edge's clients during the drain.
	ds, err := cli.SubscribeRetry(ctx, b, srv, o.namespace, log)
	if err != nil {
		return err
	}
	defer ds.Close()

	errc := make(chan error, 1)
	go func() { errc <- srv.Run(context.Background()) }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		return fmt.Errorf("edge: %w", err)
	}
	if srv.Addr() == "" {
		return fmt.Errorf("edge: %w", <-errc)
	}
	fmt.Fprintf(stdout, "edge %s: websocket ws://%s%s  health http://%s/healthz\n", srv.ID(), srv.Addr(), o.path, srv.Addr())

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err == nil {
			err = errors.New("stopped")
		}
		return fmt.Errorf("edge: %w", err)
	}
	draining.Store(true)
	log.Info("draining", "window", o.drain)
	sctx, cancel := context.WithTimeout(context.Background(), o.drain+30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	return <-errc
}

// devTokens issues HS256 tokens (sub = ?user=, valid one hour) to anyone: the demo's stand-in
// for a real identity provider.
func devTokens(secret []byte, audience string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if user == "" || len(user) > 128 {
			http.Error(w, "user required (1-128 characters)", http.StatusBadRequest)
			return
		}
		now := time.Now()
		claims := jwt.RegisteredClaims{Subject: user, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
		if audience != "" {
			claims.Audience = jwt.ClaimStrings{audience}
		}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			http.Error(w, "sign: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	})
}
