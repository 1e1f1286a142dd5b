package bus

import (
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
)

func TestMsgID(t *testing.T) {
	for _, tc := range []struct {
		id   pulsar.MessageID
		want string
	}{
		{pulsar.NewMessageID(12, 345, 6, 0), "12:345:0:6"},
		{pulsar.NewMessageID(9223372036854775807, -1, -1, -1), "9223372036854775807:-1:-1:-1"},
	} {
		if got := msgID(tc.id); got != tc.want {
			t.Errorf("msgID = %q, want %q", got, tc.want)
		}
	}
	id := pulsar.NewMessageID(12, 345, 6, 0)
	if n := testing.AllocsPerRun(100, func() { _ = msgID(id) }); n > 1 {
		t.Errorf("msgID: %v allocations, want 1", n)
	}
}
