// Package api holds the router's gRPC API (router.proto) and its generated code. The
// generated files are committed; regenerate with `go generate ./api` (needs protoc,
// protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2 on PATH).
package api

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative router.proto
