// Package presence is the router's model and the contract every presence store and client
// implements: where users and rooms live across edges, held under edge leases.
//
// An edge registers and receives an epoch; every entry it reports carries that epoch. When the
// edge's lease lapses (it stopped renewing), all entries of that edge/epoch become invisible to
// queries at once and are removed in the background. A restarted edge with the same id gets a
// new epoch, so stale entries of its previous life never resurface.
//
// Implementations: MemoryStore (embedded mode and tests), RedisStore (standalone Redis or
// Redis Cluster) and the gRPC client in package client. All pass the same contract tests
// (presencetest).
package presence

import (
	"context"
	"errors"
	"time"
)

// Errors returned by every Store implementation.
var (
	// ErrLeaseLost means the edge's lease lapsed or was lost (e.g. Redis lost its data). The edge
	// must Register again and re-report its full state with Sync.
	ErrLeaseLost = errors.New("presence: lease lost")
	// ErrUnavailable wraps failures of the backing store or the router service.
	ErrUnavailable = errors.New("presence: unavailable")
	// ErrInvalid is returned for malformed requests (empty edge id, unknown op kind, ...).
	ErrInvalid = errors.New("presence: invalid request")
)

// OpKind is the kind of a presence change reported by an edge.
type OpKind uint8

const (
	OpConnect    OpKind = 1 // a connection arrived (ConnID, User, Meta)
	OpDisconnect OpKind = 2 // a connection left (ConnID, User); it also leaves all its rooms
	OpJoin       OpKind = 3 // a connection joined Room
	OpLeave      OpKind = 4 // a connection left Room
)

// Op is one presence change reported by an edge. Edges batch them.
type Op struct {
	Kind   OpKind
	ConnID uint64
	User   string
	Room   string            // OpJoin / OpLeave
	Meta   map[string]string // OpConnect: device/client metadata
	At     time.Time         // when it happened on the edge; zero means now
}

// Conn is one live connection as the router knows it.
type Conn struct {
	Edge        string
	Epoch       uint64
	ConnID      uint64
	User        string
	Meta        map[string]string
	ConnectedAt time.Time
}

// RoomEdge says that Edge (in Epoch) holds Members connections joined to a room.
type RoomEdge struct {
	Edge    string
	Epoch   uint64
	Members int
}

// Counts are online counts. Rooms is only filled for the rooms asked for.
type Counts struct {
	Connections int
	Users       int
	PerEdge     map[string]int
}

// EventKind is a user-level presence event.
type EventKind uint8

const (
	EventUserOnline  EventKind = 1 // the user's first connection arrived
	EventUserOffline EventKind = 2 // the user's last connection left (or its edge's lease lapsed)
	// EventUserChanged: the user stays online but its set of connections changed (a device
	// connected or left, on any edge, or an edge holding one of them was reaped). With the
	// online and offline events it lets a cache of ResolveUsers answers drop a user at every
	// change instead of after a TTL. A connection re-sent unchanged (Sync) emits nothing.
	EventUserChanged EventKind = 3
)

// Event is a user-level presence event.
type Event struct {
	Kind EventKind
	User string
	Edge string // the edge whose change caused it
	At   time.Time
}

// Store is the presence contract. Every method is safe for concurrent use.
type Store interface {
	// Register starts a lease for edge and returns a new epoch, greater than any epoch the
	// edge had before. ttl is the lease time; zero means the store's default (3s).
	Register(ctx context.Context, edge string, ttl time.Duration) (epoch uint64, err error)
	// Renew extends the lease of edge/epoch. ErrLeaseLost if it lapsed or is unknown.
	Renew(ctx context.Context, edge string, epoch uint64) error
	// Deregister ends the lease at once (graceful edge shutdown): its presence disappears.
	Deregister(ctx context.Context, edge string, epoch uint64) error
	// Apply applies a batch of ops of edge/epoch in order. ErrLeaseLost if the lease is gone.
	Apply(ctx context.Context, edge string, epoch uint64, ops []Op) error
	// Sync replaces everything known about edge/epoch with the full state in conns and
	// rooms (room -> conn ids). Used after ErrLeaseLost or at start (anti-entropy).
	Sync(ctx context.Context, edge string, epoch uint64, conns []Conn, rooms map[string][]uint64) error

	// ResolveUsers returns the live connections of each user (users with none are absent).
	ResolveUsers(ctx context.Context, users []string) (map[string][]Conn, error)
	// RoomEdges returns the live edges holding members of room, with member counts.
	RoomEdges(ctx context.Context, room string) ([]RoomEdge, error)
	// RoomCounts returns live member counts for rooms.
	RoomCounts(ctx context.Context, rooms []string) (map[string]int, error)
	// Online returns overall online counts.
	Online(ctx context.Context) (Counts, error)
	// Edges returns the live edges and their epochs.
	Edges(ctx context.Context) (map[string]uint64, error)

	// Events delivers user online, offline and changed events until ctx ends. The channel is
	// closed when ctx ends, when the store closes, or when the receiver fell a whole buffer
	// behind: an event that does not fit ends the subscription instead of being dropped, so a
	// receiver that caches answers learns that it missed some (subscribe again, and drop what
	// the missed events could have changed). The authoritative state is always ResolveUsers.
	Events(ctx context.Context) (<-chan Event, error)

	// Close releases resources.
	Close() error
}
