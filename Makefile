# credhop: `make run` starts the proxy, `make test` runs the whole suite.
# Everything the tests need is installed here; nothing is taken from the
# machine's own configuration.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell scripts/find-python)
PYTHON311 ?= $(shell command -v python3.11 || ls -d $(HOME)/.pyenv/versions/3.11*/bin/python3 2>/dev/null | tail -1)
VENV := .venv
VENVS := .venvs
UV_OLD_VERSION := 0.5.25
UV_OLD := .tools/uv-$(UV_OLD_VERSION)/bin/uv
LISTEN_HOST ?= 127.0.0.1
LISTEN_PORT ?= 8080
RULES ?= addons/credhop/rules.yaml
HOPLOG ?= credhop-hops.jsonl
# pip's "Location ... is ignored" lines come from this machine's index config
PIP_QUIET := 2>&1 | grep -v "is ignored: it is neither" || true
PYTEST_ARGS ?=

.PHONY: help run run-deps test test-unit test-e2e test-compat deps tools system-deps fixture demo clients clients-deps bench bench-instructions bench-deps fleet-bench clean

help:
	@echo "make run    start the proxy (credhop proxy: mitmdump with credhop) and $(RULES) on $(LISTEN_HOST):$(LISTEN_PORT)"
	@echo "make test   install what the tests need and run the whole suite"
	@echo "make fixture  start the test redirector + auth-only index (for trying credhop by hand)"
	@echo "make clients  run the client matrix and write docs/clients.md"
	@echo "make demo     uv 0.5.25 through credhop, observe-only (fails) and inject (works), with both reports"
	@echo "make bench    measure credhop against bare mitmdump (< 10 min) and write docs/performance.md"
	@echo "make bench-instructions  the same as instructions per request, under valgrind (docs/performance-instructions.md)"

# what `make run` needs: credhop with mitmproxy and the fleet extra, nothing for the tests
$(VENV)/.run-installed: pyproject.toml
	@echo "credhop: creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip $(PIP_QUIET)
	$(VENV)/bin/python -m pip install -q -e '.[fleet]' $(PIP_QUIET)
	$(VENV)/bin/python -c 'import credhop.addon, credhop.redis_store, mitmproxy.version as v; print("credhop: mitmproxy", v.VERSION)'
	touch $@

# the tests' own: pytest, hypothesis, playwright (driving the system chromium) and uv
$(VENV)/.installed: $(VENV)/.run-installed
	$(VENV)/bin/python -m pip install -q -e '.[test,fleet]' uv $(PIP_QUIET)
	$(VENV)/bin/python -c 'import pytest, hypothesis, playwright.sync_api'
	touch $@

run-deps: $(VENV)/.run-installed
deps: $(VENV)/.installed

run: run-deps
	@echo "credhop: proxy on http://$(LISTEN_HOST):$(LISTEN_PORT), rules $(RULES), hop log $(HOPLOG)"
	@echo "  point clients at it:"
	@echo "    export HTTP_PROXY=http://$(LISTEN_HOST):$(LISTEN_PORT) HTTPS_PROXY=http://$(LISTEN_HOST):$(LISTEN_PORT)"
	@echo "    export SSL_CERT_FILE=$$HOME/.mitmproxy/mitmproxy-ca-cert.pem   # uv; pip: --cert \$$SSL_CERT_FILE"
	@echo "  (mitmproxy creates that CA file on its first start)"
	$(VENV)/bin/credhop proxy --listen-host $(LISTEN_HOST) --listen-port $(LISTEN_PORT) \
		--set credhop_rules=$(RULES) --set credhop_log=$(HOPLOG) $(ARGS)

fixture: deps
	$(VENV)/bin/python -m tests.fixtures.registry --workdir $${WORKDIR:-/tmp/credhop-fixture} $(ARGS)

# -- test set-up ----------------------------------------------------------------

system-deps:
	@# as root also what tests/e2e/test_transparent.py needs (network namespaces; they skip otherwise)
	@missing=""; pairs="curl:curl git:git chromium:chromium nginx:nginx redis-server:redis-server haproxy:haproxy valgrind:valgrind promtool:prometheus"; \
	if [ "$$(id -u)" = 0 ]; then pairs="$$pairs nft:nftables iptables:iptables squid:squid openssl:openssl"; fi; \
	for pair in $$pairs; do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "credhop: installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "credhop: please install:$$missing" >&2; exit 1; fi; fi

$(UV_OLD):
	$(PYTHON) -m venv .tools/uv-$(UV_OLD_VERSION)
	.tools/uv-$(UV_OLD_VERSION)/bin/python -m pip install -q uv==$(UV_OLD_VERSION) $(PIP_QUIET)
	test -x $@

$(VENVS)/mitmproxy-%/.installed: pyproject.toml
	@test -n "$(PYTHON311)" || { echo "credhop: python3.11 not found (needed for mitmproxy $*)" >&2; exit 1; }
	$(PYTHON311) -m venv $(VENVS)/mitmproxy-$*
	$(VENVS)/mitmproxy-$*/bin/python -m pip install -q 'mitmproxy==$*' -e '.[test,fleet]' $(PIP_QUIET)
	$(VENVS)/mitmproxy-$*/bin/python -c 'import mitmproxy.version as v; assert v.VERSION == "$*", v.VERSION'
	touch $@

tools: deps system-deps $(UV_OLD)

export CREDHOP_UV_OLD = $(abspath $(UV_OLD))
export CREDHOP_UV = $(abspath $(VENV)/bin/uv)
export CREDHOP_MITMDUMP = $(abspath $(VENV)/bin/mitmdump)
# a missing tool fails the run instead of skipping tests
export CREDHOP_STRICT ?= 1

test: tools clients-deps $(VENVS)/mitmproxy-11.0.2/.installed $(VENVS)/mitmproxy-10.4.2/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-compat

test-unit: deps
	$(VENV)/bin/python -m pytest -q -m "not e2e" $(PYTEST_ARGS)

test-e2e: tools clients-deps
	$(VENV)/bin/python -m pytest -q -m e2e $(PYTEST_ARGS)

test-compat: $(VENVS)/mitmproxy-11.0.2/.installed $(VENVS)/mitmproxy-10.4.2/.installed
	for v in 11.0.2 10.4.2; do echo "credhop: unit tests on mitmproxy $$v"; \
		CREDHOP_FUZZ_SECONDS=3 $(VENVS)/mitmproxy-$$v/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider $(PYTEST_ARGS); done

demo: tools
	$(VENV)/bin/python scripts/demo.py

clients-deps: deps
	scripts/clients/install.sh

clients: deps clients-deps
	$(VENV)/bin/python scripts/matrix.py $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

# matplotlib draws the chart; a bench-only dependency, installed into .venv
bench-deps: deps
	$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/python -m pip install -q matplotlib $(PIP_QUIET)

bench: bench-deps $(UV_OLD)
	CREDHOP_BENCH_MAKE=1 $(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

# valgrind (callgrind) counts the instructions: system-deps installs it
bench-instructions: deps system-deps
	CREDHOP_BENCH_MAKE=1 $(VENV)/bin/python scripts/bench.py --instructions $(BENCH_ARGS)

# 1 to 4 instances behind haproxy, Redis store against memory + sticky, 1,000 and 10,000 clients (< 15 min);
# redis-server and haproxy from system-deps. FLEET_BENCH_ARGS=--quick: a minute or two
fleet-bench: bench-deps system-deps
	CREDHOP_BENCH_MAKE=1 $(VENV)/bin/python scripts/fleet_bench.py $(FLEET_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENVS) .tools .pytest_cache .hypothesis
