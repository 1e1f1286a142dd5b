package admin_test

import (
	"context"
	"testing"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/admin"
)

// BenchmarkMiddleware: the Metrics middleware's cost per handled frame (one histogram record).
func BenchmarkMiddleware(b *testing.B) {
	m, err := admin.NewMetrics()
	if err != nil {
		b.Fatal(err)
	}
	base := logic.Handler(func(context.Context, *logic.Context) error { return nil })
	for _, tc := range []struct {
		name string
		h    logic.Handler
	}{{"metrics=off", base}, {"metrics=on", m.Middleware()(base)}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			c := &logic.Context{Type: "chat.send"}
			ctx := context.Background()
			for b.Loop() {
				_ = tc.h(ctx, c)
			}
		})
	}
}
