// Package load is the wsload load generator: a coordinator that forks worker processes, each
// holding up to ~18,000 WebSocket connections from several 127.0.0.x source addresses, runs a
// scenario (idle, fanout, chat, storm) in phases across them, measures the target processes
// from /proc and merges everything into one Result.
//
// Phases: workers set up (connect, join, subscribe) and report "ready"; the coordinator takes a
// reading of the targets and sends "go"; workers run the measured part and report "done"; the
// coordinator waits a grace period, takes a second reading and sends "stop"; workers close their
// connections and send their "result" (counters and HDR histograms), which the coordinator
// merges. Workers talk JSON lines on stdout; commands are lines on stdin. A worker whose stdin
// closes stops at once, so no worker outlives its coordinator.
package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Scenarios.
const (
	ScenarioIdle   = "idle"
	ScenarioFanout = "fanout"
	ScenarioChat   = "chat"
	ScenarioStorm  = "storm"
	// ScenarioReconnect holds Conns connections, restarts the target with RestartCommand and
	// measures how the clients come back (storm after an edge restart).
	ScenarioReconnect = "reconnect"
)

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("load: bad config")

// Config configures a run. The zero value of each field means the default in its comment;
// Scenario and Targets are required.
type Config struct {
	// Scenario is idle, fanout, chat or storm.
	Scenario string
	// Protocol is switchboard, centrifugo or naive. Empty means switchboard.
	Protocol string
	// Label names the system under test in the results. Empty means Protocol.
	Label string
	// Targets are ws:// URLs on 127.0.0.0/8 (or localhost); connections are spread round-robin.
	Targets []string
	// TargetPIDs are the processes whose RSS and CPU are measured (summed). Empty: no
	// target figures.
	TargetPIDs []int
	// SourceIPs are local addresses to bind, round-robin, to multiply the ephemeral port range.
	// Empty means 127.0.0.2 … 127.0.0.17.
	SourceIPs []string
	// Conns is the number of connections (idle, storm) or room members (fanout).
	// Zero means 1000.
	Conns int
	// Pairs is the number of chat pairs (two connections each). Zero means 500.
	Pairs int
	// PerWorker caps connections per worker process (fd limit 20,000). Zero means 18,000.
	PerWorker int
	// ConnectRate paces set-up connections, in connections per second over all workers.
	// Zero means 4,000. Storm ignores it: its clients connect at once.
	ConnectRate float64
	// Concurrency caps dials in flight per worker. Zero means 256 (storm: 2,000).
	Concurrency int
	// Heartbeat is the interval of client pings (switchboard, naive). Zero means 25s.
	Heartbeat time.Duration
	// Settle is how long idle waits after set-up before measuring. Zero means 3s.
	Settle time.Duration
	// Hold is idle's measurement window. Zero means 15s.
	Hold time.Duration
	// Rate is fanout's messages per second from the publisher, or chat's messages per second
	// over all pairs. Zero means 20 (fanout) or 1,000 (chat).
	Rate float64
	// Publishers is fanout's number of publishing connections (distinct users, round-robin),
	// so a per-user rate limit of the target does not cap the rate. Zero means 1.
	Publishers int
	// Size is the text size of fanout and chat messages in bytes. Zero means 100.
	Size int
	// Duration is how long fanout and chat send. Zero means 10s.
	Duration time.Duration
	// Grace bounds the wait for deliveries after sending stops (the wait ends as soon as
	// everything expected arrived). Zero means 5s.
	Grace time.Duration
	// Retries is how many times set-up retries a connection whose dial or set-up failed
	// (idle, fanout, reconnect). Zero means none.
	Retries int
	// DialTimeout bounds one connection's dial and handshake. Zero means 15s.
	DialTimeout time.Duration
	// MaxDuration bounds the whole run; the run fails when it is exceeded. Zero means 15m.
	MaxDuration time.Duration
	// Room is the fanout room. Empty means "lt-room".
	Room string
	// JoinType and SendType name the room routes (switchboard, naive). Empty means
	// room.join and danmaku.send.
	JoinType, SendType string
	// JWTSecret (switchboard): clients authenticate with HS256 tokens instead of ?user=.
	JWTSecret string
	// JWTAudience is those tokens' aud claim. Empty means none.
	JWTAudience string
	// RunID prefixes user names. Empty means a value derived from the start time.
	RunID string
	// WorkerCommand is the program and leading arguments that run a worker; "-worker" is
	// appended. Empty means this executable. Ignored when InProcess is set.
	WorkerCommand []string
	// InProcess runs workers as goroutines (tests).
	InProcess bool
	// RestartCommand (reconnect) restarts the target: run once after set-up; the last line of
	// its stdout may list the new target pids (comma-separated), which replace TargetPIDs.
	RestartCommand []string
	// Restart, when set, is called instead of RestartCommand (tests); it returns the new pids
	// (nil: keep TargetPIDs).
	Restart func(ctx context.Context) ([]int, error)
}

func (c *Config) fill() error {
	switch c.Scenario {
	case ScenarioIdle, ScenarioFanout, ScenarioChat, ScenarioStorm:
	case ScenarioReconnect:
		if len(c.RestartCommand) == 0 && c.Restart == nil {
			return fmt.Errorf("%w: reconnect needs a restart command", ErrConfig)
		}
	default:
		return fmt.Errorf("%w: scenario %q (want idle, fanout, chat, storm or reconnect)", ErrConfig, c.Scenario)
	}
	if c.Protocol == "" {
		c.Protocol = "switchboard"
	}
	if c.Label == "" {
		c.Label = c.Protocol
	}
	if len(c.Targets) == 0 {
		return fmt.Errorf("%w: no target", ErrConfig)
	}
	for _, t := range c.Targets {
		if err := checkTarget(t); err != nil {
			return err
		}
	}
	if len(c.SourceIPs) == 0 {
		for i := 2; i <= 17; i++ {
			c.SourceIPs = append(c.SourceIPs, fmt.Sprintf("127.0.0.%d", i))
		}
	}
	for _, s := range c.SourceIPs {
		ip := net.ParseIP(s)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%w: source ip %q is not a loopback address", ErrConfig, s)
		}
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Conns, 1000)
	def(&c.Publishers, 1)
	def(&c.Pairs, 500)
	def(&c.PerWorker, 18000)
	if c.Concurrency == 0 {
		c.Concurrency = 256
		if c.Scenario == ScenarioStorm {
			c.Concurrency = 2000
		}
	}
	def(&c.Size, 100)
	if c.ConnectRate == 0 {
		c.ConnectRate = 4000
	}
	if c.Rate == 0 {
		c.Rate = 20
		if c.Scenario == ScenarioChat {
			c.Rate = 1000
		}
	}
	defd(&c.Heartbeat, 25*time.Second)
	defd(&c.Settle, 3*time.Second)
	defd(&c.Hold, 15*time.Second)
	defd(&c.Duration, 10*time.Second)
	defd(&c.Grace, 5*time.Second)
	defd(&c.DialTimeout, 15*time.Second)
	defd(&c.MaxDuration, 15*time.Minute)
	if c.Room == "" {
		c.Room = "lt-room"
	}
	if c.RunID == "" {
		c.RunID = fmt.Sprintf("%x", time.Now().UnixNano()/1e6%0xffffff)
	}
	switch {
	case c.Conns < 0, c.Pairs < 0, c.Size < 24, c.Rate < 0, c.ConnectRate < 0:
		return fmt.Errorf("%w: negative count or size < 24", ErrConfig)
	case c.PerWorker > 19000:
		return fmt.Errorf("%w: -per-worker %d over the 19,000 fd budget of a process", ErrConfig, c.PerWorker)
	}
	return nil
}

// checkTarget refuses anything but ws(s):// on a loopback address: a load generator must never
// point at another machine from here.
func checkTarget(t string) error {
	u, err := url.Parse(t)
	if err != nil {
		return fmt.Errorf("%w: target %q: %v", ErrConfig, t, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("%w: target %q: scheme must be ws or wss", ErrConfig, t)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: target %q is not on 127.0.0.0/8 or ::1; refusing", ErrConfig, t)
	}
	return nil
}

// workerConfig is what the coordinator hands one worker (JSON, first line of its stdin).
type workerConfig struct {
	Index       int           `json:"index"`
	Scenario    string        `json:"scenario"`
	Protocol    string        `json:"protocol"`
	Targets     []string      `json:"targets"`
	SourceIPs   []string      `json:"source_ips"`
	First       int           `json:"first"` // global index of the first connection (or pair)
	Count       int           `json:"count"` // connections (idle, storm), members (fanout), pairs (chat)
	Publisher   bool          `json:"publisher"`
	Publishers  int           `json:"publishers,omitempty"`
	ConnectRate float64       `json:"connect_rate"`
	Concurrency int           `json:"concurrency"`
	Heartbeat   time.Duration `json:"heartbeat"`
	Rate        float64       `json:"rate"`
	Size        int           `json:"size"`
	Duration    time.Duration `json:"duration"`
	DialTimeout time.Duration `json:"dial_timeout"`
	Retries     int           `json:"retries,omitempty"`
	Reconnect   bool          `json:"reconnect,omitempty"`
	Room        string        `json:"room"`
	JoinType    string        `json:"join_type,omitempty"`
	SendType    string        `json:"send_type,omitempty"`
	JWTSecret   string        `json:"jwt_secret,omitempty"`
	JWTAudience string        `json:"jwt_audience,omitempty"`
	RunID       string        `json:"run_id"`
}
