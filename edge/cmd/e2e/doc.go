// Package e2e holds Switchboard's end-to-end tests (build tag integration): edges (gnet and the
// wire adapters) on a real Pulsar broker, an in-process router serving presence from a real
// Redis, logic replicas running the chat and danmaku plugins (chat history in Redis), and
// clients speaking switchboard.v1.json over gorilla/websocket with ?user= dev auth, all in one
// process. Every test gets its own Pulsar namespace and Redis key prefix.
//
//	source .run/env && cd edge && go test -count=1 -tags integration -v ./cmd/e2e/
//
// What they show:
//   - a 1:1 chat message reaches both devices of the receiver, on two other edges, once each;
//     the sender gets the edge's ack and the plugin's reply (TestChatReachesBothDevicesOnTwoEdges);
//   - a room message crosses the bus once per edge holding members, checked with the edges'
//     downstream counters, and every member receives it once (TestRoomMessageCrossesBusOncePerEdge);
//   - a reconnecting client's chat.sync returns exactly what it missed (TestSyncAfterReconnect…);
//   - a logic replica that dies (or is shut down) mid-stream loses no acknowledged frame and
//     keeps the sender's order (TestLogicReplicaKilledMidStream, …ShutdownMidStream). These
//     tests detect and log "BROKER STALL": with Pulsar 4.0.8 the dead replica's frames sometimes
//     stay in the Key_Shared replay queue, dispatched to nobody, until a consumer joins;
//   - the chat round trip next to Pulsar's own publish→consume latency, per hop
//     (TestChatRoundTripLatency), and one user's serial throughput (TestChatOneUserBurst). They
//     log figures and assert none.
//
// The package has no non-test code.
package e2e
