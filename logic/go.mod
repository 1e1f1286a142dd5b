module github.com/switchboard-io/switchboard/logic

go 1.26

require (
	github.com/switchboard-io/switchboard/protocol v0.0.0
	github.com/switchboard-io/switchboard/router v0.0.0
)

replace (
	github.com/switchboard-io/switchboard/protocol => ../protocol
	github.com/switchboard-io/switchboard/router => ../router
)
