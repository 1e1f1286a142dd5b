module github.com/switchboard-io/switchboard/logic

go 1.26

require (
	github.com/switchboard-io/switchboard/protocol v0.0.0
	github.com/switchboard-io/switchboard/router v0.0.0
)

require (
	github.com/apache/pulsar-client-go v0.16.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f // indirect
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/redis/go-redis/v9 v9.7.3 // indirect
	go.opentelemetry.io/auto/sdk v1.1.0 // indirect
	go.opentelemetry.io/otel v1.38.0 // indirect
	go.opentelemetry.io/otel/metric v1.38.0 // indirect
	go.opentelemetry.io/otel/trace v1.38.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/time v0.12.0 // indirect
)

replace (
	github.com/switchboard-io/switchboard/protocol => ../protocol
	github.com/switchboard-io/switchboard/router => ../router
)
