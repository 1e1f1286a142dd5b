package load

import (
	"strconv"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Message texts carry their send time so latency is measured at the receiver (all processes
// share the machine's clock):
//
//	F|<seq>|<unix-nanos>|xxxx…   fanout message
//	C|<seq>|<unix-nanos>|xxxx…   chat message (a → b)
//	R|<seq>|<unix-nanos>|xxxx…   chat reply (b → a), same seq and time as the message
const (
	stampFanout = 'F'
	stampChat   = 'C'
	stampReply  = 'R'
)

// makeStamp builds a text of at least size bytes.
func makeStamp(kind byte, seq int64, at time.Time, size int) string {
	var b strings.Builder
	b.Grow(size)
	b.WriteByte(kind)
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(seq, 10))
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(at.UnixNano(), 10))
	b.WriteByte('|')
	for b.Len() < size {
		b.WriteByte('x')
	}
	return b.String()
}

// parseStamp reads a text built by makeStamp.
func parseStamp(s string) (kind byte, seq int64, at int64, ok bool) {
	if len(s) < 5 || s[1] != '|' {
		return 0, 0, 0, false
	}
	kind = s[0]
	rest := s[2:]
	i := strings.IndexByte(rest, '|')
	if i < 0 {
		return 0, 0, 0, false
	}
	seq, err := strconv.ParseInt(rest[:i], 10, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	rest = rest[i+1:]
	j := strings.IndexByte(rest, '|')
	if j < 0 {
		return 0, 0, 0, false
	}
	at, err = strconv.ParseInt(rest[:j], 10, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	return kind, seq, at, true
}

// parseStampBytes is parseStamp without allocating, for the fanout fast path.
func parseStampBytes(b []byte) (kind byte, seq int64, at int64, ok bool) {
	if len(b) < 5 || b[1] != '|' {
		return 0, 0, 0, false
	}
	kind = b[0]
	rest := b[2:]
	seq, rest, ok = digitsUntilBar(rest)
	if !ok {
		return 0, 0, 0, false
	}
	at, _, ok = digitsUntilBar(rest)
	if !ok {
		return 0, 0, 0, false
	}
	return kind, seq, at, true
}

// digitsUntilBar reads a non-negative decimal number ended by '|' and returns what follows.
func digitsUntilBar(b []byte) (v int64, rest []byte, ok bool) {
	for i, c := range b {
		switch {
		case c == '|' && i > 0:
			return v, b[i+1:], true
		case c >= '0' && c <= '9' && i < 19:
			v = v*10 + int64(c-'0')
		default:
			return 0, nil, false
		}
	}
	return 0, nil, false
}

// Histograms record microseconds from 1 µs to 10 minutes with 3 significant digits.
const (
	histMin    = 1
	histMax    = 600_000_000
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// exportHist is h's snapshot with the trailing zero counts cut off (a full snapshot of this
// range holds ~30,000 counts, almost all zero).
func exportHist(h *hdrhistogram.Histogram) *hdrhistogram.Snapshot {
	s := h.Export()
	n := len(s.Counts)
	for n > 0 && s.Counts[n-1] == 0 {
		n--
	}
	s.Counts = s.Counts[:n]
	return s
}

// importHist reverses exportHist.
func importHist(s *hdrhistogram.Snapshot) *hdrhistogram.Histogram {
	full := hdrhistogram.New(s.LowestTrackableValue, s.HighestTrackableValue, int(s.SignificantFigures)).Export()
	counts := make([]int64, len(full.Counts))
	copy(counts, s.Counts)
	c := *s
	c.Counts = counts
	return hdrhistogram.Import(&c)
}

// shardedHist is a histogram many reader goroutines record into; shards cut lock contention.
type shardedHist struct {
	shards [16]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
		_  [40]byte
	}
}

func newShardedHist() *shardedHist {
	s := &shardedHist{}
	for i := range s.shards {
		s.shards[i].h = newHist()
	}
	return s
}

// record adds d (clamped to the histogram's range) from a caller identified by key.
func (s *shardedHist) record(key int, d time.Duration) {
	us := d.Microseconds()
	if us < histMin {
		us = histMin
	}
	if us > histMax {
		us = histMax
	}
	sh := &s.shards[uint(key)%uint(len(s.shards))]
	sh.mu.Lock()
	_ = sh.h.RecordValue(us)
	sh.mu.Unlock()
}

func (s *shardedHist) merged() *hdrhistogram.Histogram {
	h := newHist()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		h.Merge(sh.h)
		sh.mu.Unlock()
	}
	return h
}

// LatencyStats summarises a histogram in milliseconds.
type LatencyStats struct {
	Count  int64   `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	// Percentiles is the distribution for charts: (percentile, ms) pairs.
	Percentiles []PercentilePoint `json:"percentiles"`
	// Histogram is the HDR histogram (µs; counts without trailing zeros), mergeable across runs.
	Histogram *hdrhistogram.Snapshot `json:"histogram,omitempty"`
}

// PercentilePoint is one point of a latency distribution.
type PercentilePoint struct {
	Percentile float64 `json:"p"`
	Ms         float64 `json:"ms"`
}

var chartPercentiles = []float64{1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100}

func summarize(h *hdrhistogram.Histogram) LatencyStats {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	s := LatencyStats{
		Count:     h.TotalCount(),
		MeanMs:    h.Mean() / 1000,
		P50Ms:     ms(h.ValueAtQuantile(50)),
		P90Ms:     ms(h.ValueAtQuantile(90)),
		P99Ms:     ms(h.ValueAtQuantile(99)),
		P999Ms:    ms(h.ValueAtQuantile(99.9)),
		MaxMs:     ms(h.Max()),
		Histogram: exportHist(h),
	}
	if s.Count > 0 {
		for _, p := range chartPercentiles {
			s.Percentiles = append(s.Percentiles, PercentilePoint{Percentile: p, Ms: ms(h.ValueAtQuantile(p))})
		}
	}
	return s
}
