GO      ?= go
TAGS    ?= hashicorpmetrics
PKGS    ?= ./...
BIN     ?= bin/mesh

.PHONY: build test bench bench-istio run fmt lint fuzz e2e clean docs demo screenshots

# -buildvcs=auto stamps the Git commit into the binary (mesh version) when git and a work tree
# are there, whatever GOFLAGS says.
build:
	@echo "==> building $(BIN) (a cold build compiles a few hundred packages: a few minutes on 2 cores)"
	$(GO) build -buildvcs=auto -tags $(TAGS) -o $(BIN) ./cmd/mesh
	@echo "==> built $(BIN): $$($(BIN) --version | head -1)"

# The tests CI runs: unit, script, Git, gRPC/xDS and Raft tests, then each fuzz target briefly.
test:
	$(GO) vet -tags $(TAGS) $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt would change:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) test -tags $(TAGS) -count=1 -timeout 12m $(PKGS)
	$(MAKE) fuzz FUZZTIME=5s

FUZZTIME ?= 30s
fuzz:
	GO=$(GO) TAGS=$(TAGS) FUZZTIME=$(FUZZTIME) .ci/fuzz $(PKGS)

# The fault suite in full: three mesh serve processes under a stream of pushes, the leader
# killed, paused and wiped, three times each (a few minutes); two datacenters of three servers
# each, dc2's leader killed three times. make test runs their short forms.
e2e:
	MESH_E2E=1 $(GO) test -tags $(TAGS) -count=1 -timeout 20m -run 'TestFaultSuite|TestTwoDatacenterClusters' -v ./cmd/mesh/cli/

bench:
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

# The end-to-end demo: a server on a Git repository made from repo-example, two proxyless gRPC
# services with their agents, an allowed and a denied call, a commit flipping the intention.
demo:
	$(GO) run -tags $(TAGS) ./internal/demo

# Serve the committed repo-example: builds first (visibly), then says where to look.
run: build
	@echo "==> serving repo-example from this repository's HEAD: open http://127.0.0.1:8500/ui/ (web UI) or http://127.0.0.1:8500/ (API); Ctrl-C stops"
	$(BIN) serve --repo . --dir repo-example

# Regenerate docs/cli.md and docs/reference.md from the command tree and the schema.
docs:
	MESH_UPDATE=1 $(GO) test -tags $(TAGS) -count=1 ./cmd/mesh/cli -run '^TestDocs$$'

# Screenshots of the web UI (overview, topology, matrix) on repo-example, for the README: the UI's
# browser test in headless Chromium writes them.
screenshots:
	mkdir -p docs/screenshots
	MESH_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -tags $(TAGS) -count=1 ./ui -run '^TestBrowser$$/^screenshots$$'

fmt:
	gofmt -w $$(git ls-files '*.go')

lint:
	$(GO) vet -tags $(TAGS) $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

clean:
	rm -rf bin

# The side-by-side comparison with istiod of issue 13 (bench/istio/README.md): builds istiod from
# source into ~/.cache/mesh-bench once (~10+ minutes on 2 cores), then runs both on the same dense
# mesh with the same raw ADS clients, three times each (~10 minutes). Not part of make test.
BENCH_ISTIO_FLAGS ?=
bench-istio:
	$(GO) run -tags $(TAGS) ./bench/istio $(BENCH_ISTIO_FLAGS)
