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

func TestParseRedisFlagWinsOverClusterEnv(t *testing.T) {
	t.Setenv("SB_REDIS_CLUSTER_ADDRS", "127.0.0.1:17001,127.0.0.1:17002")
	t.Setenv("SB_REDIS_ADDR", "127.0.0.1:16379")
	base := []string{"-pulsar", "pulsar://x:6650", "-router", "x:7070"}
	o, err := parse(base)
	if err != nil || o.redisCluster == "" {
		t.Fatalf("env only: cluster from the env expected: %v %+v", err, o)
	}
	o, err = parse(append(base, "-redis", "127.0.0.1:6379"))
	if err != nil || o.redisCluster != "" || o.redis != "127.0.0.1:6379" {
		t.Fatalf("-redis flag with the cluster in the env: want standalone, got %v cluster=%q redis=%q", err, o.redisCluster, o.redis)
	}
	o, err = parse(append(base, "-redis", "127.0.0.1:6379", "-redis-cluster", "127.0.0.1:7001"))
	if err != nil || o.redisCluster != "127.0.0.1:7001" {
		t.Fatalf("both flags: cluster wins: %v %q", err, o.redisCluster)
	}
}
