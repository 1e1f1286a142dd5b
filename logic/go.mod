module github.com/switchboard-io/switchboard/logic

go 1.26
