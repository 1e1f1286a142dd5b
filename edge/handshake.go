package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/panjf2000/gnet/v2"

	"github.com/switchboard-io/switchboard/protocol"
)

// SubprotocolTokenPrefix marks a token carried in Sec-WebSocket-Protocol (for browsers, which
// cannot set headers): a client offers "bearer.<jwt>" next to "switchboard.v1.json"; the edge
// never selects it.
const SubprotocolTokenPrefix = "bearer."

// maxHTTPBody bounds the body of a plain HTTP request handed to Config.HTTPHandler.
const maxHTTPBody = 1 << 20

// hsState is what the upgrader callbacks learn about the request being upgraded. One per loop:
// a handshake runs start to finish inside one OnTraffic call.
type hsState struct {
	query    string
	origin   string
	authz    string
	subToken string
	ua       string
	xff      string
	user     string
	exp      time.Time
}

// hsConn is the io.ReadWriter the upgrader runs over: it reads the buffered request and
// collects the response.
type hsConn struct {
	r []byte
	w []byte
}

func (h *hsConn) Read(p []byte) (int, error) {
	if len(h.r) == 0 {
		return 0, io.EOF
	}
	n := copy(p, h.r)
	h.r = h.r[n:]
	return n, nil
}

func (h *hsConn) Write(p []byte) (int, error) {
	h.w = append(h.w, p...)
	return len(p), nil
}

func (l *loop) initUpgrader() {
	l.upg = ws.Upgrader{
		ProtocolCustom:  l.hsProtocol,
		OnRequest:       l.hsRequest,
		OnHeader:        l.hsHeader,
		OnBeforeUpgrade: l.hsBefore,
	}
	if l.s.cfg.Compression {
		// No context takeover either way: every message is compressed on its own, so a
		// delivery is compressed once for all members and no connection keeps a window.
		l.flateExt = &wsflate.Extension{Parameters: wsflate.Parameters{
			ServerNoContextTakeover: true,
			ClientNoContextTakeover: true,
			ServerMaxWindowBits:     15,
		}}
		l.upg.Negotiate = l.flateExt.Negotiate
	}
}

// hsProtocol selects the first Switchboard subprotocol the client offers and picks up a
// token offered as "bearer.<jwt>".
func (l *loop) hsProtocol(v []byte) (string, bool) {
	sel := ""
	for len(v) > 0 {
		var p []byte
		p, v, _ = bytes.Cut(v, []byte(","))
		p = bytes.TrimSpace(p)
		switch {
		case string(p) == protocol.SubprotocolJSON:
			if sel == "" {
				sel = protocol.SubprotocolJSON
			}
		case string(p) == protocol.SubprotocolProtobuf:
			if sel == "" {
				sel = protocol.SubprotocolProtobuf
			}
		case bytes.HasPrefix(p, []byte(SubprotocolTokenPrefix)):
			l.hs.subToken = string(p[len(SubprotocolTokenPrefix):])
		}
	}
	return sel, true
}

func (l *loop) hsRequest(uri []byte) error {
	path, query, _ := bytes.Cut(uri, []byte("?"))
	if string(path) != l.s.cfg.Path {
		return ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("not found"))
	}
	l.hs.query = string(query)
	return nil
}

func (l *loop) hsHeader(k, v []byte) error {
	switch {
	case bytes.EqualFold(k, []byte("Origin")):
		l.hs.origin = string(v)
	case bytes.EqualFold(k, []byte("Authorization")):
		l.hs.authz = string(v)
	case bytes.EqualFold(k, []byte("User-Agent")):
		l.hs.ua = string(v)
	case bytes.EqualFold(k, []byte("X-Forwarded-For")):
		l.hs.xff = string(v)
	}
	return nil
}

// hsBefore runs once every header was read: Origin (403), then auth (401), before the
// upgrade is answered.
func (l *loop) hsBefore() (ws.HandshakeHeader, error) {
	s := l.s
	if s.state.Load() != stateRunning {
		return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusServiceUnavailable), ws.RejectionReason("draining"))
	}
	if !s.originAllowed(l.hs.origin) {
		return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))
	}
	qToken, qUser, ok := authQuery(l.hs.query)
	if !ok {
		return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason("bad query"))
	}
	token := ""
	if a := l.hs.authz; len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		token = strings.TrimSpace(a[7:])
	} else if qToken != "" {
		token = qToken
	} else {
		token = l.hs.subToken
	}
	user, exp, err := s.auth.authenticate(token, qUser)
	if err != nil {
		return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusUnauthorized),
			ws.RejectionReason(err.Error()),
			ws.RejectionHeader(ws.HandshakeHeaderString("WWW-Authenticate: Bearer\r\n")))
	}
	l.hs.user, l.hs.exp = user, exp
	return nil, nil
}

// authQuery returns the first "token" and "user" values of a query string, as url.ParseQuery
// would, without building its map; ok is false when any pair is malformed (bad escape or a
// semicolon), as ParseQuery reports.
func authQuery(q string) (token, user string, ok bool) {
	var haveT, haveU bool
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if kv == "" {
			continue
		}
		if strings.Contains(kv, ";") {
			return "", "", false
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return "", "", false
		}
		switch {
		case key == "token" && !haveT:
			token, err = url.QueryUnescape(v)
			haveT = true
		case key == "user" && !haveU:
			user, err = url.QueryUnescape(v)
			haveU = true
		default:
			_, err = url.QueryUnescape(v)
		}
		if err != nil {
			return "", "", false
		}
	}
	return token, user, true
}

func (s *Server) originAllowed(origin string) bool {
	if origin == "" || s.cfg.AllowedOrigins == nil {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// handshake reads the HTTP request once it is complete and either upgrades it, hands it to
// Config.HTTPHandler, or rejects it. It never blocks.
func (l *loop) handshake(wc *wsConn) {
	c := wc.c
	cfg := &l.s.cfg
	buf, err := c.Peek(-1)
	if err != nil || len(buf) == 0 {
		return
	}
	// wc.need remembers how far earlier chunks were scanned, so a request trickling in byte
	// by byte is not rescanned from the start each time.
	from := max(0, min(int(wc.need), len(buf))-3)
	end := bytes.Index(buf[from:], []byte("\r\n\r\n"))
	if end < 0 {
		if len(buf) > cfg.MaxHeaderBytes {
			l.httpError(wc, http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		}
		wc.need = int32(min(len(buf), cfg.MaxHeaderBytes+1))
		return
	}
	end += from
	n := end + 4
	if n > cfg.MaxHeaderBytes {
		l.httpError(wc, http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		return
	}
	req := buf[:n]
	path, upgrade, clen, chunked, ok := scanRequest(req)
	if !ok {
		l.httpError(wc, http.StatusBadRequest, "malformed request")
		return
	}
	if string(path) != cfg.Path || !upgrade {
		if cfg.HTTPHandler != nil {
			switch {
			case chunked:
				l.httpError(wc, http.StatusLengthRequired, "chunked bodies are not supported")
			case clen < 0 || clen > maxHTTPBody:
				l.httpError(wc, http.StatusRequestEntityTooLarge, "body too large")
			case len(buf) >= n+int(clen):
				l.serveHTTP(wc, buf[:n+int(clen)])
			}
			return
		}
		if string(path) != cfg.Path {
			l.httpError(wc, http.StatusNotFound, "not found")
			return
		}
	}
	l.hs = hsState{}
	if l.flateExt != nil {
		l.flateExt.Reset()
	}
	io := &l.hsio
	io.r, io.w = req, io.w[:0]
	hs, err := l.upg.Upgrade(io)
	_, _ = c.Discard(n)
	if err != nil {
		if len(io.w) == 0 { // the upgrader gave up before it could answer
			l.httpError(wc, http.StatusBadRequest, "malformed request")
			return
		}
		l.s.countReject(responseStatus(io.w))
		_, _ = c.Write(io.w)
		wc.state = connClosing
		_ = l.el.Close(c)
		return
	}
	meta := map[string]string{"subprotocol": hs.Protocol, "remote": c.RemoteAddr().String()}
	if l.hs.ua != "" {
		meta["user_agent"] = l.hs.ua
	}
	if l.hs.xff != "" {
		meta["forwarded_for"] = l.hs.xff
	}
	deflate := false
	if l.flateExt != nil {
		_, deflate = l.flateExt.Accepted()
	}
	// The 101 response and the welcome frame leave in one write: one syscall, one wake-up of
	// the client.
	l.open(wc, l.hs.user, hs.Protocol == protocol.SubprotocolProtobuf, deflate, meta, l.hs.exp, io.w)
	if cap(io.w) > 4<<10 {
		io.w = nil
	}
	l.hs = hsState{}
}

// scanRequest extracts what routing needs from a complete request head: the path, whether it
// asks for a WebSocket upgrade, and its body length.
func scanRequest(req []byte) (path []byte, upgrade bool, clen int64, chunked, ok bool) {
	line, rest, _ := bytes.Cut(req, []byte("\r\n"))
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	uri, proto, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(uri) == 0 || !bytes.HasPrefix(proto, []byte("HTTP/")) {
		return nil, false, 0, false, false
	}
	path, _, _ = bytes.Cut(uri, []byte("?"))
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, found := bytes.Cut(h, []byte(":"))
		if !found {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Upgrade")):
			upgrade = bytes.Contains(bytes.ToLower(v), []byte("websocket"))
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 {
				return nil, false, 0, false, false
			}
			clen = n
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = true
		}
	}
	return path, upgrade, clen, chunked, true
}

// httpError answers a request that is not upgraded and drops the connection.
func (l *loop) httpError(wc *wsConn, status int, msg string) {
	l.s.countReject(status)
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(msg), msg)
	_, _ = wc.c.Discard(-1)
	_, _ = wc.c.Write([]byte(resp))
	if wc.state != connClosed {
		wc.state = connClosing
		_ = l.el.Close(wc.c)
	}
}

// serveHTTP runs Config.HTTPHandler for a plain request off the loop, in a bounded number of
// goroutines, then writes the response and closes the connection (no keep-alive).
func (l *loop) serveHTTP(wc *wsConn, raw []byte) {
	s := l.s
	select {
	case s.httpSem <- struct{}{}:
	default:
		l.httpError(wc, http.StatusServiceUnavailable, "busy")
		return
	}
	raw = append([]byte(nil), raw...)
	_, _ = wc.c.Discard(-1)
	wc.state = connHTTP
	l.unschedule(wc)
	remote := wc.c.RemoteAddr().String()
	c := wc.c
	s.httpWG.Add(1)
	go func() {
		defer s.httpWG.Done()
		defer func() { <-s.httpSem }()
		out := s.runHandler(raw, remote)
		if err := c.AsyncWrite(out, func(c gnet.Conn, _ error) error { return c.Close() }); err != nil {
			_ = c.Close()
		}
	}()
}

func (s *Server) runHandler(raw []byte, remote string) (out []byte) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return httpResponse(http.StatusBadRequest, nil, []byte("malformed request"), false)
	}
	req.RemoteAddr = remote
	req = req.WithContext(s.ctx)
	rw := &respWriter{h: make(http.Header)}
	defer func() {
		if r := recover(); r != nil {
			s.log.Warn("edge: http handler panicked", "panic", r, "path", req.URL.Path)
			out = httpResponse(http.StatusInternalServerError, nil, []byte("internal error"), false)
		}
	}()
	s.cfg.HTTPHandler.ServeHTTP(rw, req)
	code := rw.code
	if code == 0 {
		code = http.StatusOK
	}
	return httpResponse(code, rw.h, rw.body.Bytes(), req.Method == http.MethodHead)
}

// respWriter is the http.ResponseWriter handed to Config.HTTPHandler: it buffers the response.
type respWriter struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (w *respWriter) Header() http.Header { return w.h }

func (w *respWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(b)
}

func httpResponse(code int, h http.Header, body []byte, head bool) []byte {
	if h == nil {
		h = make(http.Header)
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	noBody := code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
	if h.Get("Content-Type") == "" && len(body) > 0 {
		h.Set("Content-Type", http.DetectContentType(body))
	}
	h.Del("Transfer-Encoding")
	h.Set("Connection", "close")
	if !noBody {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	_ = h.Write(&b)
	b.WriteString("\r\n")
	if !head && !noBody {
		b.Write(body)
	}
	return b.Bytes()
}

// responseStatus is the status code of a raw HTTP/1.1 response, or 0.
func responseStatus(resp []byte) int {
	// "HTTP/1.1 401 ..."
	if len(resp) < 12 || resp[8] != ' ' {
		return 0
	}
	n := 0
	for _, c := range resp[9:12] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}
