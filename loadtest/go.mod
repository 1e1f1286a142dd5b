module github.com/switchboard-io/switchboard/loadtest

go 1.26

require (
	github.com/HdrHistogram/hdrhistogram-go v1.1.2
	github.com/gobwas/ws v1.5.0
	github.com/gorilla/websocket v1.5.3
	go.uber.org/goleak v1.3.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/google/go-cmp v0.5.8 // indirect
	golang.org/x/exp v0.0.0-20230801115018-d63ba01acd4b // indirect
	gonum.org/v1/gonum v0.14.0 // indirect
)
