package chat_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/switchboard-io/switchboard/logic/plugins/chat"
)

// testStore is the contract every Store passes. conv names must be unique per run.
func testStore(t *testing.T, s chat.Store, uniq string, historyCap int) {
	ctx := context.Background()
	conv := chat.DirectConv("a"+uniq, "b"+uniq)
	a, b := "a"+uniq, "b"+uniq
	t.Run("SeqAndDedupe", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			m, dup, err := s.Append(ctx, chat.Message{Conv: conv, From: a, CMID: fmt.Sprint("c", i), Text: fmt.Sprint("m", i), TS: int64(i)}, []string{a, b})
			if err != nil || dup || m.Seq != uint64(i) || m.ID != chat.MessageID(conv, uint64(i)) {
				t.Fatalf("append %d: %+v dup=%v err=%v", i, m, dup, err)
			}
		}
		m, dup, err := s.Append(ctx, chat.Message{Conv: conv, From: a, CMID: "c2", Text: "retry", TS: 99}, []string{a, b})
		if err != nil || !dup || m.Seq != 2 || m.Text != "m2" || m.TS != 2 || m.From != a {
			t.Fatalf("retry: %+v dup=%v err=%v", m, dup, err)
		}
		// Same cmid from another sender is another message; no cmid never dedupes.
		m, dup, _ = s.Append(ctx, chat.Message{Conv: conv, From: b, CMID: "c2", Text: "b's"}, []string{a, b})
		if dup || m.Seq != 4 {
			t.Fatalf("other sender: %+v dup=%v", m, dup)
		}
		m, _, _ = s.Append(ctx, chat.Message{Conv: conv, From: b, Text: "x"}, nil)
		m2, dup, _ := s.Append(ctx, chat.Message{Conv: conv, From: b, Text: "x"}, nil)
		if dup || m2.Seq != m.Seq+1 {
			t.Fatalf("no cmid: %d then %d dup=%v", m.Seq, m2.Seq, dup)
		}
	})
	t.Run("Since", func(t *testing.T) {
		ms, err := s.Since(ctx, conv, 1, 2)
		if err != nil || len(ms) != 2 || ms[0].Seq != 2 || ms[1].Seq != 3 || ms[0].Text != "m2" || ms[0].From != a || ms[0].CMID != "c2" || ms[0].Conv != conv {
			t.Fatalf("since 1: %+v %v", ms, err)
		}
		ms, _ = s.Since(ctx, conv, 6, 10)
		if len(ms) != 0 {
			t.Fatalf("since last: %+v", ms)
		}
		ms, _ = s.Since(ctx, "nope"+uniq, 0, 10)
		if len(ms) != 0 {
			t.Fatalf("unknown conv: %+v", ms)
		}
	})
	t.Run("CappedHistory", func(t *testing.T) {
		c := chat.GroupConv("cap" + uniq)
		n := historyCap * 3
		for i := 0; i < n; i++ {
			if _, _, err := s.Append(ctx, chat.Message{Conv: c, From: a, Text: "x"}, nil); err != nil {
				t.Fatal(err)
			}
		}
		ms, err := s.Since(ctx, c, 0, 10*n)
		if err != nil || len(ms) < historyCap || len(ms) >= n || ms[len(ms)-1].Seq != uint64(n) {
			t.Fatalf("capped: %d messages (cap %d of %d) err=%v", len(ms), historyCap, n, err)
		}
		for i := 1; i < len(ms); i++ {
			if ms[i].Seq != ms[i-1].Seq+1 {
				t.Fatalf("gap at %d", i)
			}
		}
	})
	t.Run("AcksAndConvs", func(t *testing.T) {
		for _, seq := range []uint64{3, 2, 5} {
			if err := s.Ack(ctx, b, conv, seq); err != nil {
				t.Fatal(err)
			}
		}
		cs, err := s.Convs(ctx, b)
		if err != nil || len(cs) != 1 || cs[0].Conv != conv || cs[0].Acked != 5 || cs[0].Last < 4 {
			t.Fatalf("convs: %+v %v", cs, err)
		}
		if cs, _ := s.Convs(ctx, "nobody"+uniq); len(cs) != 0 {
			t.Fatalf("nobody: %+v", cs)
		}
	})
	t.Run("Groups", func(t *testing.T) {
		g := "g" + uniq
		for _, u := range []string{b, a, b} {
			if err := s.Join(ctx, g, u); err != nil {
				t.Fatal(err)
			}
		}
		ms, err := s.Members(ctx, g)
		if err != nil || !slices.Equal(ms, []string{a, b}) {
			t.Fatalf("members: %v %v", ms, err)
		}
		_ = s.Leave(ctx, g, a)
		if ms, _ := s.Members(ctx, g); !slices.Equal(ms, []string{b}) {
			t.Fatalf("after leave: %v", ms)
		}
	})
}

func TestMemoryStore(t *testing.T) {
	testStore(t, chat.NewMemoryStore(10, 0), "", 10)
}
