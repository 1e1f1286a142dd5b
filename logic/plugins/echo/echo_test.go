package echo_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/logic/plugins/echo"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEcho(t *testing.T) {
	h := logictest.New(t, logic.Config{Plugins: []logic.Plugin{echo.Plugin{}}})
	e := h.Edge("e1")
	c := e.Connect("alice", nil)
	e.Send(c, echo.Type, "1", `{"hello":"world"}`)
	if f := e.ExpectReply(c, "1"); f.Type != echo.Type || string(f.Data) != `{"hello":"world"}` {
		t.Fatalf("echo reply = %+v", f)
	}
}
