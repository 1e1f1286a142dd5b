package chat_test

import (
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/protocol"
)

// TestRedisDown: with Redis unreachable the frame is retried (nacked, redelivered) and then
// answered with ErrUnavailable: an explicit error, never a silent drop.
func TestRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	store, err := chat.NewRedisStore(chat.RedisConfig{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	h := logictest.New(t, logic.Config{MaxRedeliveries: 2,
		Plugins: []logic.Plugin{chat.New(chat.Config{Store: store})}})
	e := h.Edge("e1")
	a := e.Connect("alice", nil)
	e.SendJSON(a, chat.TypeSend, "1", map[string]string{"to": "bob", "text": "hi", "cmid": "x"})
	if f := e.ExpectReply(a, "1"); f.Type != protocol.TypeError || f.Code != protocol.ErrUnavailable {
		t.Fatalf("reply with Redis down: %+v", f)
	}
	if st := h.Runtime.Stats(); st.Nacks != 2 {
		t.Fatalf("stats %+v: want 2 nacks before giving up", st)
	}
}
