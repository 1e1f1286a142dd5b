// Command switchboard runs the whole system in one process on embedded defaults: an edge
// (development auth: a client names itself with ?user=<id>), in-memory presence, an in-memory
// bus and the logic runtime with the echo, chat and danmaku plugins, plus the demo page.
//
//	go run ./edge/cmd/switchboard              # demo page http://127.0.0.1:8080/, WebSocket /ws
//	go run ./edge/cmd/switchboard -addr :9000  # another address; port 0 picks a free port
//
// The code paths are the cluster's: the edge publishes client frames to the upstream topic and
// consumes its own topic, logic resolves users and rooms through presence. Only the bus and the
// presence store are in memory. SIGINT or SIGTERM drains the edge (clients get "move") and
// stops.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/switchboard-io/switchboard/edge"
	"github.com/switchboard-io/switchboard/edge/cmd/internal/cli"
	"github.com/switchboard-io/switchboard/edge/cmd/internal/wire"
	"github.com/switchboard-io/switchboard/edge/telemetry"
	"github.com/switchboard-io/switchboard/edge/web"
	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/router/presence"
)

func main() { cli.Main("switchboard", run) }

type options struct {
	addr   string
	id     string
	loops  int
	drain  time.Duration
	pace   time.Duration
	hello  time.Duration
	rport  bool
	pprof  bool
	logLvl slog.Level
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address for the demo page and the WebSocket endpoint /ws (port 0: a free port)")
	fs.StringVar(&o.id, "id", "embedded", "edge id")
	fs.IntVar(&o.loops, "loops", 0, "edge event loops (0: one per CPU)")
	fs.DurationVar(&o.drain, "drain", 2*time.Second, "on SIGINT/SIGTERM, span over which clients are told to move")
	fs.DurationVar(&o.hello, "welcome-wait", time.Second, "longest a new connection's upgrade and welcome wait for presence to have it (negative: no wait)")
	fs.DurationVar(&o.pace, "coalesce", 300*time.Millisecond, "room chatter (ordinary danmaku) to a connection is written at most once per this interval, several frames in one writev; a lone message goes at once (0: one write per frame)")
	fs.BoolVar(&o.rport, "reuseport", false, "SO_REUSEPORT: every event loop accepts on its own listener, no hand-off of new connections between threads: more handshakes per CPU-second, but a busy loop's own accept queue overflows in a reconnect storm (off for port 0; an address already in use is still an error)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve Go's profiles under /debug/pprof/ and the edge's counters as JSON at /debug/edge")
	verbose := fs.Bool("v", false, "debug logging")
	if err := cli.Parse(fs, args); err != nil {
		return o, err
	}
	o.logLvl = cli.LogLevel(*verbose)
	return o, nil
}

// run serves until ctx ends, then shuts down in order: edge (drain), downstream, logic, bus,
// presence. It prints the served addresses to stdout once listening.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLvl}))
	// Tracing is off unless OTEL_* variables ask for an exporter (then zero cost when off).
	stopTracing, err := telemetry.Setup(ctx, "switchboard")
	if err != nil {
		return err
	}
	defer func() { _ = stopTracing(context.Background()) }()

	pres, err := presence.NewMemoryStore(presence.MemoryConfig{Logger: log.With("component", "presence")})
	if err != nil {
		return err
	}
	defer pres.Close()
	b, err := bus.NewMemory(bus.MemoryConfig{})
	if err != nil {
		return err
	}
	defer b.Close()

	ps := plugins()
	rt, err := logic.New(logic.Config{
		Bus:      b,
		Presence: pres,
		Plugins:  ps,
		Logger:   log.With("component", "logic"),
	})
	if err != nil {
		return err
	}
	if o.rport, err = cli.ReusePort(o.addr, o.rport); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler(web.Config{}))
	srv, err := edge.New(edge.Config{
		ID:              o.id,
		Addr:            o.addr,
		Path:            "/ws",
		Loops:           o.loops,
		InsecureDevAuth: true,
		Publisher:       wire.NewPublisher(b, ""),
		Presence:        pres,
		HTTPHandler:     mux,
		DrainWindow:     o.drain,
		MoveJitter:      o.drain,
		DrainGrace:      time.Second,
		WriteCoalesce:   o.pace,
		WelcomeWait:     o.hello,
		ReusePort:       o.rport,
		Logger:          log.With("component", "edge"),
	})
	if err != nil {
		return err
	}
	mux.Handle("GET /metrics", telemetry.MetricsHandler(srv))
	if o.pprof {
		cli.Pprof(mux, "")
		mux.HandleFunc("GET /debug/edge", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(srv.Stats())
		})
	}
	// Closed after Shutdown: deliveries keep reaching the edge's clients during the drain.
	ds, err := cli.Subscribe(b, srv, "", log)
	if err != nil {
		return err
	}
	defer ds.Close()

	errc := make(chan error, 2)
	logicCtx, stopLogic := context.WithCancel(context.Background())
	defer stopLogic()
	go func() { errc <- wrap("logic", rt.Run(logicCtx)) }()
	// The edge gets its own context: a signal drains it through Shutdown rather than closing
	// every connection at once.
	go func() { errc <- wrap("edge", srv.Run(context.Background())) }()

	select {
	case <-srv.Ready():
	case err := <-errc:
		shutdown(srv, rt, log)
		return err
	case <-ctx.Done():
		shutdown(srv, rt, log)
		return nil
	}
	if srv.Addr() == "" { // Ready is also closed when the engine failed to start
		shutdown(srv, rt, log)
		return <-errc
	}
	addr := srv.Addr()
	fmt.Fprintf(stdout, "switchboard: demo page  http://%s/\n", addr)
	fmt.Fprintf(stdout, "switchboard: websocket  ws://%s/ws  (development auth: ?user=<id>)\n", addr)
	fmt.Fprintf(stdout, "switchboard: edge %q, in-memory bus and presence, plugins %s; Ctrl-C stops\n", o.id, names(ps))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	shutdown(srv, rt, log)
	return runErr
}

func shutdown(srv *edge.Server, rt *logic.Runtime, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("edge shutdown", "err", err)
	}
	if err := rt.Shutdown(ctx); err != nil {
		log.Warn("logic shutdown", "err", err)
	}
}

func wrap(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%s stopped", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}
