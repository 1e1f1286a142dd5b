package bus_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pulsar-client-go v0.16.0 starts one per producer and stops it only on its next
		// SendTimeout tick after the producer closed (at most PulsarConfig.SendTimeout later):
		// it is not leaked, merely late, and nothing here can stop it sooner.
		goleak.IgnoreTopFunction("github.com/apache/pulsar-client-go/pulsar.(*partitionProducer).failTimeoutMessages"),
	)
}
