# authsvc: every set-up step lives here, so that `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(sort $(wildcard proto/authsvc/v1/*.proto))
STUB_DIR := clients/python

.PHONY: install go-cache run test lint stubs go-stubs verify-stubs proto-lint bench openapi clean \
	cluster cluster-down cluster-status failover-drill cluster-test bench-cluster pgbench-primary

NODE_STAMP := clients/node/node_modules/.installed

# `make run` needs only Python 3.11+ and make; the Node.js and Go toolchains serve `make test`.
install: $(STAMP) $(NODE_STAMP) go-cache

# Go (the Go client's tests, the golang-jwt interop check) comes from Debian's packages, which
# .ci/run installs; here the build cache is warmed so that `make test` does not compile gRPC.
GO_ENV = GO111MODULE=off GOPATH=$$gopath:/usr/share/gocode
go-cache:
	@if ! command -v go >/dev/null; then \
	  echo "make: Go is not installed: the Go client and golang-jwt tests will be skipped (see .ci/run)"; \
	else set -e; gopath=$$(mktemp -d); trap 'rm -rf $$gopath' EXIT; \
	  mkdir -p $$gopath/src/authsvc.example/clients $$gopath/src/authsvc.example/tests/interop; \
	  cp -r clients/go $$gopath/src/authsvc.example/clients/go; \
	  cp -r tests/interop/golangjwt $$gopath/src/authsvc.example/tests/interop/golangjwt; \
	  cd $$gopath/src/authsvc.example/clients/go && $(GO_ENV) go test -count=1 -run '^$$' . >/dev/null; \
	  cd $$gopath/src/authsvc.example/tests/interop/golangjwt && $(GO_ENV) go build -o /dev/null .; \
	fi

# Reinstall only when the project's metadata changes; stubs are regenerated when a proto changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@
	@$(MAKE) --no-print-directory stubs

# The Node.js client's dependencies (its tests run inside `make test`); again when the lock changes.
$(NODE_STAMP): clients/node/package-lock.json
	@if ! command -v npm >/dev/null; then \
	  echo "make: npm is not installed: the Node.js client's tests will fail (make run does not need it)" >&2; \
	else npm ci --prefix clients/node --no-audit --no-fund && touch $@; fi

run: $(STAMP)
	$(VENV)/bin/authsvc serve

test: install
	@command -v go >/dev/null || echo "make test: Go is not installed: the Go client and golang-jwt tests are skipped"
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check service tests bench clients/python/authsvc/client.py
	$(VENV)/bin/ruff format --check service tests bench clients/python/authsvc/client.py
	$(VENV)/bin/mypy

# The proto is the one source of truth: stubs are generated from it, committed, never edited.
stubs: $(STAMP)
	$(PY) tools/gen_stubs.py $(STUB_DIR) $(PROTOS)

# Buf STANDARD lint of proto/, offline: buf comes from npm (pinned in tools/buf), the google/api
# imports from the installed googleapis-common-protos.
BUF_STAMP := tools/buf/node_modules/.installed

# `npm install --no-save`, not `npm ci`: npm records only some platforms' optional binaries of
# @bufbuild/buf in the lock and `npm ci` then refuses it; the version is pinned exactly anyway.
$(BUF_STAMP): tools/buf/package.json tools/buf/package-lock.json
	npm install --prefix tools/buf --no-save --no-audit --no-fund
	@touch $@

proto-lint: $(STAMP) $(BUF_STAMP)
	@rm -rf proto/third_party && mkdir -p proto/third_party/google/api
	@cp "$$($(PY) -c 'import google.api.annotations_pb2 as m, os; print(os.path.dirname(m.__file__))')"/*.proto proto/third_party/google/api/
	cd proto && ../tools/buf/node_modules/.bin/buf lint

# The Go client's stubs (clients/go/authsvcv1), by protoc-gen-go and protoc-gen-go-grpc (Debian's
# protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc); committed like the Python ones. The
# google/api imports come from googleapis-common-protos, as for Python; `M` options name the Go
# package, so the protos need no go_package option.
GO_MODULE := authsvc.example/clients/go
GO_STUB_DIR := clients/go/authsvcv1
GO_M = $(foreach p,$(PROTOS),--$(1)_opt=M$(p:proto/%=%)=$(GO_MODULE)/authsvcv1)
GO_TOOLS := protoc protoc-gen-go protoc-gen-go-grpc
HAVE_GO_TOOLS = $(shell for t in $(GO_TOOLS); do command -v $$t >/dev/null || echo no; done)

go-stubs: $(STAMP)
	@rm -f $(GO_STUB_DIR)/*.pb.go
	protoc -Iproto \
	  -I"$$($(PY) -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).resolve().parents[2])')" \
	  -I"$$($(PY) -c 'import grpc_tools, pathlib; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')" \
	  --go_out=clients/go --go_opt=module=$(GO_MODULE) $(call GO_M,go) \
	  --go-grpc_out=clients/go --go-grpc_opt=module=$(GO_MODULE) $(call GO_M,go-grpc) \
	  $(PROTOS)

# Python stubs always; Go stubs where protoc and its Go plugins are installed (CI installs them).
verify-stubs: stubs
	@if [ -z "$(HAVE_GO_TOOLS)" ]; then $(MAKE) --no-print-directory go-stubs; \
	  else echo "verify-stubs: protoc/protoc-gen-go/protoc-gen-go-grpc missing: Go stubs NOT checked" >&2; fi
	@git diff --exit-code --stat -- $(STUB_DIR) $(GO_STUB_DIR) || \
	  (echo "generated stubs differ from the committed ones: run 'make stubs go-stubs' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- $(STUB_DIR) $(GO_STUB_DIR))" || \
	  (echo "untracked generated stubs: run 'make stubs go-stubs' and commit" >&2; git status --porcelain -- $(STUB_DIR) $(GO_STUB_DIR) >&2; exit 1)

# Starts its own server (temporary embedded PostgreSQL, production argon2id) and prints ratios;
# then the FastAPI + fastapi-users peer, from an environment of its own (.venv-peer: never the
# service's), left out with a note when that cannot be installed.
PEER_VENV := .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP): bench/peer/requirements.txt
	@test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	@if $(PEER_VENV)/bin/python -m pip install --quiet -r bench/peer/requirements.txt; then touch $@; \
	  else echo "make bench: the peer's packages did not install: the peer is left out" >&2; fi

bench: install
	@$(MAKE) --no-print-directory $(PEER_STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

# The OpenAPI document of the REST routes, generated from the same annotations the gateway reads.
openapi: install
	$(PY) -m service.apidocs.openapi > openapi.json

# The scale-out stack on loopback (deploy/cluster.sh: etcd, 2 x PostgreSQL under Patroni in
# synchronous mode, PgBouncer, 3 replicas, HAProxy); state in .cluster/. Debian packages are
# installed with apt when missing.
cluster: install
	deploy/cluster.sh up

cluster-down:
	deploy/cluster.sh down

cluster-status:
	deploy/cluster.sh status

# Kills the PostgreSQL leader's postmaster under load through HAProxy; needs `make cluster`.
failover-drill: install
	deploy/cluster.sh drill

# Up, drill, down (down even when the drill fails): the CI step.
cluster-test: install
	deploy/cluster.sh up
	deploy/cluster.sh drill; status=$$?; deploy/cluster.sh down; exit $$status

# Up (3 replicas), load through HAProxy with 3, 2, 1 replicas (bench/cluster.py stops them one by
# one), down (down even when the bench fails). About 3 minutes; prints a table for docs/SCALING.md.
bench-cluster: install
	deploy/cluster.sh up
	deploy/cluster.sh bench; status=$$?; deploy/cluster.sh down; exit $$status

# What one PostgreSQL primary sustains on this machine for the login path's statement shapes
# (deploy/pgbench.sh: its own temporary server, pgbench, stopped afterwards).
pgbench-primary:
	deploy/pgbench.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
