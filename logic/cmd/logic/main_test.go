package main

import (
	"errors"
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
	t.Setenv("SB_ADMIN_TOKEN", "fromenv")
	o, err := parse(append(base, "-admin", ":9102"))
	if err != nil || o.adminToken != "fromenv" {
		t.Fatalf("token from env: %v %q", err, o.adminToken)
	}
}
