package edge

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// tooManyFromSource is the answer to a TCP connection over its source's limits: an HTTP 429
// written before any handshake byte is read, then the connection is closed.
var tooManyFromSource = []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n" +
	"Content-Length: 26\r\nConnection: close\r\n\r\ntoo many from this source\n")

// sourceLimits enforces Config.MaxConnsPerSource and Config.SourceHandshakeRate per remote IP.
// It is shared by all loops (one mutex, taken once per accepted and per closed TCP connection,
// never per frame). Sources with no connection and a full token bucket are pruned on ticks.
type sourceLimits struct {
	maxConns int
	rate     rate.Limit
	burst    int

	mu  sync.Mutex
	src map[netip.Addr]*sourceState
}

type sourceState struct {
	conns int
	lim   *rate.Limiter // nil when handshake rates are not limited
	last  time.Time
}

func newSourceLimits(maxConns int, perSecond float64, burst int) *sourceLimits {
	if maxConns <= 0 && perSecond <= 0 {
		return nil
	}
	return &sourceLimits{maxConns: maxConns, rate: rate.Limit(perSecond), burst: burst,
		src: make(map[netip.Addr]*sourceState)}
}

func sourceOf(a net.Addr) (netip.Addr, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ip.Unmap(), ok
}

// admit counts a new connection from a; false means it is over a limit (and is not counted).
func (sl *sourceLimits) admit(a net.Addr, now time.Time) bool {
	ip, ok := sourceOf(a)
	if !ok {
		return true
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	st := sl.src[ip]
	if st == nil {
		st = &sourceState{}
		if sl.rate > 0 {
			st.lim = rate.NewLimiter(sl.rate, sl.burst)
		}
		sl.src[ip] = st
	}
	st.last = now
	if sl.maxConns > 0 && st.conns >= sl.maxConns {
		return false
	}
	if st.lim != nil && !st.lim.AllowN(now, 1) {
		return false
	}
	st.conns++
	return true
}

// release uncounts a connection admit counted.
func (sl *sourceLimits) release(a net.Addr) {
	ip, ok := sourceOf(a)
	if !ok {
		return
	}
	sl.mu.Lock()
	if st := sl.src[ip]; st != nil && st.conns > 0 {
		st.conns--
		if st.conns == 0 && st.lim == nil {
			delete(sl.src, ip)
		}
	}
	sl.mu.Unlock()
}

// prune forgets sources with no connection whose bucket has refilled.
func (sl *sourceLimits) prune(now time.Time) {
	sl.mu.Lock()
	for ip, st := range sl.src {
		if st.conns == 0 && (st.lim == nil || st.lim.TokensAt(now) >= float64(sl.burst)) {
			delete(sl.src, ip)
		}
	}
	sl.mu.Unlock()
}
