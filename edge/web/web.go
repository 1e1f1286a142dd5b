// Package web serves the demo page and the JavaScript client (switchboard.js) from files
// embedded in the binary, so `make run` needs nothing on disk.
//
//	/               demo/index.html
//	/app.js, …      the rest of demo/
//	/switchboard.js the client (an ES module; also published to npm as switchboard-client)
//	/config.json    how the page connects: {"ws":"ws","auth":"dev"} (see Config)
package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed switchboard.js demo
var files embed.FS

// Config is what the page learns from /config.json.
type Config struct {
	// WS is the WebSocket endpoint, relative to the page. Zero means "ws" (that is, /ws).
	WS string `json:"ws"`
	// Auth is "dev" (the page sends ?user=, for an edge with InsecureDevAuth) or "token" (the
	// page fetches a JWT from TokenURL first). Zero means "dev".
	Auth string `json:"auth"`
	// TokenURL answers GET ?user=<id> with {"token":"…"} when Auth is "token". Zero means
	// "auth/dev-token".
	TokenURL string `json:"token_url,omitempty"`
}

// Handler serves the demo page, the client and /config.json. It answers only GET and HEAD.
func Handler(cfg Config) http.Handler {
	if cfg.WS == "" {
		cfg.WS = "ws"
	}
	if cfg.Auth == "" {
		cfg.Auth = "dev"
	}
	if cfg.Auth == "token" && cfg.TokenURL == "" {
		cfg.TokenURL = "auth/dev-token"
	}
	conf, _ := json.Marshal(cfg) // a struct of strings: cannot fail
	demo, _ := fs.Sub(files, "demo")
	static := http.FileServerFS(demo)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		switch r.URL.Path {
		case "/config.json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write(conf)
			return
		case "/switchboard.js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			http.ServeFileFS(w, r, files, "switchboard.js")
			return
		}
		if strings.HasSuffix(r.URL.Path, ".js") {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		}
		static.ServeHTTP(w, r)
	})
}
