# featurestream developer tasks.
# Tests and `make dev` need a real redis-server; deps-redis installs it when missing.

SHELL := /bin/bash

GO   ?= go
ARGS ?=
BIN  := bin/featurestream
BENCH_PKGS := ./topology/... ./processor/... ./serving/...

.PHONY: build dev deps-redis test test-long generate bench fmt vet clean

# Static and reproducible: deploy/Dockerfile runs the same command (a test checks).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/featurestream

# Extra arguments for the dev command: make dev ARGS='...'
dev: deps-redis
	$(GO) run ./cmd/featurestream dev $(ARGS)

deps-redis:
	@bash scripts/ensure-redis.sh

test: deps-redis
	@bash scripts/ensure-kcat.sh
	@bash scripts/ensure-locale.sh
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

test-long: deps-redis
	FEATURESTREAM_LONG=1 $(GO) test -race -count=1 -timeout 60m -tags long ./...

generate:
	bash proto/generate.sh

# Compare runs with: benchstat old.txt bench/latest.txt
bench:
	@mkdir -p bench
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 6 $(BENCH_PKGS) | tee bench/latest.txt

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
