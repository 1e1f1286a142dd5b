package bus_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryContract(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus {
		b, err := bus.NewMemory(bus.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
