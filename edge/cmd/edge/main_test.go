package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestParseRequiresBusRouterAndAuth(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-router", "r:1", "-insecure-dev-auth"}, "required"},
		{[]string{"-pulsar", "pulsar://p:1", "-insecure-dev-auth"}, "required"},
		{[]string{"-pulsar", "pulsar://p:1", "-router", "r:1"}, "no authentication"},
		{[]string{"-pulsar", "pulsar://p:1", "-router", "r:1", "-insecure-dev-auth", "-dev-tokens"}, "needs a JWT secret"},
		{[]string{"-pulsar", "pulsar://p:1", "-router", "r:1", "-insecure-dev-auth", "stray"}, "unexpected"},
	} {
		t.Setenv("SB_PULSAR_URL", "")
		t.Setenv("SB_ROUTER_ADDR", "")
		t.Setenv("SB_JWT_SECRET", "")
		if _, err := parse(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q): %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestParseReadsSecretFileAndEnvironment(t *testing.T) {
	f := filepath.Join(t.TempDir(), "jwt.key")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SB_PULSAR_URL", "pulsar://127.0.0.1:6650")
	t.Setenv("SB_ROUTER_ADDR", "127.0.0.1:7070")
	t.Setenv("SB_EDGE_ID", "edge-7")
	t.Setenv("SB_EDGE_ORIGINS", "https://a.example, https://b.example")
	o, err := parse([]string{"-jwt-secret-file", f, "-addr", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if string(o.jwtSecret) != "s3cret" || o.id != "edge-7" || o.addr != "127.0.0.1:0" || len(o.origins) != 2 || o.origins[1] != "https://b.example" {
		t.Fatalf("options %+v", o)
	}
}

func TestDevTokensAreHS256WithSubject(t *testing.T) {
	h := devTokens([]byte("k"), "switchboard")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/auth/dev-token?user=alice", nil))
	var body struct{ Token string }
	if err := json.NewDecoder(rec.Body).Decode(&body); err != nil || rec.Code != 200 {
		t.Fatalf("status %d, %v", rec.Code, err)
	}
	var c jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(body.Token, &c, func(*jwt.Token) (any, error) { return []byte("k"), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("switchboard"), jwt.WithExpirationRequired())
	if err != nil || c.Subject != "alice" {
		t.Fatalf("token: %v, sub %q", err, c.Subject)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/auth/dev-token", nil))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("no user: status %d", rec.Code)
	}
}
