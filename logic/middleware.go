package logic

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard-io/switchboard/protocol"
)

// Recover turns a handler's panic into ErrInternal for the client (the frame is acknowledged:
// redelivering a frame that panics would only panic again) and logs the stack.
func Recover(log *slog.Logger) Middleware {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, c *Context) (err error) {
			defer func() {
				if v := recover(); v != nil {
					log.Error("logic: handler panic", "type", c.Type, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
					err = protocol.NewError(protocol.ErrInternal, "")
				}
			}()
			return next(ctx, c)
		}
	}
}

// RateLimitConfig configures RateLimit.
type RateLimitConfig struct {
	// Rate is the sustained frames per second per user. Zero means 20.
	Rate float64
	// Burst is the bucket size. Zero means 2×Rate (at least 1).
	Burst int
	// Types limits the middleware to these frame types. Empty means every type.
	Types []string
	// MaxUsers bounds the number of tracked users; idle users (full bucket) are evicted when
	// it is reached. Zero means 100000.
	MaxUsers int
}

// RateLimit limits each user's frames with a token bucket, by the time the edge received them
// (see UserLimiter.AllowAt); over the limit the client gets ErrRateLimited and the frame is
// dropped (acknowledged). Because the upstream subscription is
// Key_Shared by user id, one user's frames reach one replica at a time, so a per-replica
// limiter is a per-user limiter.
func RateLimit(cfg RateLimitConfig) Middleware {
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, int(2*cfg.Rate))
	}
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = 100000
	}
	l := NewUserLimiter(cfg)
	var types map[string]bool
	if len(cfg.Types) > 0 {
		types = make(map[string]bool, len(cfg.Types))
		for _, t := range cfg.Types {
			types[t] = true
		}
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, c *Context) error {
			if (types == nil || types[c.Type]) && !l.AllowAt(c.User, c.ReceivedAt) {
				return protocol.NewError(protocol.ErrRateLimited, "")
			}
			return next(ctx, c)
		}
	}
}

// NewUserLimiter returns a per-user limiter for plugins that limit one route themselves (see
// RateLimitConfig for the defaults; Types is ignored).
func NewUserLimiter(cfg RateLimitConfig) *UserLimiter {
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, int(2*cfg.Rate))
	}
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = 100000
	}
	return &UserLimiter{cfg: cfg, users: make(map[string]*rate.Limiter)}
}

// UserLimiter is a per-user token bucket with a bounded number of tracked users. Safe for
// concurrent use.
type UserLimiter struct {
	cfg   RateLimitConfig
	mu    sync.Mutex
	users map[string]*rate.Limiter // guarded by mu
}

// Allow reports whether user may send one more frame now.
func (l *UserLimiter) Allow(user string) bool { return l.allow(user, time.Now()) }

// AllowAt reports whether user may send one more frame that arrived at at (zero: now). Limit a
// frame by its Context.ReceivedAt, when the edge received it, not by when logic handles it:
// frames a bus stall held back arrive together, and judged by the handling time a user who
// kept to the rate would be refused for the stall (a 3 s Pulsar hiccup under 1.7 msg/s per
// danmaku publisher refused 13 of 200 messages against a 2/s, burst-5 limit).
func (l *UserLimiter) AllowAt(user string, at time.Time) bool {
	if at.IsZero() {
		at = time.Now()
	}
	return l.allow(user, at)
}

func (l *UserLimiter) allow(user string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.users[user]
	if lim == nil {
		if len(l.users) >= l.cfg.MaxUsers {
			for u, x := range l.users { // evict idle buckets: a full bucket carries no state
				if x.TokensAt(now) >= float64(l.cfg.Burst) {
					delete(l.users, u)
				}
			}
			if len(l.users) >= l.cfg.MaxUsers {
				for u := range l.users { // still full: evict an arbitrary one
					delete(l.users, u)
					break
				}
			}
		}
		lim = rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst)
		l.users[user] = lim
	}
	return lim.AllowN(now, 1)
}

// Observe calls fn after every handled frame with its type, the handler's duration and its
// error (nil on success): the hook for metrics (a histogram per type, an error counter). fn
// runs on the handler's goroutine and must be cheap.
func Observe(fn func(typ string, d time.Duration, err error)) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, c *Context) error {
			start := time.Now()
			err := next(ctx, c)
			fn(c.Type, time.Since(start), err)
			return err
		}
	}
}
