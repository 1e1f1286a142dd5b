// Package server serves a presence.Store over gRPC (the router service) and exposes /healthz,
// /readyz, /metrics and /debug/pprof/ on an admin HTTP address.
//
// Tracing: every RPC runs under the otelgrpc stats handler with the W3C trace-context and
// baggage propagators, so a span context sent by the client (router/client) is the parent of
// the server span and reaches the Store through ctx. Spans go to the global TracerProvider
// (a no-op unless the binary installs one).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/switchboard-io/switchboard/router/api"
	"github.com/switchboard-io/switchboard/router/internal/wire"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Config configures a Server. Store is required; zero values of the rest are defaults.
type Config struct {
	// Addr is the gRPC listen address. Zero means "127.0.0.1:7070". Port 0 picks a free port
	// (see Addr).
	Addr string
	// AdminAddr is the HTTP listen address of /healthz, /readyz, /metrics (presence call
	// counts and latency, see newMetrics) and /debug/pprof/ (unauthenticated: keep it on a
	// private interface). Zero means no admin server and no metrics. Port 0 picks a free port (see AdminAddr).
	AdminAddr string
	// Store is the presence store served. Required. Not closed by the server.
	Store presence.Store
	// Ready reports whether the store can serve (for /readyz). Zero means a Store.Edges call,
	// which reaches Redis for a RedisStore, under ReadyTimeout.
	Ready func(ctx context.Context) error
	// ReadyTimeout bounds one readiness check. Zero means 1s.
	ReadyTimeout time.Duration
	// EventBatch is the maximum number of events per Events stream message. Zero means 256.
	EventBatch int
	// MaxRecvMsgSize bounds a request (an Apply batch or a Sync). Zero means 64 MiB.
	MaxRecvMsgSize int
	// Logger receives start/stop and rare diagnostics. Nil means silent.
	Logger *slog.Logger
}

// Server is the router's gRPC service. Create with New, then Run.
type Server struct {
	api.UnimplementedRouterServer

	cfg   Config
	lis   net.Listener
	admin net.Listener
	grpc  *grpc.Server
	http  *http.Server

	// streams ends the Events streams at shutdown (GracefulStop waits for open streams).
	streams      context.Context
	cancelStream context.CancelFunc

	stopOnce sync.Once
	draining atomic.Bool // set when Shutdown starts: /readyz answers 503 while calls finish
}

// New validates cfg and opens the listeners (so Addr and AdminAddr are known before Run).
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("router/server: config: nil Store: %w", presence.ErrInvalid)
	}
	if cfg.ReadyTimeout < 0 || cfg.EventBatch < 0 || cfg.MaxRecvMsgSize < 0 {
		return nil, fmt.Errorf("router/server: config: negative value: %w", presence.ErrInvalid)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:7070"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = time.Second
	}
	if cfg.EventBatch == 0 {
		cfg.EventBatch = 256
	}
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Ready == nil {
		st := cfg.Store
		cfg.Ready = func(ctx context.Context) error { _, err := st.Edges(ctx); return err }
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("router/server: listen %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, lis: lis}
	if cfg.AdminAddr != "" {
		s.admin, err = net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			_ = lis.Close()
			return nil, fmt.Errorf("router/server: listen admin %s: %w", cfg.AdminAddr, err)
		}
		metrics, store, err := newMetrics(cfg.Store)
		if err != nil {
			_ = lis.Close()
			_ = s.admin.Close()
			return nil, err
		}
		s.cfg.Store = store // counted and timed from here on (Ready keeps the bare store)
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", s.healthz)
		mux.HandleFunc("/readyz", s.readyz)
		mux.Handle("GET /metrics", metrics)
		pprofMux(mux)
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	s.streams, s.cancelStream = context.WithCancel(context.Background())
	s.grpc = grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(Propagator()))),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	api.RegisterRouterServer(s.grpc, s)
	return s, nil
}

// Propagator is the text-map propagator of the router API: W3C trace context and baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Addr is the gRPC listen address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// AdminAddr is the admin HTTP listen address ("" without one).
func (s *Server) AdminAddr() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr().String()
}

// Run serves until ctx ends or Shutdown is called, then stops gracefully (bounded by 5s).
// It returns nil after a requested stop.
func (s *Server) Run(ctx context.Context) error {
	s.cfg.Logger.Info("router: serving", "addr", s.Addr(), "admin", s.AdminAddr())
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	n := 1
	if s.http != nil {
		n++
		go func() {
			err := s.http.Serve(s.admin)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		n--
		if errors.Is(first, grpc.ErrServerStopped) {
			first = nil
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(sctx)
	for ; n > 0; n-- {
		if err := <-errc; err != nil && first == nil && !errors.Is(err, grpc.ErrServerStopped) {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("router/server: %w", first)
	}
	return nil
}

// Shutdown ends the Events streams, lets unary calls in flight finish until ctx ends, then
// closes everything. Safe to call more than once and before Run.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.draining.Store(true)
		s.cancelStream()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
			<-done
		}
		if s.http != nil {
			if err := s.http.Shutdown(ctx); err != nil {
				_ = s.http.Close()
			}
		} else if s.admin != nil {
			_ = s.admin.Close()
		}
		_ = s.lis.Close()
		s.cfg.Logger.Info("router: stopped")
	})
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: draining\n"))
		return
	}
	if err := s.cfg.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// ---- RPCs ----

func (s *Server) Register(ctx context.Context, r *api.RegisterRequest) (*api.RegisterResponse, error) {
	if r.GetTtlMs() < 0 {
		return nil, status.Error(codes.InvalidArgument, "negative ttl")
	}
	ep, err := s.cfg.Store.Register(ctx, r.GetEdge(), time.Duration(r.GetTtlMs())*time.Millisecond)
	if err != nil {
		return nil, wire.Status(err)
	}
	return &api.RegisterResponse{Epoch: ep}, nil
}

func (s *Server) Renew(ctx context.Context, r *api.RenewRequest) (*api.RenewResponse, error) {
	if err := s.cfg.Store.Renew(ctx, r.GetEdge(), r.GetEpoch()); err != nil {
		return nil, wire.Status(err)
	}
	return &api.RenewResponse{}, nil
}

func (s *Server) Deregister(ctx context.Context, r *api.DeregisterRequest) (*api.DeregisterResponse, error) {
	if err := s.cfg.Store.Deregister(ctx, r.GetEdge(), r.GetEpoch()); err != nil {
		return nil, wire.Status(err)
	}
	return &api.DeregisterResponse{}, nil
}

func (s *Server) Apply(ctx context.Context, r *api.ApplyRequest) (*api.ApplyResponse, error) {
	if err := s.cfg.Store.Apply(ctx, r.GetEdge(), r.GetEpoch(), wire.FromOps(r.GetOps())); err != nil {
		return nil, wire.Status(err)
	}
	return &api.ApplyResponse{}, nil
}

func (s *Server) Sync(ctx context.Context, r *api.SyncRequest) (*api.SyncResponse, error) {
	conns := wire.FromConns(r.GetConns(), "")
	var rooms map[string][]uint64
	if len(r.GetRooms()) > 0 {
		rooms = make(map[string][]uint64, len(r.GetRooms()))
		for room, ids := range r.GetRooms() {
			rooms[room] = ids.GetIds()
		}
	}
	if err := s.cfg.Store.Sync(ctx, r.GetEdge(), r.GetEpoch(), conns, rooms); err != nil {
		return nil, wire.Status(err)
	}
	return &api.SyncResponse{}, nil
}

func (s *Server) ResolveUsers(ctx context.Context, r *api.ResolveUsersRequest) (*api.ResolveUsersResponse, error) {
	m, err := s.cfg.Store.ResolveUsers(ctx, r.GetUsers())
	if err != nil {
		return nil, wire.Status(err)
	}
	out := &api.ResolveUsersResponse{Users: make([]*api.UserConns, 0, len(m))}
	// Keep the request order (deduplicated) so the response is deterministic.
	for _, u := range r.GetUsers() {
		cs, ok := m[u]
		if !ok {
			continue
		}
		delete(m, u)
		wc := wire.Conns(cs)
		for _, c := range wc {
			c.User = "" // implied by UserConns.user
		}
		out.Users = append(out.Users, &api.UserConns{User: u, Conns: wc})
	}
	return out, nil
}

func (s *Server) RoomEdges(ctx context.Context, r *api.RoomEdgesRequest) (*api.RoomEdgesResponse, error) {
	re, err := s.cfg.Store.RoomEdges(ctx, r.GetRoom())
	if err != nil {
		return nil, wire.Status(err)
	}
	out := &api.RoomEdgesResponse{Edges: make([]*api.RoomEdge, len(re))}
	for i, e := range re {
		out.Edges[i] = &api.RoomEdge{Edge: e.Edge, Epoch: e.Epoch, Members: int64(e.Members)}
	}
	return out, nil
}

func (s *Server) RoomCounts(ctx context.Context, r *api.RoomCountsRequest) (*api.RoomCountsResponse, error) {
	m, err := s.cfg.Store.RoomCounts(ctx, r.GetRooms())
	if err != nil {
		return nil, wire.Status(err)
	}
	out := &api.RoomCountsResponse{Counts: make(map[string]int64, len(m))}
	for k, v := range m {
		out.Counts[k] = int64(v)
	}
	return out, nil
}

func (s *Server) Online(ctx context.Context, _ *api.OnlineRequest) (*api.OnlineResponse, error) {
	c, err := s.cfg.Store.Online(ctx)
	if err != nil {
		return nil, wire.Status(err)
	}
	out := &api.OnlineResponse{Connections: int64(c.Connections), Users: int64(c.Users), PerEdge: make(map[string]int64, len(c.PerEdge))}
	for k, v := range c.PerEdge {
		out.PerEdge[k] = int64(v)
	}
	return out, nil
}

func (s *Server) Edges(ctx context.Context, _ *api.EdgesRequest) (*api.EdgesResponse, error) {
	m, err := s.cfg.Store.Edges(ctx)
	if err != nil {
		return nil, wire.Status(err)
	}
	return &api.EdgesResponse{Edges: m}, nil
}

// Events subscribes to the store, confirms with an empty batch, then forwards events in
// batches of what is already queued (up to EventBatch). It ends with UNAVAILABLE when the
// store closes the subscription or the server shuts down.
func (s *Server) Events(_ *api.EventsRequest, stream grpc.ServerStreamingServer[api.EventBatch]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()
	ch, err := s.cfg.Store.Events(ctx)
	if err != nil {
		return wire.Status(err)
	}
	defer func() {
		cancel()
		for range ch { // the store closes ch after ctx ends
		}
	}()
	if err := stream.Send(&api.EventBatch{}); err != nil {
		return err
	}
	batch := &api.EventBatch{Events: make([]*api.Event, 0, s.cfg.EventBatch)}
	for {
		ev, ok := <-ch
		if !ok {
			if stream.Context().Err() != nil {
				return stream.Context().Err()
			}
			return status.Error(codes.Unavailable, "router: event subscription ended")
		}
		batch.Events = append(batch.Events[:0], wire.Event(ev))
	fill:
		for len(batch.Events) < s.cfg.EventBatch {
			select {
			case ev, ok := <-ch:
				if !ok {
					break fill
				}
				batch.Events = append(batch.Events, wire.Event(ev))
			default:
				break fill
			}
		}
		if err := stream.Send(batch); err != nil {
			return err
		}
	}
}
