# orderd — `make help` lists the targets.
#
# Tools are pinned and installed into .bin/ (git-ignored) once; the private
# MariaDB servers of `make run` and `make test` live under .data/.

SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTOVALIDATE_VERSION      := v1.2.2
STATICCHECK_VERSION        := v0.8.2

BIN      := $(CURDIR)/.bin
RUN_PORT ?= 33061
CERTS_DIR ?= .data/certs
FUZZTIME  ?= 30s

# make run TLS=1: mTLS with the certificates of make certs and their policy.
# make run BEARER=1: server-only TLS, callers known by bearer tokens.
RUN_FLAGS :=
ifneq ($(TLS),)
RUN_FLAGS += -tls-cert=$(CERTS_DIR)/server.pem -tls-key=$(CERTS_DIR)/server-key.pem -tls-client-ca=$(CERTS_DIR)/ca.pem -policy-file=$(CERTS_DIR)/policy.json
endif
ifneq ($(BEARER),)
RUN_FLAGS += -tls-cert=$(CERTS_DIR)/server.pem -tls-key=$(CERTS_DIR)/server-key.pem -bearer-tokens-file=$(CERTS_DIR)/bearer-tokens -policy-file=$(CERTS_DIR)/policy.json
endif
GO_TEST_FLAGS ?= -race -shuffle=on -count=1 -timeout=20m

.PHONY: help
help: ## list targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# A stamp per version: changing a version reinstalls, nothing else does.
$(BIN)/.buf-$(BUF_VERSION):
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@touch $@
$(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@
$(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

$(BIN)/.staticcheck-$(STATICCHECK_VERSION):
	GOBIN=$(BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@

.PHONY: tools
tools: $(BIN)/.buf-$(BUF_VERSION) $(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) $(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION) $(BIN)/.staticcheck-$(STATICCHECK_VERSION) ## install pinned buf, protoc plugins and staticcheck into .bin/

# protovalidate's validate.proto comes from the Go module cache (the Buf
# Schema Registry is not used), into the git-ignored third_party/.
third_party/protovalidate/buf/validate/validate.proto:
	@dir=$$(go mod download -json github.com/bufbuild/protovalidate@$(PROTOVALIDATE_VERSION) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	  test -n "$$dir" || { echo "cannot download github.com/bufbuild/protovalidate@$(PROTOVALIDATE_VERSION)"; exit 1; }; \
	  mkdir -p $(@D) && cp "$$dir/proto/protovalidate/buf/validate/validate.proto" $@ && chmod 644 $@

.PHONY: generate
generate: tools third_party/protovalidate/buf/validate/validate.proto ## regenerate gen/ from proto/ with buf
	$(BIN)/buf generate

.PHONY: lint
lint: tools third_party/protovalidate/buf/validate/validate.proto ## buf lint, gofmt, go vet, staticcheck
	$(BIN)/buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	go vet ./...
	$(BIN)/staticcheck ./...

.PHONY: check
check: generate lint ## fail if gen/ is stale, go.mod untidy, or lint fails (buf lint, gofmt, vet, staticcheck)
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { echo "gen/ has untracked files: run make generate and commit"; git status --short -- gen/; exit 1; }
	go mod tidy -diff

.PHONY: build
build: ## build bin/orderd
	go build -o bin/orderd ./cmd/orderd

.PHONY: run
run: build $(if $(TLS)$(BEARER),$(CERTS_DIR)/ca.pem) ## serve on 127.0.0.1:50051 (own MariaDB under .data/run-mysql unless ORDERD_MYSQL_DSN is set); TLS=1: mTLS, BEARER=1: TLS + bearer tokens
	@if [ -z "$$ORDERD_MYSQL_DSN" ]; then \
	  dsn=$$(scripts/mysql-private start .data/run-mysql $(RUN_PORT) orderd) || exit 1; \
	  echo "using private MariaDB: $$dsn (stop it with make db-stop)"; \
	  export ORDERD_MYSQL_DSN="$$dsn"; \
	fi; exec bin/orderd serve $(RUN_FLAGS)

$(CERTS_DIR)/ca.pem:
	go run ./cmd/orderctl certs create --dir $(CERTS_DIR)

.PHONY: certs
certs: $(CERTS_DIR)/ca.pem ## throwaway CA, server and client certificates, policy and bearer tokens in CERTS_DIR (.data/certs)

.PHONY: test
test: ## all tests, -race, against ORDERD_TEST_MYSQL_DSN or a private MariaDB under .data/test-mysql
	go test $(GO_TEST_FLAGS) ./...

.PHONY: fuzz
fuzz: ## run every fuzz target of server/ for FUZZTIME each (default 30s), against a real MariaDB
	@set -e; for t in $$(go test -list '^Fuzz' ./server | grep '^Fuzz'); do \
	  echo "== $$t ($(FUZZTIME))"; \
	  go test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) ./server; \
	done

.PHONY: bench
bench: ## benchmark orderd against the raw SQL floor (own MariaDB; BENCH_FLAGS=-quick for ~1 min)
	go run ./cmd/orderbench $(BENCH_FLAGS)

.PHONY: soak
soak: ## the randomized fault run for ORDERD_FAULT_SOAK (default 5m)
	ORDERD_FAULT_SOAK=$${ORDERD_FAULT_SOAK:-5m} go test -race -count=1 -timeout=0 -run TestRandomizedFaults -v ./faults

.PHONY: db-stop
db-stop: ## stop the private MariaDB servers of make run and make test
	scripts/mysql-private stop .data/run-mysql
	scripts/mysql-private stop .data/test-mysql

.PHONY: clean
clean: db-stop ## remove build output, private databases and tools
	rm -rf bin .data .bin third_party
