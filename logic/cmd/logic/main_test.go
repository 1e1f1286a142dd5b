package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic/admin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pulsar-client-go v0.16.0 stops it only on its next SendTimeout tick after the
		// producer closed (see logic/bus's TestMain).
		goleak.IgnoreTopFunction("github.com/apache/pulsar-client-go/pulsar.(*partitionProducer).failTimeoutMessages"),
	)
}

func TestParseAdminExposure(t *testing.T) {
	t.Setenv("SB_ADMIN_TOKEN", "")
	base := []string{"-pulsar", "pulsar://x:6650", "-router", "x:7070"}
	if _, err := parse(append(base, "-admin", "0.0.0.0:9102")); !errors.Is(err, admin.ErrExposed) {
		t.Fatalf("open admin on every interface without a token: %v", err)
	}
	if _, err := parse(append(base, "-admin", "0.0.0.0:9102", "-admin-token", "t")); err != nil {
		t.Fatalf("with a token: %v", err)
	}
	if _, err := parse(append(base, "-admin", "127.0.0.1:9102")); err != nil {
		t.Fatalf("loopback without a token: %v", err)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err := parse(append(base, "-admin", ":9102", "-admin-token-file", f)); err != nil || o.adminToken != "fromfile" {
		t.Fatalf("token file: %v %q", err, o.adminToken)
	}
	if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parse(append(base, "-admin-token-file", f)); err == nil {
		t.Fatal("empty token file accepted")
	}
	if _, err := parse(append(base, "-admin-token-file", f+".missing")); err == nil {
		t.Fatal("missing token file accepted")
	}
	t.Setenv("SB_ADMIN_TOKEN", "fromenv")
	o, err := parse(append(base, "-admin", ":9102"))
	if err != nil || o.adminToken != "fromenv" {
		t.Fatalf("token from env: %v %q", err, o.adminToken)
	}
}
