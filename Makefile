# authsvc: every set-up step lives here, so that `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(sort $(wildcard proto/authsvc/v1/*.proto))
STUB_DIR := clients/python

.PHONY: install run test lint stubs verify-stubs proto-lint bench openapi clean

NODE_STAMP := clients/node/node_modules/.installed

install: $(STAMP) $(NODE_STAMP)

# Reinstall only when the project's metadata changes; stubs are regenerated when a proto changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@
	@$(MAKE) --no-print-directory stubs

# The Node.js client's dependencies (its tests run inside `make test`); again when the lock changes.
$(NODE_STAMP): clients/node/package-lock.json
	npm ci --prefix clients/node --no-audit --no-fund
	@touch $@

run: install
	$(VENV)/bin/authsvc serve

test: install
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

verify-stubs: stubs
	@git diff --exit-code --stat -- $(STUB_DIR) || \
	  (echo "generated stubs differ from the committed ones: run 'make stubs' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- $(STUB_DIR))" || \
	  (echo "untracked generated stubs: run 'make stubs' and commit" >&2; git status --porcelain -- $(STUB_DIR) >&2; exit 1)

# Starts its own server (temporary embedded PostgreSQL, production argon2id) and prints ratios.
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# The OpenAPI document of the REST routes, generated from the same annotations the gateway reads.
openapi: install
	$(PY) -m service.gateway.openapi > openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
