package buslat_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/buslat"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pulsar-client-go v0.16.0 stops it on its next SendTimeout tick after the producer
		// closed: late, not leaked (see logic/bus/main_test.go).
		goleak.IgnoreTopFunction("github.com/apache/pulsar-client-go/pulsar.(*partitionProducer).failTimeoutMessages"),
	)
}

func TestRunMemory(t *testing.T) {
	b, err := bus.NewMemory(bus.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := buslat.Run(context.Background(), b, buslat.Config{N: 200, Rate: 20000, Keys: 8})
	if err != nil {
		t.Fatal(err)
	}
	if r.N != 200 || r.Errors != 0 || r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max {
		t.Fatalf("implausible result %+v", r)
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for p, want := range map[int]time.Duration{50: 50, 99: 99, 100: 100, 1: 1} {
		if got := buslat.Percentile(s, p); got != want {
			t.Errorf("p%d = %d, want %d", p, got, want)
		}
	}
	if buslat.Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}
