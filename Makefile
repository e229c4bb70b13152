# op-replicator: patched op-node (+ plugin), op-geth and op-batcher from the pinned optimism module.
SHELL := bash
GO ?= go
BUILD := build
BIN := $(BUILD)/bin
WORK := GOWORK=$(CURDIR)/$(BUILD)/go.work
PATCHES := $(sort $(wildcard patches/*.patch))
OWN_SRC := $(shell find driverhook plugin -name '*.go' -not -name '*_test.go' 2>/dev/null)

.PHONY: all build apply patches test unit-test upstream-test series-test e2e-test fuzz soak demo bench clean

all: build

# build/optimism: pristine upstream + patches. Redone when a patch, the pin or the script changes.
$(BUILD)/optimism.applied: scripts/apply.sh go.mod $(PATCHES) internal/tools/superchainstub/main.go
	./scripts/apply.sh

apply: $(BUILD)/optimism.applied

$(BIN)/op-node: $(BUILD)/optimism.applied $(OWN_SRC) go.mod
	$(WORK) $(GO) build -o $@ github.com/ethereum-optimism/optimism/op-node/cmd

$(BIN)/op-batcher: $(BUILD)/optimism.applied
	$(WORK) $(GO) build -o $@ github.com/ethereum-optimism/optimism/op-batcher/cmd

$(BIN)/geth: $(BUILD)/optimism.applied
	$(WORK) $(GO) build -o $@ github.com/ethereum/go-ethereum/cmd/geth

build: $(BIN)/op-node $(BIN)/op-batcher $(BIN)/geth

# Export commits made on top of the pristine tree in build/optimism back to patches/.
patches:
	rm -f patches/*.patch
	git -C $(BUILD)/optimism format-patch --quiet --zero-commit --no-signature --no-stat -N \
		-o $(CURDIR)/patches pristine..HEAD
	@ls patches

unit-test: apply
	$(WORK) $(GO) test ./driverhook/... ./plugin/...

# Upstream's own tests for every package the patches touch. Skipped: tests that look chains up in the
# superchain registry (a test rollup config by network name), which the published module does not ship
# (build/optimism has an empty stand-in); they fail the same way on the pristine tree.
UPSTREAM_PKGS := ./op-node/rollup/engine/... ./op-node/node/... ./op-node/flags/... ./op-node/config/... ./op-node ./op-node/cmd/... \
	./op-service/eth ./op-service/sources
UPSTREAM_SKIP := TestNewDependencySetFromCLI_RegistryFallback
UPSTREAM_P2P_SKIP := TestPeerParams/(TestGetPeerScoreParams_Light|TestParamsZeroBlockTime)
upstream-test: apply
	cd $(BUILD)/optimism && $(WORK) $(GO) test -skip '$(UPSTREAM_SKIP)' $(UPSTREAM_PKGS)
	cd $(BUILD)/optimism && $(WORK) $(GO) test -skip '$(UPSTREAM_P2P_SKIP)' ./op-node/p2p

# A failed e2e test prints its error, then its devnet's log tails; the errors are printed again at the end, where
# a CI log excerpt ends.
e2e-test: build
	@set -o pipefail; $(WORK) $(GO) test -count=1 -timeout 60m -v ./e2e/... 2>&1 | tee $(BUILD)/e2e-test.log || { \
		echo "=== e2e failures, again (whole output in $(BUILD)/e2e-test.log) ==="; \
		grep -E -B1 -A10 '^\s+Error Trace:' $(BUILD)/e2e-test.log | grep -v -E '^\s+t=' | head -150; \
		grep -E 'devnet fault|^panic:|^--- FAIL|^FAIL' $(BUILD)/e2e-test.log | cut -c1-400 | head -40; \
		exit 1; }

# Every prefix of the patch series builds: each patch can land on its own, in order.
series-test: apply
	./scripts/check-series.sh

test: unit-test upstream-test series-test e2e-test

# Go native fuzzing of what the plugin decodes from others: a relay's message, a source's block, the state file.
# go test fuzzes one target of one package at a time, so each runs for FUZZTIME in turn. Seeds and crashers found
# (regression inputs) are in each package's testdata/fuzz/, which unit-test runs too. Minimizing a new input is capped at
# 1000 runs: the inputs are kilobytes of JSON, and the default (60 s each) would have a short run minimize, not fuzz.
# Before Go 1.27 a run can end in a spurious "context deadline exceeded" failure with no failing input
# (go.dev/issue/75804): that run passed.
FUZZTIME ?= 1m
FUZZ_TARGETS := plugin/relay:FuzzRelayEnvelope plugin:FuzzSourceBlock plugin/source:FuzzHexResult plugin:FuzzStateFile
fuzz: apply
	@failed=; for pkgtarget in $(FUZZ_TARGETS); do \
		pkg=$${pkgtarget%%:*}; target=$${pkgtarget##*:}; log=$(BUILD)/$$target.log; \
		$(WORK) $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1000x ./$$pkg/ \
			>$$log 2>&1; rc=$$?; \
		if grep -q 'no fuzz tests to fuzz' $$log; then rc=1; \
		elif [ $$rc != 0 ] && grep -qx '    context deadline exceeded' $$log && ! grep -q 'Failing input' $$log; then rc=0; fi; \
		if [ $$rc = 0 ]; then echo "$$target: ok ($$(grep '^fuzz: elapsed' $$log | tail -n 1))"; \
		else cat $$log; echo "$$target: FAILED (output above, and in $$log)"; failed=1; fi; \
	done; [ -z "$$failed" ]

# The soak (docs/soak.md): one devnet under load with faults on a schedule for SOAK_DURATION, invariants checked
# every second. Not part of `make test`. Set OP_REPLICATOR_SOAK_REPORT=file to keep its report.
SOAK_DURATION ?= 30m
soak: build
	OP_REPLICATOR_SOAK_DURATION=$(SOAK_DURATION) $(WORK) $(GO) test -tags soak -count=1 -timeout 0 -v -run TestSoak ./e2e/

demo: build
	$(WORK) $(GO) run ./e2e/cmd/demo

# Benchmarks on a real devnet (not part of `make test`); see docs/benchmarks.md.
BENCH ?= TestBench
bench: build
	$(WORK) $(GO) test -tags bench -count=1 -timeout 0 -v -run '$(BENCH)' ./e2e/

clean:
	rm -rf $(BUILD)
