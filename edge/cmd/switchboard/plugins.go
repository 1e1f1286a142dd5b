package main

import (
	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/logic/plugins/echo"
)

// plugins are the logic plugins of the embedded mode. Paid danmaku are trusted (no CheckPaid):
// a demo setting, never production's.
func plugins() []logic.Plugin {
	return []logic.Plugin{echo.Plugin{}, danmaku.New(danmaku.Config{})}
}

func names(ps []logic.Plugin) string {
	var s string
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.Name()
	}
	return s
}
