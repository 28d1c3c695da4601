# keymesh — the two commands a new user runs are `make demo` and `make test`.

GO          ?= go
BIN         ?= bin/keymesh
STATICCHECK_VERSION ?= v0.8.2
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck

# Unit and package tests run in parallel; the process-level suites (test/)
# run one package at a time so that their Raft timings are not starved.
UNIT_PKGS   := ./fsm/... ./ca/... ./identity/... ./cluster/... ./session/... ./routing/... ./cmd/...
PROC_PKGS   := ./test/...

FUZZTIME       ?= 30s
FUZZTIME_SHORT ?= 3000x
BENCHTIME      ?= 1s
CHAOS_KILLS    ?= 50
CHAOS_REPORT   ?= test/chaos/report.json
SCALE_FOLLOWERS ?= 1000
SCALE_REPORT   ?= test/scale/report.json
PEERS_REPORT   ?= test/peers/report.txt

.PHONY: all build test test-unit test-proc lint tools demo bench bench-short bench-peers chaos scale fuzz fuzz-short clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/keymesh

## test: everything a change must pass: lint, unit tests with -race, the
## end-to-end and short chaos suites, one pass of every fuzz target and
## every benchmark run once.
test: lint test-unit test-proc fuzz-short bench-short

test-unit:
	$(GO) test -race -count=1 -timeout 10m $(UNIT_PKGS)

test-proc:
	$(GO) test -race -count=1 -p 1 -timeout 12m $(PROC_PKGS)

tools: $(STATICCHECK)

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags peers ./test/peers
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags peers ./test/peers

## demo: a three-root cluster on loopback and a short tour of the CLI.
demo: build
	bash test/demo/tour.sh $(BIN)

## bench: the benchmarks with their physical limits, figures to quote.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -timeout 30m ./...

bench-short:
	SESSION_BENCH_N=100 ROUTING_BENCH_N=5000 GOSSIP_BENCH_N=20 $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m ./...

## bench-peers: keymesh beside etcd (writes) and step-ca (registrations), real
## processes on loopback, rounds alternating; installs the peers when missing.
## Not part of `make test`. The table and the closing figure lines are also
## written to $(PEERS_REPORT).
bench-peers:
	bash test/peers/install.sh
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" PEERS_REPORT=$(abspath $(PEERS_REPORT)) \
		$(GO) test -tags peers -count=1 -v -timeout 60m -run TestPeers ./test/peers

## chaos: 10 minutes of steady load (no leader change allowed), then 50 leader
## kills (failover p99 at most 600 ms) plus the other faults; report in $(CHAOS_REPORT).
chaos:
	CHAOS_KILLS=$(CHAOS_KILLS) CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) CHAOS_FULL=1 \
		$(GO) test -count=1 -v -timeout 60m -run 'TestChaos|TestSteady' ./test/chaos

## scale: $(SCALE_FOLLOWERS) trust followers against three root processes, 20
## revocations, p99 <= 500 ms from acknowledgement to refusal by all; report
## in $(SCALE_REPORT). `make test` runs it with 100 followers. Then a bulletin's
## spread among 50, 200 and 1,000 gossip members in one process (1,000 with
## memberlist's timers x5, times divided by 5: see BenchmarkBulletinSpread).
scale:
	SCALE_FOLLOWERS=$(SCALE_FOLLOWERS) SCALE_REVOCATIONS=20 SCALE_FULL=1 SCALE_REPORT=$(abspath $(SCALE_REPORT)) \
		$(GO) test -count=1 -v -timeout 30m -run TestTrustFollowersAtScale ./test/scale
	GOSSIP_BENCH_N=50,200,1000x5 $(GO) test -run '^$$' -bench BulletinSpread -benchtime 1x -timeout 120m ./session/gossip

## fuzz: every fuzz target for $(FUZZTIME); fuzz-short is the pass in `make test`.
fuzz:
	@FUZZTIME=$(FUZZTIME) bash test/fuzz.sh

fuzz-short:
	@FUZZTIME=$(FUZZTIME_SHORT) bash test/fuzz.sh

clean:
	rm -rf bin
