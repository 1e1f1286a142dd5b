// Package echo is the smallest possible Switchboard plugin, and the example for plugin authors.
//
// It handles one frame type, "echo", and replies to the sender's connection with the frame's
// own data:
//
//	→ {"type":"echo","id":"1","data":{"hello":"world"}}
//	← {"type":"echo","id":"1","data":{"hello":"world"}}
//
// A plugin is a value with a Name and an Init that registers handlers on the logic.Host. A
// handler gets a context (bounded by the runtime's handler timeout) and a *logic.Context: the
// typed client message plus a sender. It never sees a connection or a bus message: its replies
// are addressed by the runtime to the edge that holds the connection.
package echo

import (
	"context"

	"github.com/switchboard-io/switchboard/logic"
)

// Type is the frame type the plugin handles.
const Type = "echo"

// Plugin is the echo plugin. The zero value is ready to use.
type Plugin struct{}

// Name implements logic.Plugin.
func (Plugin) Name() string { return "echo" }

// Init implements logic.Plugin: it routes "echo" frames to the handler.
func (Plugin) Init(h *logic.Host) error {
	h.Handle(Type, func(_ context.Context, c *logic.Context) error {
		c.Reply(c.Data) // published asynchronously; the runtime acks the frame once it is out
		return nil
	})
	return nil
}
