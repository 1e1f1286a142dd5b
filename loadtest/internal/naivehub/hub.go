// Package naivehub is the naive baseline of the comparison: the WebSocket hub most people
// write first, on gorilla/websocket, with two goroutines per connection (a reader and a
// writer fed by a buffered channel) and a mutex-guarded map of rooms. It speaks enough of
// Switchboard's client protocol v1 (JSON form) for the load generator's scenarios:
//
//	?user=<id>                                 dev identity in the query (no auth)
//	welcome                                    first server frame
//	room.join / danmaku.join {"room"}          join a room (ack if the frame has an id)
//	room.leave / danmaku.leave {"room"}        leave a room
//	room.send / danmaku.send {"room","text"}   broadcast: one "danmaku.message" frame
//	                                           {"room","user","text"} to every member
//	chat.send {"to","text","cmid"}             "chat.message" {"from","to","text","cmid"} to
//	                                           every connection of user "to"
//	echo <any>                                 "echo" with the same data
//
// Unknown types get an "error" frame with code 1002. A member whose outbound buffer is full
// is disconnected with close code 4002 (slow consumer).
package naivehub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Config configures a Hub. The zero value is usable.
type Config struct {
	// Addr is the listen address. Empty means 127.0.0.1:8090.
	Addr string
	// Path is the WebSocket path. Empty means /ws.
	Path string
	// SendBuffer is the outbound frames queued per connection. Zero means 256.
	SendBuffer int
	// MaxMessage bounds an inbound message. Zero means 64 KiB.
	MaxMessage int64
	// Logger receives start/stop lines. Nil means silent.
	Logger *slog.Logger
	// JWTSecret, when set, requires an HS256 token (?token=, sub = the user) instead of the
	// dev ?user=, so handshake costs compare with auth included, and serves dev tokens at
	// /auth/dev-token?user=<id> ({"token":…}) for k6's token mode.
	JWTSecret []byte
}

// Hub is the naive baseline server.
type Hub struct {
	cfg Config
	up  websocket.Upgrader

	mu    sync.RWMutex
	rooms map[string]map[*conn]struct{}
	users map[string]map[*conn]struct{}

	nextID atomic.Uint64
	conns  sync.WaitGroup
	ln     net.Listener
	srv    *http.Server
	closed chan struct{}
}

type conn struct {
	id    uint64
	user  string
	ws    *websocket.Conn
	send  chan []byte
	once  sync.Once
	done  chan struct{}
	rooms map[string]struct{} // owned by the reader goroutine; guarded by Hub.mu for edits
}

// New returns a hub; Listen or Serve starts it.
func New(cfg Config) *Hub {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8090"
	}
	if cfg.Path == "" {
		cfg.Path = "/ws"
	}
	if cfg.SendBuffer == 0 {
		cfg.SendBuffer = 256
	}
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{
		cfg:    cfg,
		rooms:  map[string]map[*conn]struct{}{},
		users:  map[string]map[*conn]struct{}{},
		closed: make(chan struct{}),
	}
	h.up = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		Subprotocols:    []string{"switchboard.v1.json"},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	return h
}

// Listen binds the listen address. Addr reports it afterwards (useful with port 0).
func (h *Hub) Listen() error {
	ln, err := net.Listen("tcp", h.cfg.Addr)
	if err != nil {
		return fmt.Errorf("naivehub: listen: %w", err)
	}
	h.ln = ln
	return nil
}

// Addr is the bound address, after Listen.
func (h *Hub) Addr() string { return h.ln.Addr().String() }

// Run serves until ctx ends, then closes every connection and returns.
func (h *Hub) Run(ctx context.Context) error {
	if h.ln == nil {
		if err := h.Listen(); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc(h.cfg.Path, h.serveWS)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if len(h.cfg.JWTSecret) > 0 {
		mux.HandleFunc("GET /auth/dev-token", h.devToken)
	}
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(h.ln) }()
	h.cfg.Logger.Info("naivehub: listening", "addr", h.Addr(), "path", h.cfg.Path)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("naivehub: serve: %w", err)
	}
	close(h.closed)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(sctx) // hijacked connections are closed below
	h.mu.Lock()
	var all []*conn
	for _, set := range h.users {
		for c := range set {
			all = append(all, c)
		}
	}
	h.mu.Unlock()
	for _, c := range all {
		c.stop()
	}
	h.conns.Wait()
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("naivehub: serve: %w", err)
	}
	return nil
}

// Conns is the number of open connections.
func (h *Hub) Conns() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, set := range h.users {
		n += len(set)
	}
	return n
}

func (h *Hub) serveWS(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if len(h.cfg.JWTSecret) > 0 {
		var err error
		if user, err = h.verify(r.URL.Query().Get("token")); err != nil {
			http.Error(w, "naivehub: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	if user == "" {
		http.Error(w, "naivehub: ?user= required", http.StatusUnauthorized)
		return
	}
	select {
	case <-h.closed:
		http.Error(w, "naivehub: shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	ws, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade already answered the client
	}
	ws.SetReadLimit(h.cfg.MaxMessage)
	c := &conn{
		id:    h.nextID.Add(1),
		user:  user,
		ws:    ws,
		send:  make(chan []byte, h.cfg.SendBuffer),
		done:  make(chan struct{}),
		rooms: map[string]struct{}{},
	}
	h.mu.Lock()
	set := h.users[user]
	if set == nil {
		set = map[*conn]struct{}{}
		h.users[user] = set
	}
	set[c] = struct{}{}
	h.mu.Unlock()
	h.conns.Add(2)
	welcome, _ := json.Marshal(map[string]any{"type": "welcome",
		"data": map[string]string{"conn": strconv.FormatUint(c.id, 10), "user": user, "edge": "naivehub"}})
	c.send <- welcome
	go h.writeLoop(c)
	go h.readLoop(c)
}

func (c *conn) stop() { c.once.Do(func() { close(c.done) }) }

func (h *Hub) writeLoop(c *conn) {
	defer h.conns.Done()
	defer c.ws.Close()
	for {
		select {
		case msg := <-c.send:
			_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.stop()
				return
			}
		case <-c.done:
			return
		}
	}
}

type clientFrame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

type frameData struct {
	Room string `json:"room"`
	Text string `json:"text"`
	To   string `json:"to"`
	Mid  string `json:"mid"`
	CMID string `json:"cmid"`
}

func (h *Hub) readLoop(c *conn) {
	defer h.conns.Done()
	defer h.drop(c)
	go func() {
		<-c.done
		_ = c.ws.Close() // unblocks ReadMessage
	}()
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.stop()
			return
		}
		var f clientFrame
		if err := json.Unmarshal(msg, &f); err != nil || f.Type == "" {
			h.reply(c, errorFrame(f.ID, 1001, "malformed frame"))
			continue
		}
		var d frameData
		if len(f.Data) > 0 && f.Data[0] == '{' {
			_ = json.Unmarshal(f.Data, &d) // fields are optional; missing ones are checked below
		}
		switch f.Type {
		case "room.join", "danmaku.join":
			if d.Room == "" {
				h.reply(c, errorFrame(f.ID, 1007, "room required"))
				continue
			}
			h.mu.Lock()
			set := h.rooms[d.Room]
			if set == nil {
				set = map[*conn]struct{}{}
				h.rooms[d.Room] = set
			}
			set[c] = struct{}{}
			c.rooms[d.Room] = struct{}{}
			h.mu.Unlock()
			h.ack(c, f.ID)
		case "room.leave", "danmaku.leave":
			h.mu.Lock()
			delete(h.rooms[d.Room], c)
			delete(c.rooms, d.Room)
			h.mu.Unlock()
			h.ack(c, f.ID)
		case "room.send", "danmaku.send":
			out, _ := json.Marshal(map[string]any{"type": "danmaku.message",
				"data": map[string]string{"room": d.Room, "user": c.user, "text": d.Text}})
			h.mu.RLock()
			members := make([]*conn, 0, len(h.rooms[d.Room]))
			for m := range h.rooms[d.Room] {
				members = append(members, m)
			}
			h.mu.RUnlock()
			for _, m := range members {
				h.reply(m, out)
			}
			h.ack(c, f.ID)
		case "chat.send":
			out, _ := json.Marshal(map[string]any{"type": "chat.message",
				"data": map[string]string{"from": c.user, "to": d.To, "text": d.Text, "mid": d.Mid, "cmid": d.CMID}})
			h.mu.RLock()
			targets := make([]*conn, 0, len(h.users[d.To]))
			for m := range h.users[d.To] {
				targets = append(targets, m)
			}
			h.mu.RUnlock()
			for _, m := range targets {
				h.reply(m, out)
			}
			h.ack(c, f.ID)
		case "echo":
			out, _ := json.Marshal(map[string]any{"type": "echo", "id": f.ID, "data": f.Data})
			h.reply(c, out)
		default:
			h.reply(c, errorFrame(f.ID, 1002, "unknown type "+f.Type))
		}
	}
}

// reply queues msg for c; a full queue disconnects c as a slow consumer.
func (h *Hub) reply(c *conn, msg []byte) {
	select {
	case c.send <- msg:
	case <-c.done:
	default:
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(4002, "slow consumer"), time.Now().Add(time.Second))
		c.stop()
	}
}

func (h *Hub) ack(c *conn, id string) {
	if id == "" {
		return
	}
	out, _ := json.Marshal(map[string]string{"type": "ack", "id": id})
	h.reply(c, out)
}

func errorFrame(id string, code int, msg string) []byte {
	out, _ := json.Marshal(map[string]any{"type": "error", "id": id, "code": code, "message": msg})
	return out
}

func (h *Hub) drop(c *conn) {
	h.mu.Lock()
	for r := range c.rooms {
		delete(h.rooms[r], c)
		if len(h.rooms[r]) == 0 {
			delete(h.rooms, r)
		}
	}
	if set := h.users[c.user]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.users, c.user)
		}
	}
	h.mu.Unlock()
}

func (h *Hub) verify(token string) (string, error) {
	if token == "" {
		return "", errors.New("?token= required")
	}
	var c jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return h.cfg.JWTSecret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired())
	if err != nil {
		return "", fmt.Errorf("bad token: %w", err)
	}
	return c.Subject, nil
}

// devToken issues an HS256 token for ?user= (valid one hour): a test stand-in for a login.
func (h *Hub) devToken(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if user == "" {
		http.Error(w, "naivehub: ?user= required", http.StatusBadRequest)
		return
	}
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: user,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(h.cfg.JWTSecret)
	if err != nil {
		http.Error(w, "naivehub: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
}
