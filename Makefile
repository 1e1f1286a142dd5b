# Switchboard — one Go module per top-level folder; targets iterate the module list.
#
#   make run        the whole system in one process on embedded defaults (in-memory bus/presence)
#   make test       installs what is missing, starts Redis, Redis Cluster and Pulsar, runs every test
#   make unit       the hermetic tests only (no external services)
#   make bench      Go benchmarks of the hot paths (benchstat-comparable)
#   make fuzz       every fuzz target for a bounded time (FUZZTIME, default 10s each)
#   make lint       go vet + gofmt check
#   make cluster    the real topology on loopback; make cluster-down stops it, cluster-status shows it
#   make ci         exactly what .ci/run runs

MODULES  := protocol router logic edge loadtest
GO       ?= go
FUZZTIME ?= 10s
BENCHTIME ?= 1s
export SB_STATE_DIR ?= $(CURDIR)/.run

.PHONY: all build run test test-all test-web test-cluster unit bench fuzz lint ci services-up services-down install \
	cluster cluster-down cluster-status bench-compare \
	$(MODULES:%=build/%) $(MODULES:%=test/%) $(MODULES:%=unit/%) $(MODULES:%=bench/%) \
	$(MODULES:%=fuzz/%) $(MODULES:%=lint/%)

all: build

build: $(MODULES:%=build/%)
$(MODULES:%=build/%): build/%:
	cd $* && $(GO) build ./...

# run: the whole system in one process (edge + router + logic, in-memory bus and presence,
# dev auth): demo page http://127.0.0.1:8080/, WebSocket ws://127.0.0.1:8080/ws. RUNFLAGS=-addr …
run:
	$(GO) run ./edge/cmd/switchboard $(RUNFLAGS)

# install: idempotent; apt packages, the Pulsar distribution (cached in ~/.cache/switchboard), Go tools.
install:
	./deploy/local/install.sh

# test: every test, hermetic and integration, against real services this target starts and stops.
test: install
	./deploy/local/with-services.sh $(MAKE) --no-print-directory test-all

test-all: $(MODULES:%=test/%) test-web test-cluster

# test-web: the JS client's Node tests and the headless-Chromium browser test against the
# embedded binary (edge/web/run-tests.sh builds, starts and stops it).
test-web:
	./edge/web/run-tests.sh

# test-cluster: the same tests through HAProxy against the real cluster (2 edges, 2 logic, router,
# Redis, Pulsar); needs the services (make test starts them).
test-cluster:
	./deploy/local/test-cluster.sh

# A module with no packages yet is skipped; one that does not build fails.
$(MODULES:%=test/%): test/%:
	cd $* && pkgs="$$($(GO) list -tags integration ./... 2>/dev/null)" || { $(GO) list -tags integration ./...; exit 1; }; \
		[ -z "$$pkgs" ] || $(GO) test -count=1 -tags integration -timeout 20m ./...

unit: $(MODULES:%=unit/%)
$(MODULES:%=unit/%): unit/%:
	cd $* && [ -z "$$($(GO) list ./... 2>/dev/null)" ] && $(GO) list ./... >/dev/null || $(GO) test -count=1 ./...

bench: $(MODULES:%=bench/%)
$(MODULES:%=bench/%): bench/%:
	cd $* && $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

fuzz: $(MODULES:%=fuzz/%)
$(MODULES:%=fuzz/%): fuzz/%:
	@cd $* && for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; done

lint: $(MODULES:%=lint/%)
$(MODULES:%=lint/%): lint/%:
	cd $* && $(GO) vet ./... && test -z "$$(gofmt -l .)"

# cluster: the real topology on loopback (Redis, Pulsar, router, 2 logic, 2 edges, HAProxy on :8090).
# OBSERVE=1 also starts Prometheus (deploy/prometheus) on :9090.
cluster: install
	SB_OBSERVE=$(OBSERVE) ./deploy/local/cluster.sh up

cluster-down:
	./deploy/local/cluster.sh down

cluster-status:
	./deploy/local/cluster.sh status

# bench-compare: the same load scenarios against Switchboard (embedded, and the cluster when
# `make cluster` runs), Centrifugo v5.4.9 and a naive gorilla/websocket hub, one run; writes
# loadtest/results/<date>/. ARGS=--quick for a smoke run.
bench-compare: install
	./deploy/local/with-services.sh ./loadtest/compare.sh $(ARGS)

services-up:
	./deploy/local/services.sh up

services-down:
	./deploy/local/services.sh down

ci: test
