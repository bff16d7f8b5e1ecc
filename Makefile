# purchase-stream developer and CI entry points.  `make help` lists the targets.
#
# Works from a fresh clone on a machine with python3 (>= 3.11) and access to PyPI: the
# first target that needs it creates .venv and installs the project with its dev extras.
# The embedded Kafka-protocol broker (noida-db) comes from PyPI too; no Docker needed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SRC_DIRS := stream topologies tests benchmarks
TYPED_DIRS := stream topologies
BUILD_DIR := build
JUNIT := $(BUILD_DIR)/pytest-junit.xml
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
# Debian packages that help but are not required (kcat: poke at topics by hand).
APT_PACKAGES ?= kcat
# Debian packages the tests need (command:package): a real Prometheus and promtool for the
# monitoring tests, docker-compose (v1, no engine needed) to validate docker-compose.yml,
# chromium and its driver for the live-page test.
APT_REQUIRED ?= prometheus:prometheus promtool:prometheus docker-compose:docker-compose \
  chromium:chromium chromedriver:chromium-driver

# The install stamp changes whenever pyproject.toml does, so edits to the dependencies
# reinstall and repeated runs are instant.
PYPROJECT_HASH := $(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:12])' 2>/dev/null || echo unknown)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)

# Integration tests must run, never skip, under `make test` / `make integration`.
TEST_ENV := PURCHASE_STREAM_REQUIRE_BROKER=1 PYTHONDONTWRITEBYTECODE=1

# Fails when pytest ran nothing (all deselected/skipped): a green run must have tested.
define assert_tests_ran
	$(BIN)/python -c 'import sys, xml.etree.ElementTree as ET; \
r = ET.parse("$(JUNIT)").getroot(); s = r if r.tag == "testsuite" else r.find("testsuite"); \
n, sk = int(s.get("tests", 0)), int(s.get("skipped", 0)); \
print(f"pytest: {n} collected, {n - sk} ran, {sk} skipped"); \
sys.exit(0 if n - sk > 0 else "no tests ran: refusing to report success")'
endef

.PHONY: help venv check test unit integration chaos demo bench fmt clean distclean apt

help: ## Show this help
	@echo "usage: make <target> [PYTEST_ARGS=...] [DEMO_ARGS=...] [BENCH_ARGS=...]"
	@echo
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv and install the project + dev tools (fast when up to date)

$(STAMP): pyproject.toml
	@if [ ! -x "$(BIN)/python" ]; then \
	  echo ">> creating $(VENV) with $$($(PYTHON) --version 2>&1)"; \
	  $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "python >= 3.11 needed (set PYTHON=python3.11)")'; \
	  $(PYTHON) -m venv $(VENV) || { \
	    rm -rf $(VENV); \
	    if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	      echo ">> '$(PYTHON) -m venv' failed: installing Debian's python3-venv"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
	        && $(PYTHON) -m venv $(VENV); \
	    else false; fi; \
	  } || { \
	    echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2; \
	    rm -rf $(VENV); exit 1; }; \
	fi
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo ">> $(VENV) is up to date"

check: venv ## Lint, format check and type check (ruff incl. bandit and private-access rules, ruff format --check, mypy strict)
	$(BIN)/ruff check $(SRC_DIRS)
	$(BIN)/ruff format --check $(SRC_DIRS)
	$(BIN)/mypy $(TYPED_DIRS)

test: venv apt check ## check, then every test (integration, short chaos schedule and fuzz)
	@mkdir -p $(BUILD_DIR)
	$(TEST_ENV) $(BIN)/python -m pytest --junitxml=$(JUNIT) $(PYTEST_ARGS)
	@$(assert_tests_ran)

unit: venv ## Tests that need no broker (-m "not integration")
	@mkdir -p $(BUILD_DIR)
	$(BIN)/python -m pytest -m "not integration" --junitxml=$(JUNIT) $(PYTEST_ARGS)
	@$(assert_tests_ran)

integration: venv apt ## Integration tests on the embedded broker (fail if it cannot start)
	@mkdir -p $(BUILD_DIR)
	$(TEST_ENV) $(BIN)/python -m pytest -m integration --junitxml=$(JUNIT) $(PYTEST_ARGS)
	@$(assert_tests_ran)

chaos: venv apt ## The chaos suite at full scale: long fault schedule, 10,000 fuzz examples per input topic
	@mkdir -p $(BUILD_DIR)
	$(TEST_ENV) PURCHASE_STREAM_CHAOS=full $(BIN)/python -m pytest -m chaos -s --junitxml=$(JUNIT) $(PYTEST_ARGS)
	@$(assert_tests_ran)

demo: venv ## Run the local end-to-end demo; options: DEMO_ARGS="--duration 60 --rate 100"
	$(BIN)/purchase-stream demo $(DEMO_ARGS)

bench: venv ## Benchmarks, ~35 min (python -m benchmarks); quick: BENCH_ARGS="--quick", one figure: BENCH_ARGS="--only core --receipts 20000"
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

fmt: venv ## Format and auto-fix (ruff format, ruff check --fix)
	$(BIN)/ruff format $(SRC_DIRS)
	$(BIN)/ruff check --fix $(SRC_DIRS)

clean: ## Remove caches, build output and local state (.state, .noida); keeps .venv
	rm -rf $(BUILD_DIR) .pytest_cache .mypy_cache .ruff_cache .state .noida *.egg-info
	find $(SRC_DIRS) -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)

apt: ## Install the Debian packages the tests need (prometheus, docker-compose, chromium) and optional ones (APT_PACKAGES, default kcat)
	@missing=""; required=""; \
	for p in $(APT_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for cp in $(APT_REQUIRED); do \
	  command -v "$${cp%%:*}" >/dev/null 2>&1 || { missing="$$missing $${cp##*:}"; required="$$required $${cp##*:}"; }; \
	done; \
	$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	missing="$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' ')"; \
	if [ -z "$${missing// /}" ]; then echo ">> apt: nothing to install"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo ">> apt: installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
	    || { echo "error: apt-get install $$missing failed" >&2; exit 1; }; \
	elif [ -n "$${required// /}" ]; then \
	  echo "error: the tests need the Debian packages$$required;" >&2; \
	  echo "       run 'make apt' as root, or: sudo apt-get install --no-install-recommends$$required" >&2; \
	  exit 1; \
	else echo ">> apt: cannot install here (no apt-get or not root), skipping optional:$$missing"; fi
