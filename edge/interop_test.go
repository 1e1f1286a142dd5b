package edge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-io/switchboard/protocol"
)

// TestCoderProtobuf drives the edge with coder/websocket speaking the protobuf form.
func TestCoderProtobuf(t *testing.T) {
	pub := &fakePub{}
	cfg := testConfig()
	cfg.Publisher = pub
	s := startEdge(t, cfg)
	defer pub.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, _, err := websocket.Dial(ctx, wsURL(s, "pat"), &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolProtobuf}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != protocol.SubprotocolProtobuf {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	read := func() protocol.ServerFrame {
		t.Helper()
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary {
			t.Fatalf("message type %v, want binary", typ)
		}
		var f protocol.ServerFrame
		if err := protocol.Protobuf.DecodeServerFrame(b, &f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	w := read()
	if w.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v", w)
	}
	id := connID(t, w)

	msg := protocol.Protobuf.AppendFrame(nil, &protocol.Frame{Type: []byte("chat.send"), ID: []byte("p1"), Data: []byte(`{"x":1}`)})
	if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
		t.Fatal(err)
	}
	if f := read(); f.Type != protocol.TypeAck || f.ID != "p1" {
		t.Fatalf("got %+v, want ack p1", f)
	}
	if m := pub.find(protocol.UpMessage); len(m) != 1 || m[0].Conn != id || string(m[0].Data) != `{"x":1}` {
		t.Fatalf("envelopes %+v", m)
	}

	// A JSON client and a protobuf client in one room: each gets the delivery in its form.
	g, _ := dialGorilla(t, s, "jay")
	down(t, s, &protocol.Downstream{Kind: protocol.DownJoin, Target: protocol.TargetUsers, Users: []string{"pat", "jay"}, Rooms: []string{"mixed"}})
	down(t, s, &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "mixed", Frame: deliver("danmaku", `{"m":"hello"}`)})
	if f := read(); f.Type != "danmaku" || string(f.Data) != `{"m":"hello"}` {
		t.Fatalf("protobuf delivery %+v", f)
	}
	if f := readFrame(t, g); f.Type != "danmaku" || string(f.Data) != `{"m":"hello"}` {
		t.Fatalf("json delivery %+v", f)
	}

	// Large message in many fragments (coder fragments writes made with Writer).
	wr, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	big := protocol.Protobuf.AppendFrame(nil, &protocol.Frame{Type: []byte("x"), ID: []byte("p2"), Data: []byte(`"` + strings.Repeat("x", 30000) + `"`)})
	for i := 0; i < len(big); i += 7000 {
		if _, err := wr.Write(big[i:min(i+7000, len(big))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := wr.Close(); err != nil {
		t.Fatal(err)
	}
	if f := read(); f.Type != protocol.TypeAck || f.ID != "p2" {
		t.Fatalf("got %+v, want ack p2", f)
	}

	// Text on a protobuf connection is refused with 1003.
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"x"}`)); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusUnsupportedData {
		t.Fatalf("read after text: %v, want close 1003", err)
	}
}

// TestCoderCloseHandshake checks a client-initiated close completes cleanly.
func TestCoderCloseHandshake(t *testing.T) {
	s := startEdge(t, testConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(s, "u"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkFor(t, 5*time.Second, func() error {
		if st := s.Stats(); st.Conns != 0 || st.Open != 0 {
			return errors.New("connection still held")
		}
		return nil
	})
}
