package edge

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard-io/switchboard/protocol"
)

// TestConcurrentTraffic runs clients sending acked frames while room deliveries, joins and
// leaves arrive from other goroutines: every frame is acked once, and every client sees the
// room deliveries exactly once and in order.
func TestConcurrentTraffic(t *testing.T) {
	const clients, frames, deliveries = 40, 50, 200
	pub := &fakePub{}
	cfg := testConfig()
	cfg.Publisher = pub
	cfg.RateLimit = 1e6
	s := startEdge(t, cfg)
	defer pub.wg.Wait()

	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i], _ = dialGorilla(t, s, "c"+strconv.Itoa(i))
	}
	users := make([]string, clients)
	for i := range users {
		users[i] = "c" + strconv.Itoa(i)
	}
	down(t, s, &protocol.Downstream{Kind: protocol.DownJoin, Target: protocol.TargetUsers, Users: users, Rooms: []string{"hall"}})

	var wg sync.WaitGroup
	errs := make(chan error, clients+2)
	wg.Add(1)
	go func() { // deliveries, with churn in an unrelated room
		defer wg.Done()
		for i := 0; i < deliveries; i++ {
			d := &protocol.Downstream{Kind: protocol.DownDeliver, Target: protocol.TargetRoom, Room: "hall", Priority: protocol.PrioritySystem,
				Frame: protocol.ServerFrame{Type: "seq", Data: []byte(strconv.Itoa(i))}}
			if err := s.HandleDownstream(protocol.AppendDownstream(nil, d)); err != nil {
				errs <- err
				return
			}
			kind := protocol.DownJoin
			if i%2 == 1 {
				kind = protocol.DownLeave
			}
			j := &protocol.Downstream{Kind: kind, Target: protocol.TargetUsers, Users: users[i%clients : i%clients+1], Rooms: []string{"side"}}
			if err := s.HandleDownstream(protocol.AppendDownstream(nil, j)); err != nil {
				errs <- err
				return
			}
		}
	}()
	for ci, c := range conns {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for k := 0; k < frames; k++ {
				msg := fmt.Sprintf(`{"type":"chat.send","id":"%d","data":{"k":%d}}`, k, k)
				if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			acks := map[string]bool{}
			next := 0
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			for len(acks) < frames || next < deliveries {
				_, b, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("client %d: %w (acks %d, seq %d)", ci, err, len(acks), next)
					return
				}
				var f protocol.ServerFrame
				if err := protocol.JSON.DecodeServerFrame(b, &f); err != nil {
					errs <- err
					return
				}
				switch f.Type {
				case protocol.TypeAck:
					if acks[f.ID] {
						errs <- fmt.Errorf("client %d: ack %s twice", ci, f.ID)
						return
					}
					acks[f.ID] = true
				case "seq":
					var n int
					_ = json.Unmarshal(f.Data, &n)
					if n != next {
						errs <- fmt.Errorf("client %d: delivery %d, want %d", ci, n, next)
						return
					}
					next++
				default:
					errs <- fmt.Errorf("client %d: unexpected %+v", ci, f)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(pub.find(protocol.UpMessage)); n != clients*frames {
		t.Fatalf("%d envelopes, want %d", n, clients*frames)
	}
}
