package protocol

import "strings"

// DefaultNamespace is the Pulsar tenant/namespace used when none is configured.
const DefaultNamespace = "public/default"

// Bus message property keys.
const (
	PropTraceparent = "traceparent"
	PropTracestate  = "tracestate"
)

// Topic names. Upstream and the per-edge topics are persistent: a chat frame accepted by the bus
// must survive a logic replica's death (redelivery) and a delivery must survive a broker
// hiccup between logic and edge. The broadcast topic is non-persistent: "everyone" messages are
// announcements whose value is in being live, and every edge subscribes to it.

// UpstreamTopic is the topic every edge publishes client frames to (key = user id) and every
// logic replica consumes with a Key_Shared subscription.
func UpstreamTopic(namespace string) string {
	return "persistent://" + ns(namespace) + "/sb-upstream"
}

// EdgeTopic is the topic only edge consumes: deliveries addressed to its connections, users
// and rooms.
func EdgeTopic(namespace, edge string) string {
	return "persistent://" + ns(namespace) + "/sb-edge-" + edge
}

// BroadcastTopic is the topic for deliveries to everyone, consumed by every edge.
func BroadcastTopic(namespace string) string {
	return "non-persistent://" + ns(namespace) + "/sb-broadcast"
}

func ns(namespace string) string {
	if namespace == "" {
		return DefaultNamespace
	}
	return strings.Trim(namespace, "/")
}

// ValidEdgeID reports whether id can name an edge (and so a topic): 1–64 characters of
// [A-Za-z0-9._-].
func ValidEdgeID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
