package wire

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParse measures the generator's per-message decode cost, which bounds how many
// deliveries per second one worker can count.
func BenchmarkParse(b *testing.B) {
	text := "F|123|1700000000000000000|" + strings.Repeat("x", 74)
	for _, items := range []int{1, 8} {
		var sb strings.Builder
		sb.WriteString(`{"type":"danmaku.batch","data":{"room":"lt-room","items":[`)
		for i := range items {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"user":"u%d","text":%q}`, i, text)
		}
		sb.WriteString(`]}}`)
		msg := []byte(sb.String())
		b.Run(fmt.Sprintf("switchboard/items=%d", items), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			n := 0
			for b.Loop() {
				_ = Switchboard{}.Parse(msg, func(ev *Event) { n += len(ev.Texts) })
			}
		})
	}
	cf := []byte(`{"push":{"channel":"lt-room","pub":{"data":{"user":"p","text":"` + text + `"}}}}`)
	b.Run("centrifugo/items=1", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(cf)))
		for b.Loop() {
			_ = Centrifugo{}.Parse(cf, func(*Event) {})
		}
	})
}
