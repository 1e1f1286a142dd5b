// Package faults holds the fault-injection tests of the real cluster (build tag integration):
// the router, logic and edge binaries built from this tree, run as processes on loopback with
// HAProxy in front of two edges, a private Pulsar namespace and a private presence key prefix
// in the shared Redis. Each test kills, restarts or abuses a part under chat load and asserts
// what the system promises: nothing acknowledged is lost, presence heals, nobody else suffers.
//
//	source .run/env && go test -tags integration -count=1 -v ./edge/cmd/faults/
package faults
