//go:build tools

// Package tools pins Centrifugo for the side-by-side benchmark. It is a nested module, so the
// parent loadtest module (and go.work) never sees it; scripts/build-centrifugo.sh builds it.
package tools

import _ "github.com/centrifugal/centrifugo/v5"
