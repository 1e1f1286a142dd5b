package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func TestHandlerServesPageClientAndConfig(t *testing.T) {
	h := Handler(Config{})
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="app.js">`},
		{"/app.js", "text/javascript", `from './switchboard.js'`},
		{"/style.css", "text/css", ".stage"},
		{"/switchboard.js", "text/javascript", "export class Switchboard"},
	} {
		res := get(t, h, http.MethodGet, tc.path)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", tc.path, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
	}
}

func TestHandlerConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want Config
	}{
		{Config{}, Config{WS: "ws", Auth: "dev"}},
		{Config{Auth: "token"}, Config{WS: "ws", Auth: "token", TokenURL: "auth/dev-token"}},
		{Config{WS: "/socket", Auth: "token", TokenURL: "/t"}, Config{WS: "/socket", Auth: "token", TokenURL: "/t"}},
	} {
		res := get(t, Handler(tc.cfg), http.MethodGet, "/config.json")
		var got Config
		if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("config %+v: got %+v, want %+v", tc.cfg, got, tc.want)
		}
	}
}

func TestHandlerRefusesOtherMethodsAndUnknownPaths(t *testing.T) {
	h := Handler(Config{})
	if res := get(t, h, http.MethodPost, "/"); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d", res.StatusCode)
	}
	if res := get(t, h, http.MethodGet, "/nope.txt"); res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope.txt: status %d", res.StatusCode)
	}
	if res := get(t, h, http.MethodGet, "/../web.go"); res.StatusCode == http.StatusOK {
		t.Errorf("GET /../web.go: served")
	}
}
