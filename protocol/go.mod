module github.com/switchboard-io/switchboard/protocol

go 1.26
