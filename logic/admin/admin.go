// Package admin is logic's operator HTTP API: online counts, a user's connections, kicking a
// user or one connection, broadcasting a system message, plus a small HTML page over them.
//
// Every /admin/ endpoint except the page itself requires "Authorization: Bearer <token>"
// (Config.Token) and answers 401 without it. An empty token disables authentication, which
// CheckBind only allows on a loopback address: the binary refuses to expose an
// unauthenticated admin API to the network.
//
//	GET  /admin/online[?room=a&room=b]  total connections and users, per edge, per asked room
//	GET  /admin/edges                   live edges and their epochs
//	GET  /admin/users/{id}              the user's connections (edge, epoch, conn, meta, connected_at)
//	POST /admin/kick                    {"user":"u","code":4003,"reason":"...","edge":"e1","conn":7}
//	                                    (edge+conn: only that connection; code defaults to 4003)
//	POST /admin/broadcast               {"type":"sys.notice","data":{...},"room":"r"} (no room: everyone)
//	GET  /admin/                        the HTML page (no secrets in it; it asks for the token)
//
// Kicks and broadcasts go through the runtime's Sender (one envelope per edge) with
// PrioritySystem, so an edge never sheds them. Each mutating call is logged (audit).
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/protocol"
	"github.com/switchboard-io/switchboard/router/presence"
)

// Presence is what the admin API reads: presence.Store (memory, Redis) and the router's
// client implement it.
type Presence interface {
	ResolveUsers(ctx context.Context, users []string) (map[string][]presence.Conn, error)
	RoomCounts(ctx context.Context, rooms []string) (map[string]int, error)
	Online(ctx context.Context) (presence.Counts, error)
	Edges(ctx context.Context) (map[string]uint64, error)
}

// Config configures New.
type Config struct {
	// Token is the bearer token every API call must carry. Empty means no authentication:
	// only acceptable on a loopback address (see CheckBind).
	Token string
	// Sender delivers kicks and broadcasts (logic.Runtime.Sender()). Required.
	Sender *logic.Sender
	// Presence answers the queries. Required.
	Presence Presence
	// Timeout bounds one call's presence queries and publishes. Zero means 5s.
	Timeout time.Duration
	// Logger receives the audit lines of kicks and broadcasts. Nil means silent.
	Logger *slog.Logger
}

// Errors.
var (
	ErrConfig = errors.New("admin: config")
	// ErrExposed is returned by CheckBind for an empty token on a non-loopback address.
	ErrExposed = errors.New("admin: refusing an unauthenticated admin API on a non-loopback address (set SB_ADMIN_TOKEN)")
)

// CheckBind reports whether an admin API with token may listen on addr: an empty token is
// only allowed when addr's host is a loopback IP or "localhost" (an empty host means every
// interface, so it is refused).
func CheckBind(addr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrExposed, addr)
}

// API is the admin HTTP handler. Mount it at "/admin/".
type API struct {
	cfg Config
	mux *http.ServeMux
}

// New validates cfg and returns the handler.
func New(cfg Config) (*API, error) {
	if cfg.Sender == nil || cfg.Presence == nil {
		return nil, fmt.Errorf("%w: Sender and Presence are required", ErrConfig)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative Timeout", ErrConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /admin/{$}", a.page)
	a.mux.HandleFunc("GET /admin/online", a.auth(a.online))
	a.mux.HandleFunc("GET /admin/edges", a.auth(a.edges))
	a.mux.HandleFunc("GET /admin/users/{id}", a.auth(a.user))
	a.mux.HandleFunc("POST /admin/kick", a.auth(a.kick))
	a.mux.HandleFunc("POST /admin/broadcast", a.auth(a.broadcast))
	return a, nil
}

// ServeHTTP serves the /admin/ tree.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Require wraps h with the API's bearer-token check (for /debug/pprof/ on the same address).
func (a *API) Require(h http.Handler) http.Handler { return a.auth(h.ServeHTTP) }

func (a *API) auth(next http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + a.cfg.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard-admin"`)
			writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// fail maps a presence or bus failure to 503 (retry later) and anything else to 500.
func fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, presence.ErrUnavailable) || logic.IsTransient(err) || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	writeErr(w, status, err.Error())
}

// Online is GET /admin/online's answer.
type Online struct {
	Connections int            `json:"connections"`
	Users       int            `json:"users"`
	Edges       map[string]int `json:"edges"`
	Rooms       map[string]int `json:"rooms,omitempty"`
}

func (a *API) online(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	c, err := a.cfg.Presence.Online(ctx)
	if err != nil {
		fail(w, err)
		return
	}
	out := Online{Connections: c.Connections, Users: c.Users, Edges: c.PerEdge}
	if out.Edges == nil {
		out.Edges = map[string]int{}
	}
	var rooms []string
	for _, v := range r.URL.Query()["room"] {
		for _, room := range strings.Split(v, ",") {
			if room != "" {
				rooms = append(rooms, room)
			}
		}
	}
	if len(rooms) > 0 {
		rc, err := a.cfg.Presence.RoomCounts(ctx, rooms)
		if err != nil {
			fail(w, err)
			return
		}
		out.Rooms = make(map[string]int, len(rooms))
		for _, room := range rooms {
			out.Rooms[room] = rc[room] // absent: 0
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) edges(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	e, err := a.cfg.Presence.Edges(ctx)
	if err != nil {
		fail(w, err)
		return
	}
	if e == nil {
		e = map[string]uint64{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"edges": e})
}

// Conn is one connection in GET /admin/users/{id}'s answer.
type Conn struct {
	Edge        string            `json:"edge"`
	Epoch       uint64            `json:"epoch"`
	Conn        uint64            `json:"conn"`
	Meta        map[string]string `json:"meta,omitempty"`
	ConnectedAt time.Time         `json:"connected_at"`
}

// User is GET /admin/users/{id}'s answer.
type User struct {
	User        string `json:"user"`
	Online      bool   `json:"online"`
	Connections []Conn `json:"connections"`
}

func (a *API) resolve(ctx context.Context, user string) ([]Conn, error) {
	m, err := a.cfg.Presence.ResolveUsers(ctx, []string{user})
	if err != nil {
		return nil, err
	}
	out := make([]Conn, 0, len(m[user]))
	for _, c := range m[user] {
		out = append(out, Conn{Edge: c.Edge, Epoch: c.Epoch, Conn: c.ConnID, Meta: c.Meta, ConnectedAt: c.ConnectedAt})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Edge != out[j].Edge {
			return out[i].Edge < out[j].Edge
		}
		return out[i].Conn < out[j].Conn
	})
	return out, nil
}

func (a *API) user(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	conns, err := a.resolve(ctx, id)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, User{User: id, Online: len(conns) > 0, Connections: conns})
}

// decode reads a JSON body of at most 64 KiB into v, rejecting unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

// KickRequest is POST /admin/kick's body.
type KickRequest struct {
	User   string `json:"user"`
	Code   uint16 `json:"code,omitempty"`   // zero: 4003 (kicked)
	Reason string `json:"reason,omitempty"` // zero: the code's name
	Edge   string `json:"edge,omitempty"`   // with Conn: kick only this connection
	Conn   uint64 `json:"conn,omitempty"`
}

// KickResult is POST /admin/kick's answer.
type KickResult struct {
	User   string `json:"user"`
	Kicked int    `json:"kicked"` // connections the close was sent to
	Code   uint16 `json:"code"`
}

func (a *API) kick(w http.ResponseWriter, r *http.Request) {
	var req KickRequest
	if !decode(w, r, &req) {
		return
	}
	if req.User == "" {
		writeErr(w, http.StatusBadRequest, "user is required")
		return
	}
	if (req.Edge == "") != (req.Conn == 0) {
		writeErr(w, http.StatusBadRequest, "edge and conn go together")
		return
	}
	code := protocol.CloseCode(req.Code)
	if code == 0 {
		code = protocol.CloseKicked
	}
	if code != protocol.CloseNormal && (code < 4000 || code > 4999) {
		writeErr(w, http.StatusBadRequest, "code must be 1000 or 4000-4999")
		return
	}
	if len(req.Reason) > 120 { // a close frame's reason fits 123 bytes
		writeErr(w, http.StatusBadRequest, "reason longer than 120 bytes")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	conns, err := a.resolve(ctx, req.User)
	if err != nil {
		fail(w, err)
		return
	}
	n := 0
	if req.Edge != "" {
		for _, c := range conns {
			if c.Edge == req.Edge && c.Conn == req.Conn {
				reason := req.Reason
				if reason == "" {
					reason = code.String()
				}
				err = a.cfg.Sender.Close(ctx, logic.Conn{Edge: c.Edge, Epoch: c.Epoch, ID: c.Conn}, code, reason)
				n = 1
				break
			}
		}
	} else if len(conns) > 0 {
		err = a.cfg.Sender.Kick(ctx, req.User, code, req.Reason)
		n = len(conns)
	}
	if err != nil {
		fail(w, err)
		return
	}
	if n == 0 {
		writeErr(w, http.StatusNotFound, "no such connection online")
		return
	}
	a.cfg.Logger.InfoContext(r.Context(), "admin: kick", "user", req.User, "edge", req.Edge, "conn", req.Conn, "code", uint16(code),
		"connections", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, KickResult{User: req.User, Kicked: n, Code: uint16(code)})
}

// BroadcastRequest is POST /admin/broadcast's body.
type BroadcastRequest struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
	Room string          `json:"room,omitempty"` // empty: every connection
}

func (a *API) broadcast(w http.ResponseWriter, r *http.Request) {
	var req BroadcastRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Type == "" || len(req.Type) > 64 {
		writeErr(w, http.StatusBadRequest, "type is required (at most 64 bytes)")
		return
	}
	o := logic.Out{Frame: protocol.ServerFrame{Type: req.Type, Data: []byte(req.Data)}, Priority: protocol.PrioritySystem}
	if len(req.Data) == 0 || string(req.Data) == "null" {
		o.Frame.Data = nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	var err error
	if req.Room != "" {
		err = a.cfg.Sender.ToRoom(ctx, req.Room, o)
	} else {
		err = a.cfg.Sender.ToAll(ctx, o)
	}
	if err != nil {
		fail(w, err)
		return
	}
	a.cfg.Logger.InfoContext(r.Context(), "admin: broadcast", "type", req.Type, "room", req.Room, "bytes", len(req.Data), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"sent": true, "type": req.Type, "room": req.Room})
}
