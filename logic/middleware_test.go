package logic_test

import (
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic"
)

// TestUserLimiterReceiveTime: frames judged by when the edge received them. A backlog that a
// bus stall held back and logic handles at once is allowed when the user kept to the rate; a
// real burst is refused past the bucket.
func TestUserLimiterReceiveTime(t *testing.T) {
	l := logic.NewUserLimiter(logic.RateLimitConfig{Rate: 2, Burst: 5})
	t0 := time.Now().Add(-10 * time.Second)
	// 20 frames received 600 ms apart (1.67/s, under the 2/s rate), all handled now.
	for i := range 20 {
		if !l.AllowAt("steady", t0.Add(time.Duration(i)*600*time.Millisecond)) {
			t.Fatalf("steady frame %d refused", i)
		}
	}
	// 8 frames received at the same instant: the burst of 5 passes, the rest is refused.
	allowed := 0
	for range 8 {
		if l.AllowAt("burst", t0) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("burst: %d of 8 allowed, want 5", allowed)
	}
	// Unknown receive time: now.
	if !l.AllowAt("fresh", time.Time{}) {
		t.Fatal("zero time refused")
	}
}
