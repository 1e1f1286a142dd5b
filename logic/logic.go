package logic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Presence is what the runtime asks the router: where users and rooms live. presence.Store
// (memory, Redis) and the router's client implement it.
type Presence interface {
	ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error)
	RoomEdges(ctx context.Context, room string) ([]presence.RoomEdge, error)
	RoomCounts(ctx context.Context, rooms []string) (map[string]int, error)
}

// Handler handles one upstream event. ctx is bounded by Config.HandlerTimeout. Returning:
//   - nil: the frame is acknowledged (after the Context's publishes were accepted);
//   - a *protocol.Error: the client gets an "error" frame with its code; acknowledged;
//   - a *CloseError: the client's connection is closed with its code; acknowledged;
//   - a Transient error (or a bus/presence outage): the frame is nacked and redelivered, up to
//     Config.MaxRedeliveries times, then answered with ErrUnavailable;
//   - any other error: the client gets ErrInternal (the error is logged, rate-limited).
type Handler func(ctx context.Context, c *Context) error

// Middleware wraps a Handler: auth decisions, rate limits, metrics. The first of
// Config.Middleware is the outermost.
type Middleware func(Handler) Handler

// Plugin is an application module. Init registers its routes and hooks on the Host; it is
// called once, by New.
type Plugin interface {
	Name() string
	Init(h *Host) error
}

// Config configures New. Zero values mean the defaults stated per field.
type Config struct {
	// Bus carries upstream frames in and deliveries out. Required.
	Bus bus.Bus
	// Presence resolves users and rooms to edges. Required.
	Presence Presence
	// Plugins are initialised in order; connect and disconnect hooks run in this order.
	Plugins []Plugin
	// Middleware wraps every message handler (the first is the outermost). The runtime always
	// adds Recover outside them, so a panicking plugin never takes the replica down.
	Middleware []Middleware
	// Namespace is the Pulsar tenant/namespace of the topics. Zero means
	// protocol.DefaultNamespace.
	Namespace string
	// Subscription is the name of the Key_Shared subscription logic replicas share on the
	// upstream topic. Zero means "sb-logic".
	Subscription string
	// Consumers is how many consumers this replica opens on the subscription. Zero means 4.
	Consumers int
	// Concurrency is how many frames each consumer handles at once (bus.SubOptions.Concurrency):
	// a user's frames stay one at a time and in order, other users' frames run alongside. A
	// frame holds its slot while its handler waits on the network (a store, presence) and until
	// its deliveries are accepted by the broker, so Consumers × Concurrency bounds a replica's
	// frames in flight, and with it its throughput: a slot turns over ~50–100 times a second on
	// a loaded box (TestPulsarThroughput). Zero means 64.
	Concurrency int
	// HandlerTimeout bounds one event's handling including its publishes. Zero means 10s.
	HandlerTimeout time.Duration
	// MaxRedeliveries is how often a transiently failing frame is redelivered before the client
	// gets ErrUnavailable. Zero means 5.
	MaxRedeliveries int
	// NackDelay is the delay before a nacked frame comes back. Zero means 200ms.
	NackDelay time.Duration
	// TracerProvider makes the per-frame spans. Nil means otel's global provider (a no-op
	// unless the binary installs one); either way the traceparent is propagated.
	TracerProvider trace.TracerProvider
	// Logger receives rare diagnostics (rate-limited). Nil means silent.
	Logger *slog.Logger
}

func (c *Config) fill() error {
	if c.Bus == nil || c.Presence == nil {
		return errors.New("logic: config: Bus and Presence are required")
	}
	if c.Consumers < 0 || c.Concurrency < 0 || c.HandlerTimeout < 0 || c.MaxRedeliveries < 0 || c.NackDelay < 0 {
		return errors.New("logic: config: negative value")
	}
	if c.Subscription == "" {
		c.Subscription = "sb-logic"
	}
	if c.Consumers == 0 {
		c.Consumers = 4
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 10 * time.Second
	}
	if c.MaxRedeliveries == 0 {
		c.MaxRedeliveries = 5
	}
	if c.NackDelay == 0 {
		c.NackDelay = 200 * time.Millisecond
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Stats are the runtime's counters since New.
type Stats struct {
	Frames    uint64 // upstream events handled (acked or nacked)
	Errors    uint64 // error frames sent to clients
	Nacks     uint64 // events nacked for redelivery
	Malformed uint64 // undecodable upstream envelopes (acknowledged and dropped)
	Published uint64 // downstream envelopes published
}

// Runtime consumes upstream frames and runs plugins. Stateless: any number of replicas share
// the upstream subscription.
type Runtime struct {
	cfg        Config
	routes     map[string]Handler
	unknown    Handler
	onConnect  []Handler
	onDisconn  []Handler
	tasks      []func(ctx context.Context)
	tracer     trace.Tracer
	prop       propagation.TraceContext
	warn       *rate.Limiter
	background Sender
	spanOpts   []trace.SpanStartOption // the per-frame span's options, built once
	now        syncPublisher           // cfg.Bus, when it accepts on the caller's goroutine; else nil
	edgeTopics sync.Map                // edge id -> its topic name (a string built once per edge)
	nTopics    atomic.Int32            // entries in edgeTopics (capped by maxEdgeTopics)

	stats struct {
		frames, errors, nacks, malformed, published atomic.Uint64
	}

	mu       sync.Mutex
	started  bool               // guarded by mu
	shutdown bool               // guarded by mu: a Run after Shutdown returns at once
	stop     context.CancelFunc // guarded by mu; set by Run
	done     chan struct{}      // closed when Run returns
	ready    chan struct{}      // closed when Run's consumers are subscribed
}

// New validates cfg, initialises the plugins and returns a Runtime ready to Run.
func New(cfg Config) (*Runtime, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	r := &Runtime{
		cfg:    cfg,
		routes: make(map[string]Handler),
		tracer: cfg.TracerProvider.Tracer("github.com/switchboard-io/switchboard/logic"),
		warn:   rate.NewLimiter(rate.Every(time.Second), 5),
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
	}
	r.now, _ = cfg.Bus.(syncPublisher)
	r.background = Sender{rt: r}
	r.spanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	for _, p := range cfg.Plugins {
		h := &Host{rt: r, plugin: p.Name()}
		if err := p.Init(h); err != nil {
			return nil, fmt.Errorf("logic: plugin %s: %w", p.Name(), err)
		}
		if h.err != nil {
			return nil, fmt.Errorf("logic: plugin %s: %w", p.Name(), h.err)
		}
	}
	chain := func(h Handler) Handler {
		for i := len(cfg.Middleware) - 1; i >= 0; i-- {
			h = cfg.Middleware[i](h)
		}
		return Recover(cfg.Logger)(h)
	}
	for t, h := range r.routes {
		r.routes[t] = chain(h)
	}
	r.unknown = chain(func(_ context.Context, c *Context) error {
		return protocol.NewError(protocol.ErrUnknownType, "unknown type "+c.Type)
	})
	for i, h := range r.onConnect {
		r.onConnect[i] = Recover(cfg.Logger)(h)
	}
	for i, h := range r.onDisconn {
		r.onDisconn[i] = Recover(cfg.Logger)(h)
	}
	return r, nil
}

// Host is what a plugin's Init registers with.
type Host struct {
	rt     *Runtime
	plugin string
	err    error
}

// Handle routes frames of type typ (e.g. "chat.send") to h. A type belongs to one handler.
func (h *Host) Handle(typ string, fn Handler) {
	if _, dup := h.rt.routes[typ]; dup || typ == "" || fn == nil {
		h.err = errors.Join(h.err, fmt.Errorf("%w: %q", ErrDuplicateRoute, typ))
		return
	}
	h.rt.routes[typ] = fn
}

// OnConnect registers a connect hook. It may refuse the connection by returning a *CloseError
// (see Refuse) or join it to rooms (Context.Join). Hooks of all plugins run in plugin order;
// the first refusal wins.
func (h *Host) OnConnect(fn Handler) { h.rt.onConnect = append(h.rt.onConnect, fn) }

// OnDisconnect registers a disconnect hook (cleanup; its errors are logged only).
func (h *Host) OnDisconnect(fn Handler) { h.rt.onDisconn = append(h.rt.onDisconn, fn) }

// Go registers a background task started by Run; its ctx ends at Shutdown and Run waits for it
// to return. Use it for periodic pushes (e.g. online counts).
func (h *Host) Go(fn func(ctx context.Context)) { h.rt.tasks = append(h.rt.tasks, fn) }

// Sender returns a Sender for deliveries outside a frame (background tasks); each call waits
// for the bus to accept.
func (h *Host) Sender() *Sender { return h.rt.Sender() }

// Presence returns the runtime's presence (online counts, user lookups).
func (h *Host) Presence() Presence { return h.rt.cfg.Presence }

// Logger returns the runtime's logger with the plugin's name.
func (h *Host) Logger() *slog.Logger { return h.rt.cfg.Logger.With("plugin", h.plugin) }

// Sender returns a synchronous Sender for deliveries outside a frame. Safe for concurrent use.
func (r *Runtime) Sender() *Sender { s := r.background; return &s }

// Ready is closed once Run has subscribed to the upstream topic (a health check's signal).
func (r *Runtime) Ready() <-chan struct{} { return r.ready }

// Stats returns the counters.
func (r *Runtime) Stats() Stats {
	return Stats{Frames: r.stats.frames.Load(), Errors: r.stats.errors.Load(), Nacks: r.stats.nacks.Load(),
		Malformed: r.stats.malformed.Load(), Published: r.stats.published.Load()}
}

// Run subscribes to the upstream topic and handles frames until ctx ends or Shutdown is
// called; it returns after the consumers stopped (in-flight frames finish or are redelivered)
// and the background tasks returned.
func (r *Runtime) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return ErrStarted
	}
	r.started = true
	if r.shutdown {
		r.mu.Unlock()
		close(r.done)
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	r.stop = cancel
	r.mu.Unlock()
	defer close(r.done)
	defer cancel()

	topic := protocol.UpstreamTopic(r.cfg.Namespace)
	subs := make([]bus.Subscription, 0, r.cfg.Consumers)
	closeSubs := func() {
		for _, s := range subs {
			if err := s.Close(); err != nil {
				r.cfg.Logger.Warn("logic: close subscription", "err", err)
			}
		}
	}
	// A broker that is down or slow to create the topic (it just started, or it is overloaded)
	// is waited for with capped backoff: a replica must come up by itself once the bus does.
	backoff := 100 * time.Millisecond
	for len(subs) < r.cfg.Consumers {
		s, err := r.cfg.Bus.Subscribe(ctx, topic, r.cfg.Subscription,
			bus.SubOptions{Mode: bus.KeyShared, NackDelay: r.cfg.NackDelay, Concurrency: r.cfg.Concurrency}, r.handle)
		if err == nil {
			subs = append(subs, s)
			continue
		}
		if ctx.Err() != nil { // Shutdown (or ctx) ended Run while it was subscribing
			closeSubs()
			return nil
		}
		if !errors.Is(err, bus.ErrUnavailable) {
			closeSubs()
			return fmt.Errorf("logic: subscribe %s: %w", topic, err)
		}
		r.cfg.Logger.Warn("logic: bus unavailable, retrying subscribe", "topic", topic, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			closeSubs()
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	close(r.ready)
	var wg sync.WaitGroup
	for _, t := range r.tasks {
		wg.Go(func() { t(ctx) })
	}
	<-ctx.Done()
	closeSubs()
	wg.Wait()
	return nil
}

// Shutdown stops Run and waits for it to return, or for ctx to end. A Run that starts after
// Shutdown returns at once.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.shutdown = true
	stop, started := r.stop, r.started
	r.mu.Unlock()
	if !started {
		return nil
	}
	if stop != nil {
		stop()
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("logic: shutdown: %w", ctx.Err())
	}
}

// initialGlobal is otel's delegating global provider before anyone installed one: while
// otel.GetTracerProvider still returns it, its spans are no-ops.
var initialGlobal = otel.GetTracerProvider()

// tracingOn reports whether the runtime's spans may record: false for the no-op provider, and
// for the global one until a real provider is installed.
func (r *Runtime) tracingOn() bool {
	switch r.cfg.TracerProvider.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return false
	}
	return r.cfg.TracerProvider != initialGlobal || otel.GetTracerProvider() != initialGlobal
}

// handle is the bus handler: one upstream envelope. nil acks, an error nacks.
func (r *Runtime) handle(ctx context.Context, d *bus.Delivery) error {
	var up protocol.Upstream
	if err := protocol.DecodeUpstream(d.Payload, &up); err != nil {
		r.stats.malformed.Add(1)
		r.warnf("logic: malformed upstream envelope dropped", "id", d.ID, "err", err)
		return nil // poison: nobody to answer, redelivery cannot help
	}
	r.stats.frames.Add(1)
	// A graceful shutdown cancels the consumer's ctx; let the frame finish within the timeout
	// rather than fail half-way (an unfinished frame is redelivered anyway). The span's values
	// go in first, so that the handler gets the deadline ctx itself (see deadlineCtx).
	ctx = context.WithoutCancel(ctx)

	tp := up.Traceparent
	if p := d.Props[protocol.PropTraceparent]; p != "" {
		tp = p
	}
	// With tracing off and no trace context to propagate, the span would be a no-op without a
	// parent: skip it (its allocations were a few percent of a frame).
	if tp != "" || r.tracingOn() {
		if tp != "" {
			ctx = r.prop.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
		}
		// The span is named and labelled only when it records: with tracing off (the no-op
		// provider) a frame costs no name or attribute allocations.
		var span trace.Span
		ctx, span = r.tracer.Start(ctx, "logic", r.spanOpts...)
		defer span.End()
		if span.IsRecording() {
			switch up.Kind {
			case protocol.UpConnect:
				span.SetName("logic connect")
			case protocol.UpDisconnect:
				span.SetName("logic disconnect")
			default:
				span.SetName("logic " + up.Type)
			}
			span.SetAttributes(attribute.String("sb.user", up.User), attribute.String("sb.edge", up.Edge))
		}
		if sc := span.SpanContext(); sc.IsValid() {
			carrier := propagation.MapCarrier{}
			r.prop.Inject(ctx, carrier)
			tp = carrier["traceparent"]
		}
	}
	ctx, cancel := withDeadline(ctx, time.Now().Add(r.cfg.HandlerTimeout))
	defer cancel()

	c := &Context{Kind: up.Kind, Conn: Conn{Edge: up.Edge, Epoch: up.Epoch, ID: up.Conn}, User: up.User,
		Meta: up.Meta, Type: up.Type, ID: up.ID, Data: up.Data, Traceparent: tp,
		Redeliveries: d.Redeliveries, CloseCode: up.CloseCode}
	if up.TimeUnixNano > 0 {
		c.ReceivedAt = time.Unix(0, up.TimeUnixNano)
	}
	c.send = Sender{rt: r, pend: &c.pend, tp: tp, at: up.TimeUnixNano}

	var err error
	switch up.Kind {
	case protocol.UpConnect:
		for _, h := range r.onConnect {
			if err = h(ctx, c); err != nil {
				break
			}
		}
	case protocol.UpDisconnect:
		for _, h := range r.onDisconn {
			if herr := h(ctx, c); herr != nil && !IsTransient(herr) {
				r.warnf("logic: disconnect hook", "err", herr)
			} else if herr != nil {
				err = herr
			}
		}
	default:
		h := r.routes[c.Type]
		if h == nil {
			h = r.unknown
		}
		err = h(ctx, c)
	}
	perr := c.send.pend.wait()
	if err == nil && perr != nil {
		err = Transient(perr)
	}
	if err == nil {
		return nil
	}
	if IsTransient(err) && d.Redeliveries < r.cfg.MaxRedeliveries {
		r.stats.nacks.Add(1)
		r.warnf("logic: frame failed, to be redelivered", "kind", up.Kind, "type", c.Type, "user", c.User,
			"redeliveries", d.Redeliveries, "err", err)
		return err
	}
	return r.fail(ctx, c, err)
}

// fail answers a failed event for good: an error frame, or a close. It returns an error (nack)
// only when the answer itself could not be published and redeliveries remain.
func (r *Runtime) fail(ctx context.Context, c *Context, err error) error {
	s := Sender{rt: r, tp: c.send.tp, at: c.send.at}
	var ce *CloseError
	var pe *protocol.Error
	var out error
	switch {
	case errors.As(err, &ce):
		out = s.Close(ctx, c.Conn, ce.Code, ce.Reason)
	case c.Kind == protocol.UpConnect:
		r.warnf("logic: connect hook failed; refusing", "user", c.User, "err", err)
		out = s.Close(ctx, c.Conn, protocol.CloseInternal, "")
	case c.Kind == protocol.UpDisconnect:
		r.warnf("logic: disconnect hook failed", "user", c.User, "err", err)
		return nil
	default:
		f := protocol.ServerFrame{Type: protocol.TypeError, ID: c.ID}
		switch {
		case errors.As(err, &pe):
			f.Code, f.Message = pe.Code, pe.Message
		case IsTransient(err):
			f.Code, f.Message = protocol.ErrUnavailable, protocol.ErrUnavailable.String()
			r.warnf("logic: giving up after redeliveries", "type", c.Type, "err", err)
		default:
			f.Code, f.Message = protocol.ErrInternal, protocol.ErrInternal.String()
			r.warnf("logic: handler failed", "type", c.Type, "err", err)
		}
		if f.Message == "" {
			f.Message = f.Code.String()
		}
		r.stats.errors.Add(1)
		out = s.ToConn(ctx, c.Conn, Out{Frame: f, Priority: protocol.PrioritySystem})
	}
	if out != nil && c.Redeliveries < r.cfg.MaxRedeliveries {
		r.stats.nacks.Add(1)
		return out
	}
	return nil
}

func (r *Runtime) warnf(msg string, args ...any) {
	if r.warn.Allow() {
		r.cfg.Logger.Warn(msg, args...)
	}
}

// edgeTopic returns edge's downstream topic, built once per edge.
func (r *Runtime) edgeTopic(edge string) string {
	if t, ok := r.edgeTopics.Load(edge); ok {
		return t.(string)
	}
	t := protocol.EdgeTopic(r.cfg.Namespace, edge)
	if r.nTopics.Add(1) <= maxEdgeTopics { // edges restarted under new ids must not grow it forever
		r.edgeTopics.Store(edge, t)
	}
	return t
}

const maxEdgeTopics = 4096
