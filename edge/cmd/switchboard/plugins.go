package main

import (
	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/plugins/chat"
	"github.com/switchboard-io/switchboard/logic/plugins/danmaku"
	"github.com/switchboard-io/switchboard/logic/plugins/echo"
)

// plugins are the logic plugins of the embedded mode: chat keeps its history in memory (the
// latest 1000 messages per conversation); paid danmaku are trusted (no CheckPaid), a demo
// setting, never production's.
func plugins() []logic.Plugin {
	return []logic.Plugin{
		echo.Plugin{},
		chat.New(chat.Config{Store: chat.NewMemoryStore(0, 0)}),
		danmaku.New(danmaku.Config{}),
	}
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
