package bus_test

import (
	"testing"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/bustest"
)

func TestMemoryContract(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus {
		b, err := bus.NewMemory(bus.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
