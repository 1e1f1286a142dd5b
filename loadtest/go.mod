module github.com/switchboard-io/switchboard/loadtest

go 1.26
