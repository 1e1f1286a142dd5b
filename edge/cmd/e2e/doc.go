// Package e2e holds Switchboard's end-to-end tests (build tag integration): edges (gnet and the
// wire adapters) on a real Pulsar broker, an in-process router serving presence from a real
// Redis, logic replicas running the chat and danmaku plugins (chat history in Redis), and
// clients speaking switchboard.v1.json over gorilla/websocket with ?user= dev auth, all in one
// process.
//
//	source .run/env && go test -count=1 -tags integration -v ./cmd/e2e/   # in edge/
//
// The package has no non-test code.
package e2e
