module github.com/switchboard-io/switchboard/router

go 1.26
