package bus

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// quietInterval is how often one message of the Pulsar client's log may be written.
const quietInterval = time.Second

// quietMaxKeys bounds the messages quietLog remembers; past it the memory starts over.
const quietMaxKeys = 1024

// quietLog is the handler the Pulsar client logs through. Records below min are dropped. A
// message written less than quietInterval ago is counted instead of written, and the count
// goes out with that message's next record as suppressed=N: the client logs every refused
// publish ("producer send queue is full"), so a reconnect storm that overfills a producer's
// queue would write a line per connection (34,000 lines in a minute, and 9 % of an edge's CPU,
// in a 3,000-client storm against a cluster edge). Attributes added by WithAttrs are kept
// aside and formatted only for records that are written: the client adds fields (topic,
// producer, error) on every call, which cost more than the refusal itself.
type quietLog struct {
	h     slog.Handler // the wrapped handler, with any groups applied
	attrs []slog.Attr  // added since the last group: applied to written records only
	min   slog.Level
	st    *quietState
}

type quietState struct {
	mu   sync.Mutex
	seen map[string]*quietEntry // by message; guarded by mu
}

type quietEntry struct {
	last       time.Time // when the message was last written
	suppressed int       // records of it dropped since
}

func newQuietLog(h slog.Handler, min slog.Level) quietLog {
	return quietLog{h: h, min: min, st: &quietState{seen: make(map[string]*quietEntry)}}
}

func (q quietLog) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= q.min && q.h.Enabled(ctx, l)
}

func (q quietLog) Handle(ctx context.Context, r slog.Record) error {
	now := r.Time
	if now.IsZero() {
		now = time.Now()
	}
	q.st.mu.Lock()
	e := q.st.seen[r.Message]
	if e != nil && now.Sub(e.last) < quietInterval {
		e.suppressed++
		q.st.mu.Unlock()
		return nil
	}
	if e == nil {
		if len(q.st.seen) >= quietMaxKeys {
			clear(q.st.seen)
		}
		e = &quietEntry{}
		q.st.seen[r.Message] = e
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	q.st.mu.Unlock()

	if len(q.attrs) > 0 || n > 0 {
		out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		out.AddAttrs(q.attrs...)
		r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
		if n > 0 {
			out.AddAttrs(slog.Int("suppressed", n))
		}
		r = out
	}
	return q.h.Handle(ctx, r)
}

func (q quietLog) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return q
	}
	q.attrs = append(q.attrs[:len(q.attrs):len(q.attrs)], as...)
	return q
}

func (q quietLog) WithGroup(g string) slog.Handler {
	if g == "" {
		return q
	}
	h := q.h
	if len(q.attrs) > 0 {
		h = h.WithAttrs(q.attrs)
	}
	return quietLog{h: h.WithGroup(g), min: q.min, st: q.st}
}
