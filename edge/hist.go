package edge

import (
	"sync/atomic"
	"time"
)

// latencyBounds are the upper bounds of the latency histograms' buckets.
var latencyBounds = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 150 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond,
	300 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2 * time.Second, 5 * time.Second,
}

// latencyHist is a fixed-bucket latency histogram updated with atomics: one add per
// observation, no lock and no allocation, from any goroutine.
type latencyHist struct {
	counts [len(latencyBounds) + 1]atomic.Uint64 // the last bucket is +Inf
	sumNs  atomic.Int64
}

func (h *latencyHist) observe(d time.Duration) {
	if d < 0 {
		d = 0 // clocks of two hosts
	}
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// Histogram is a snapshot of a latency histogram: Counts[i] observations were at most
// Bounds[i] (not cumulative); the last count is above every bound.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Sum    time.Duration
	Count  uint64
}

func (h *latencyHist) snapshot() Histogram {
	s := Histogram{Bounds: latencyBounds[:], Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sumNs.Load())
	return s
}
