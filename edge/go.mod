module github.com/switchboard-io/switchboard/edge

go 1.26
