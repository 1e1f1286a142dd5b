package edge

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/switchboard-io/switchboard/protocol"
)

// Config configures an edge. The zero value is valid except for auth: an edge needs either a
// JWT key (JWTSecret, JWTPublicKey) or InsecureDevAuth. Every field's comment states its
// default.
type Config struct {
	// Addr is the TCP listen address. Zero means "127.0.0.1:8080". Port 0 picks a free port
	// (see (*Server).Addr).
	Addr string
	// ID is the edge id (names its bus topic). Zero means "edge-<pid>".
	ID string
	// Path is the only request path accepted for upgrades. Zero means "/ws".
	Path string
	// Loops is the number of gnet event loops. Zero means runtime.NumCPU().
	Loops int
	// ReusePort sets SO_REUSEPORT on the listener (each loop gets its own accept queue).
	// Zero means false.
	ReusePort bool
	// TCPKeepAlive is the TCP keep-alive period. Zero means disabled (heartbeats do the job).
	TCPKeepAlive time.Duration

	// AllowedOrigins is the Origin allow-list ("https://app.example.com"; "*" allows any).
	// A request without an Origin header (a non-browser client) is always allowed. Zero (nil)
	// means any origin.
	AllowedOrigins []string
	// JWTSecret enables HS256 tokens signed with this secret. Zero means HS256 is refused.
	JWTSecret []byte
	// JWTPublicKey enables EdDSA (ed25519.PublicKey) or RS256 (*rsa.PublicKey) tokens. Zero
	// means asymmetric tokens are refused.
	JWTPublicKey crypto.PublicKey
	// JWTAudience, when set, must be in the token's aud claim. Zero means aud is not checked.
	JWTAudience string
	// InsecureDevAuth accepts "?user=<id>" when no token is presented (a presented token must
	// still be valid). For local development only: anyone can claim any identity. Zero means
	// false.
	InsecureDevAuth bool
	// HandshakeTimeout bounds the time from accept to a complete upgrade request. Zero means 5s.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds the upgrade request (request line and headers). Zero means 8 KiB.
	MaxHeaderBytes int

	// MaxFrameSize bounds one WebSocket frame's payload (close 1009). Zero means 64 KiB.
	MaxFrameSize int
	// MaxMessageSize bounds a whole (possibly fragmented) message (close 1009). Zero means
	// 64 KiB.
	MaxMessageSize int
	// MaxOutboundBytes bounds a connection's unsent bytes; a reader that falls further behind
	// is closed with 4002 (protocol.CloseSlowConsumer). Zero means 1 MiB.
	MaxOutboundBytes int
	// ShedBytes is the backlog above which a connection stops receiving sheddable deliveries
	// (protocol.PriorityNormal, e.g. ordinary danmaku) instead of growing toward
	// MaxOutboundBytes; privileged classes (echo, paid, moderator, system) are never shed.
	// Zero means MaxOutboundBytes/2.
	ShedBytes int
	// WriteCoalesce paces room chatter (protocol.PriorityNormal deliveries to a room or to
	// everyone) like Nagle's algorithm in time: the first after a quiet WriteCoalesce goes out
	// at once, those that follow within WriteCoalesce of a loop's last flush of chatter are
	// held until then, so each connection gets one writev of several frames per interval
	// instead of one write() per frame (on loopback a write costs ~10 µs whatever its size).
	// It adds at most WriteCoalesce to such a delivery's latency, and nothing to a lone one.
	// Chat to users or connections, echoes, paid, moderator and system deliveries, acks and
	// replies are never held (and take held frames with them, in order). Zero means write at
	// once (frames handled in the same event-loop turn are still coalesced).
	WriteCoalesce time.Duration

	// Compression negotiates permessage-deflate (RFC 7692) with clients that offer it, with no
	// context takeover in either direction: every message is compressed on its own, so a
	// delivery is still compressed once and the same bytes go to every member, and no
	// connection keeps a compression window. Zero means off.
	Compression bool
	// CompressionThreshold is the smallest delivery payload sent compressed; smaller ones (and
	// acks, errors, control frames) go uncompressed. Zero means 256 bytes.
	CompressionThreshold int

	// PingInterval is how long a connection may be silent before the server pings it. Zero
	// means 25s.
	PingInterval time.Duration
	// IdleTimeout is how long a connection may be silent (no frame, no pong) before it is
	// closed with 4005 (protocol.CloseIdleTimeout). Zero means 2×PingInterval+5s.
	IdleTimeout time.Duration
	// CloseTimeout is how long the edge waits for the client's close frame after sending its
	// own before dropping the TCP connection. Zero means 3s.
	CloseTimeout time.Duration
	// Tick is the timing-wheel resolution for heartbeats, timeouts and drain pacing. Zero means
	// PingInterval/5, clamped to [5ms, 1s].
	Tick time.Duration

	// RateLimit is the sustained client frames per second per connection. Zero means 50.
	RateLimit float64
	// RateBurst is the token-bucket size for client frames. Zero means 2×RateLimit.
	RateBurst int
	// RateStrikes is how many consecutive frames over the rate limit are answered with an
	// error frame before the connection is closed with 4004. Zero means 20.
	RateStrikes int
	// MaxBadFrames is how many malformed application frames (answered with ErrBadFrame) a
	// connection may send before it is closed with 4000. Zero means 5.
	MaxBadFrames int

	// MaxConnsPerSource caps the TCP connections one remote IP may hold at once; over it, a new
	// connection is answered 429 and closed before its handshake is read. Zero means no cap
	// (behind a balancer every connection comes from the balancer: cap there instead).
	MaxConnsPerSource int
	// SourceHandshakeRate caps new connections per second from one remote IP (token bucket of
	// SourceHandshakeBurst); over it: 429 and close. Zero means no cap.
	SourceHandshakeRate float64
	// SourceHandshakeBurst is the bucket size for SourceHandshakeRate. Zero means
	// max(1, 2×SourceHandshakeRate).
	SourceHandshakeBurst int

	// DrainWindow is the span over which a graceful shutdown sends "move" frames, paced and
	// jittered across connections. Zero means 10s.
	DrainWindow time.Duration
	// MoveJitter is the upper bound of the reconnect delay hint carried by each "move" frame.
	// Zero means 5s.
	MoveJitter time.Duration
	// DrainGrace is how long after the drain window connections still open are closed with
	// 1012. Zero means 2s.
	DrainGrace time.Duration

	// TracerProvider makes the edge's spans: edge.receive and edge.publish per client frame
	// (sampled by the provider; a frame's own traceparent is the parent and is always
	// sampled, whatever its flags, with a parent-based sampler; the publish
	// span's traceparent travels in the envelope and its protocol.PropTraceparent property),
	// and one edge.fanout per delivery (child of Downstream.Traceparent, covering the socket
	// writes, with the recipient count). Nil means otel's global provider, looked up per
	// frame so one installed after New is used. A no-op provider costs nothing.
	TracerProvider trace.TracerProvider

	// Publisher carries upstream envelopes to logic. Nil means client frames are not forwarded:
	// frames with an id are answered with an ErrUnavailable error frame.
	Publisher Publisher
	// EventRetry is how long a connect or disconnect event the Publisher refused is retried
	// (capped exponential backoff from 50ms to 2s) before it is dropped and counted in
	// Stats.EventsDropped. Zero means 30s; negative means no retry.
	EventRetry time.Duration
	// Presence receives this edge's connections and room memberships. Nil means presence is
	// not reported.
	Presence Presence
	// PresenceLease is the presence lease time; it is renewed every lease/3. Zero means 3s.
	PresenceLease time.Duration
	// PresenceBatch is the largest presence batch and PresenceFlush the longest an op waits
	// before it is sent. Zero means 512 ops and 20ms.
	PresenceBatch int
	PresenceFlush time.Duration
	// WelcomeWait is how long a new connection's upgrade response and welcome wait for the
	// presence store to acknowledge the connection, so that once welcomed a client is
	// reachable from every logic replica (a message resolved in between would miss it).
	// Past it the client is welcomed anyway (the store is slow or down). Zero means 1s;
	// negative: welcome at once. Only with Presence.
	WelcomeWait time.Duration
	// PresenceQueue bounds queued presence ops; when full, the edge re-syncs its full state
	// instead of blocking. Zero means 65536.
	PresenceQueue int

	// HTTPHandler serves plain HTTP requests on the edge's address: any request that is not a
	// WebSocket upgrade on Path. It runs off the event loops, at most HTTPWorkers at a time;
	// the response is buffered, written, and the connection closed (no keep-alive). Nil means
	// such requests are answered 404 (other path) or 400 (Path without an upgrade).
	HTTPHandler http.Handler
	// HTTPWorkers bounds concurrent HTTPHandler calls; more requests get 503. Zero means 64.
	HTTPWorkers int

	// Logger receives the edge's logs. Zero means silent.
	Logger *slog.Logger
}

// Errors.
var (
	ErrConfig   = errors.New("edge: invalid config")
	ErrClosed   = errors.New("edge: server closed")
	ErrNotReady = errors.New("edge: server not running")
)

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.ID == "" {
		cfg.ID = fmt.Sprintf("edge-%d", pid())
	}
	if !protocol.ValidEdgeID(cfg.ID) {
		return cfg, fmt.Errorf("%w: id %q", ErrConfig, cfg.ID)
	}
	if cfg.Path == "" {
		cfg.Path = "/ws"
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return cfg, fmt.Errorf("%w: path %q must start with /", ErrConfig, cfg.Path)
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.NumCPU()
	}
	if cfg.Loops > 255 {
		return cfg, fmt.Errorf("%w: at most 255 loops", ErrConfig)
	}
	if len(cfg.JWTSecret) == 0 && cfg.JWTPublicKey == nil && !cfg.InsecureDevAuth {
		return cfg, fmt.Errorf("%w: no JWTSecret/JWTPublicKey and InsecureDevAuth is off", ErrConfig)
	}
	switch cfg.JWTPublicKey.(type) {
	case nil, ed25519.PublicKey, *rsa.PublicKey:
	default:
		return cfg, fmt.Errorf("%w: JWTPublicKey must be ed25519.PublicKey or *rsa.PublicKey, not %T", ErrConfig, cfg.JWTPublicKey)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HandshakeTimeout, 5*time.Second)
	defi(&cfg.MaxHeaderBytes, 8<<10)
	defi(&cfg.MaxFrameSize, 64<<10)
	defi(&cfg.MaxMessageSize, 64<<10)
	defi(&cfg.MaxOutboundBytes, 1<<20)
	defi(&cfg.ShedBytes, cfg.MaxOutboundBytes/2)
	def(&cfg.PingInterval, 25*time.Second)
	def(&cfg.IdleTimeout, 2*cfg.PingInterval+5*time.Second)
	if cfg.IdleTimeout <= cfg.PingInterval {
		return cfg, fmt.Errorf("%w: IdleTimeout %v must exceed PingInterval %v", ErrConfig, cfg.IdleTimeout, cfg.PingInterval)
	}
	def(&cfg.CloseTimeout, 3*time.Second)
	if cfg.Tick <= 0 {
		cfg.Tick = min(max(cfg.PingInterval/5, 5*time.Millisecond), time.Second)
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 50
	}
	defi(&cfg.RateBurst, int(2*cfg.RateLimit))
	defi(&cfg.RateStrikes, 20)
	defi(&cfg.MaxBadFrames, 5)
	if cfg.MaxConnsPerSource < 0 || cfg.SourceHandshakeRate < 0 || cfg.SourceHandshakeBurst < 0 {
		return cfg, fmt.Errorf("%w: negative per-source limit", ErrConfig)
	}
	if cfg.SourceHandshakeRate > 0 && cfg.SourceHandshakeBurst == 0 {
		cfg.SourceHandshakeBurst = max(1, int(2*cfg.SourceHandshakeRate))
	}
	def(&cfg.DrainWindow, 10*time.Second)
	def(&cfg.MoveJitter, 5*time.Second)
	def(&cfg.DrainGrace, 2*time.Second)
	def(&cfg.PresenceLease, 3*time.Second)
	defi(&cfg.PresenceBatch, 512)
	def(&cfg.PresenceFlush, 20*time.Millisecond)
	if cfg.WelcomeWait == 0 { // negative: no wait
		cfg.WelcomeWait = time.Second
	}
	defi(&cfg.PresenceQueue, 65536)
	defi(&cfg.HTTPWorkers, 64)
	defi(&cfg.CompressionThreshold, 256)
	if cfg.EventRetry == 0 {
		cfg.EventRetry = 30 * time.Second
	}
	if cfg.WriteCoalesce < 0 {
		cfg.WriteCoalesce = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}
