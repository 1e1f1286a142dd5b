//go:build integration

package buslat_test

import (
	"context"
	"os"
	"testing"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/buslat"
)

func TestRunPulsar(t *testing.T) {
	url := os.Getenv("SB_PULSAR_URL")
	if url == "" {
		t.Fatal("SB_PULSAR_URL must be set (source .run/env after deploy/local/services.sh up)")
	}
	b, err := bus.NewPulsar(bus.PulsarConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := buslat.Run(context.Background(), b, buslat.Config{N: 300, Rate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 0 || r.P50 <= 0 || r.P50 > r.P99 {
		t.Fatalf("implausible result %+v", r)
	}
	t.Logf("Pulsar publish→consume: %+v", *r)
}
