// Package logic is Switchboard's application tier: a stateless runtime that consumes client
// frames from the bus, runs plugins, and addresses their deliveries to exactly the edges that
// need them. Application code never touches a connection or a bus message.
//
// # The path of a frame
//
// An edge publishes every client frame as a protocol.Upstream envelope on the upstream topic,
// keyed by user id. Every logic replica consumes that topic through one Key_Shared subscription
// (Config.Subscription), with Config.Consumers consumers per replica, each handling up to
// Config.Concurrency frames of different users at once: replicas share the load while one
// user's frames are handled one at a time, in order. For each envelope the runtime
//
//  1. decodes it (an undecodable envelope is dropped and counted: redelivery cannot fix it);
//  2. runs the connect hooks (UpConnect), the disconnect hooks (UpDisconnect), or the handler
//     registered for the frame's type (UpMessage) wrapped in the middleware chain — an unknown
//     type is answered with an "error" frame carrying protocol.ErrUnknownType;
//  3. waits until every delivery the handler made has been accepted by the bus;
//  4. acknowledges the envelope. A transient failure (see Transient) instead nacks it, so it is
//     redelivered — to this or another replica — after Config.NackDelay, up to
//     Config.MaxRedeliveries times; then the client gets protocol.ErrUnavailable.
//
// A replica that dies mid-stream loses nothing acknowledged: its unacknowledged frames are
// redelivered to the surviving replicas, still in per-user order. Delivery is therefore
// at-least-once, and a plugin that must not apply a frame twice deduplicates by a client id
// (the chat plugin does, by client message id).
//
// # Writing a plugin
//
// A plugin is a value with a Name and an Init that registers routes and hooks on a *Host. The
// smallest one is plugins/echo:
//
//	type Plugin struct{}
//
//	func (Plugin) Name() string { return "echo" }
//
//	func (Plugin) Init(h *logic.Host) error {
//		h.Handle("echo", func(ctx context.Context, c *logic.Context) error {
//			c.Reply(c.Data)
//			return nil
//		})
//		return nil
//	}
//
// and it is enabled by listing it in Config.Plugins:
//
//	rt, err := logic.New(logic.Config{Bus: b, Presence: p, Plugins: []logic.Plugin{echo.Plugin{}}})
//	...
//	go rt.Run(ctx)
//
// Frame types are routes: by convention a plugin owns the types prefixed with its name
// ("chat.send", "chat.sync"), and New refuses two handlers for one type. The Host also offers
// OnConnect / OnDisconnect hooks, Go for background tasks (started by Run, stopped by
// Shutdown), a synchronous Sender for deliveries outside a frame, Presence for online counts,
// and a Logger.
//
// # The handler's view
//
// A Handler gets a ctx bounded by Config.HandlerTimeout and a *Context: the connection (edge,
// epoch, connection id), the user, the frame's type, id and JSON data (Bind decodes it), the
// connect metadata, the trace context and the redelivery count. Through the Context it
//
//   - replies to its connection: Reply(data), ReplyJSON(v), Error(code, msg);
//   - joins, leaves or closes its connection: Join, Leave, Close;
//   - sends anywhere with Send(): ToConn, ToUser(s), ToRoom, ToAll, Join, Leave, Close, Kick.
//
// Its return value decides the outcome: nil acknowledges; a *protocol.Error becomes an "error"
// frame with that code (use it for bad input, forbidden actions, rate limits); a *CloseError
// (Refuse) closes the connection; Transient(err) — and any bus or presence outage — nacks for a
// redelivery; any other error becomes protocol.ErrInternal. A panic is recovered into
// ErrInternal. A connect hook refuses a connection by returning Refuse(code, reason) and may
// join it to rooms with c.Join.
//
// # Addressing: once per edge
//
// A Sender resolves targets through presence (the router): users to the edges holding their
// connections (ResolveUsers), rooms to the edges holding members (RoomEdges). It publishes ONE
// protocol.Downstream envelope per such edge, to that edge's topic, naming the users or the
// room; the edge fans out locally. A delivery never goes once per recipient, and never to an
// edge without a target; ToAll uses the broadcast topic every edge consumes. Each delivery
// carries a protocol.Priority: only PriorityNormal may be shed by an overloaded edge, so a
// sender's echo, paid and moderator messages, replies and chat are never dropped.
//
// Deliveries made through a frame's Context are published asynchronously and awaited by the
// runtime before the acknowledgement; deliveries to one edge keep the order they were made in.
//
// # Middleware
//
// Config.Middleware wraps every handler (the first is the outermost): RateLimit is a per-user
// token bucket — exact per user, because Key_Shared gives one user's frames to one replica at a
// time — and Recover, always installed outermost, turns panics into ErrInternal. A middleware
// is a func(Handler) Handler and may decide auth, count metrics or rewrite errors.
//
// # Testing a plugin
//
// Package logictest runs a Runtime on the in-memory bus and presence with fake edges that
// publish frames, apply joins to presence the way a real edge does and record the envelopes
// they receive: see the plugins' tests.
package logic
