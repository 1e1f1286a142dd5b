package presence_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/router/presence"
	"github.com/switchboard-io/switchboard/router/presence/presencetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryStoreContract(t *testing.T) {
	presencetest.Run(t, func(t *testing.T) presence.Store {
		s, err := presence.NewMemoryStore(presence.MemoryConfig{ReapInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestMemoryConfigInvalid(t *testing.T) {
	if _, err := presence.NewMemoryStore(presence.MemoryConfig{LeaseTTL: -1}); err == nil {
		t.Fatal("negative LeaseTTL accepted")
	}
}
