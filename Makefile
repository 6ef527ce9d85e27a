# Kiln's two commands are `make run` and `make test`; each sets up what it needs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO    ?= go
# Build and test with Go 1.27.3 (the standard library's security fixes; `make audit`). The go
# command fetches that toolchain through the module proxy on first use (about 76 MB, once).
export GOTOOLCHAIN ?= go1.27.3
TOOLS := $(GO) tool -modfile=tools/go.mod
BIN   := bin/kiln
NODE_TOOLS := tools/node_modules/.bin
# Generated files; `make test` fails when regenerating changes any of them.
GENERATED = gen/api/api.gen.go gen/api/spec.gen.go $(wildcard gen/db/*.go) sdk/go/client.gen.go sdk/typescript/src/schema.d.ts

# Tests use their own databases (kiln_test and clones of a migrated template).
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable
export TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0

.PHONY: help run test test-deps deps build generate check-generated lint test-go test-sdk node-deps bench audit

help:
	@echo "make run    set up PostgreSQL (pgvector) and Redis, migrate, serve on \$$KILN_HTTP_ADDR (:8080)"
	@echo "             SEED=demo first applies deploy/seed/demo.yaml (a user, an org, an API key, prompts)"
	@echo "make test   set up, check generated code and lint, run every test (Go, SDKs)"
	@echo "make generate   regenerate gen/, sdk/go and sdk/typescript from openapi/ and queries/"
	@echo "make bench      run the benchmarks"
	@echo "make audit      check the Go code and the npm lockfiles for known vulnerabilities (VULNDB=DIR offline)"

deps:
	bash scripts/dev-deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/kiln

run: deps build
	./$(BIN) migrate up
	$(if $(SEED),./$(BIN) seed apply deploy/seed/$(SEED).yaml)
	exec ./$(BIN) serve

# npm packages install from the lockfiles, and only when a lockfile changed.
node-deps: tools/node_modules/.installed sdk/typescript/node_modules/.installed
%/node_modules/.installed: %/package-lock.json
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	touch $@

generate: node-deps
	$(TOOLS) oapi-codegen -config gen/api/cfg.yaml openapi/openapi.yaml
	$(TOOLS) oapi-codegen -config gen/api/spec.cfg.yaml openapi/openapi.yaml
	$(TOOLS) oapi-codegen -config sdk/go/cfg.yaml openapi/openapi.yaml
	$(TOOLS) sqlc generate
	npm --prefix sdk/typescript run --silent generate

# The sums are kept in the checkout, so checks in two worktrees at once cannot mix them up.
check-generated:
	@mkdir -p bin && sha256sum $(GENERATED) > bin/generated.before
	@$(MAKE) --no-print-directory generate
	@sha256sum $(GENERATED) > bin/generated.after
	@diff -u bin/generated.before bin/generated.after \
	  || { echo "generated code was stale: run 'make generate' and commit the result"; exit 1; }
	@echo "generated code is up to date"

# golangci-lint's default 1m timeout is too short on a loaded machine, and without
# --allow-parallel-runners it refuses to run while another worktree's lint runs.
LINT_FLAGS := --timeout 20m --allow-parallel-runners

lint: node-deps
	$(NODE_TOOLS)/redocly lint openapi/openapi.yaml --config openapi/redocly.yaml
	$(GO) vet ./...
	$(TOOLS) golangci-lint run $(LINT_FLAGS) ./...
	cd sdk/go && $(GO) vet ./... && $(GO) tool -modfile=../../tools/go.mod golangci-lint run $(LINT_FLAGS) --config ../../.golangci.yaml ./...

# 30m, not go test's 10m: internal/scaffold's test builds and tests a copy of the checkout,
# minutes on a loaded machine.
test-go:
	$(GO) test -race -count=1 -timeout 30m ./...

# Both SDKs' tests start bin/kiln; the TypeScript ones also type-check the READMEs' examples,
# run the README's quick start and install the packed package into a project of its own.
test-sdk: build node-deps
	cd sdk/go && KILN_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 ./...
	KILN_BIN=$(CURDIR)/$(BIN) npm --prefix sdk/typescript test

test: check-generated lint test-go test-sdk
test check-generated lint test-go test-sdk: test-deps

test-deps:
	bash scripts/dev-deps.sh --test

# Known vulnerabilities in the Go code (govulncheck) and both npm lockfiles (npm audit); not part
# of `make test`, since it needs the vulnerability databases. Offline: VULNDB=DIR (a local Go
# database; `bash scripts/audit.sh --build-db DIR` makes one through the Go module proxy).
audit:
	VULNDB='$(VULNDB)' GO='$(GO)' bash scripts/audit.sh

BENCH_FLAGS ?=
bench: deps build
	$(GO) test ./server -run '^$$' -bench Middleware -benchmem -count 6
	$(GO) test ./internal/jobs -run '^$$' -bench . -benchtime 1x -count 3
	$(GO) test ./internal/rag -run '^$$' -bench Ingest -benchtime 1x
	$(GO) test ./server -run '^$$' -bench KnowledgeBaseSearch100k -benchtime 1x -timeout 60m
	$(GO) test ./internal/exports -run '^$$' -bench ExportOrgLarge -benchtime 1x -timeout 20m
	$(GO) test ./internal/erasure -run '^$$' -bench EraseOrgLarge -benchtime 1x -timeout 20m
	$(GO) run ./bench/gateway -kiln $(BIN) $(BENCH_FLAGS)

# Development workflow (docs: README, "Working on Kiln"): the API breaking-change gate, git
# hooks and a local release. kiln-dev is a tool for working on Kiln, not part of the product.
KILN_DEV := $(GO) run ./cmd/kiln-dev
.PHONY: api-check hooks release-dry-run

# Fails on a breaking change of the spec since the last release tag (or BASE=<ref>) unless
# info.version's major number changed; the report names each break.
api-check:
	$(KILN_DEV) api-check $(if $(BASE),--base '$(BASE)')
	$(KILN_DEV) sdk-versions >/dev/null
test: api-check

hooks:
	$(TOOLS) lefthook install

# Builds what a release publishes into dist/, publishing nothing (not part of `make test`).
release-dry-run: node-deps
	bash scripts/release-dry-run.sh
