# raincast — `make help` lists the targets. README commands and CI call these targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= uv
export UV_LINK_MODE ?= copy
# Each DVC stage and Airflow task is a fresh Python process: let it reuse cached bytecode
# (with PYTHONDONTWRITEBYTECODE set, every process recompiles MLflow & co, ~3 s each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install system-deps stack-deps run airflow up down ui test test-fast test-stack lint deps-check format bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## Install uv (if missing) and sync the locked environment into .venv
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet "uv==0.13.8"
	$(UV) sync --locked --all-extras

run: install ## One full daily cycle on embedded defaults (RAINCAST_SOURCE / RAINCAST_DATE to change)
	$(UV) run --locked raincast run

airflow: install ## Airflow standalone on http://127.0.0.1:8080 (DAGs unpaused, local task runner)
	$(UV) run --locked raincast airflow

# Debian packages some tests drive for real (Prometheus, Pushgateway, nginx, Chromium,
# docker-compose's config parser). Installed when missing and apt-get is available.
SYSTEM_PKGS := prometheus prometheus-pushgateway nginx-light chromium docker-compose wrk
SYSTEM_BINS := promtool prometheus-pushgateway nginx chromium docker-compose wrk

system-deps: ## Install the Debian packages the tests use (needs root + apt-get)
	@missing=""; for b in $(SYSTEM_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PKGS) >/dev/null; \
	  else echo "warning: missing$$missing (tests that need them will skip)"; fi; \
	fi

# What `make test-stack` needs to run the compose stack for real: a Docker engine (started
# by the test when none runs, and stopped again), docker-compose, and debootstrap for the
# stand-in base image (no image registry is assumed reachable).
STACK_PKGS := docker.io docker-compose debootstrap
STACK_BINS := dockerd docker-compose debootstrap

stack-deps: ## Install Docker engine, docker-compose and debootstrap (needs root + apt-get)
	@missing=""; for b in $(STACK_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(STACK_PKGS) >/dev/null; \
	  else echo "error: missing$$missing and no root apt-get to install them" >&2; exit 1; fi; \
	fi

up: install ## Whole system on one machine, no Docker (MLflow, Airflow, API, UI, Prometheus)
	$(UV) run --locked raincast up

down: ## Stop what `make up` started
	$(UV) run --locked raincast down

ui: install ## Streamlit demo UI on http://127.0.0.1:8501 (API at RAINCAST_API_URL, default http://127.0.0.1:3000)
	$(UV) run --locked streamlit run src/raincast/ui/app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

test: install system-deps ## Run the whole test suite
	$(UV) run --locked pytest

test-stack: install stack-deps ## The compose stack in containers: build, up, daily loop, faults, teardown
	RAINCAST_STACK_TESTS=1 $(UV) run --locked pytest tests/e2e/stack -p no:cacheprovider -o timeout=3600

test-fast: install ## Unit tests only
	$(UV) run --locked pytest tests/unit tests/data tests/model -q

PY_DIRS := src dags tests bench testbed

lint: install deps-check ## ruff lint + format check, mypy on src/, deps-check
	$(UV) run --locked ruff check $(PY_DIRS)
	$(UV) run --locked ruff format --check $(PY_DIRS)
	$(UV) run --locked mypy

# Two passes: the dev group may serve the tests and benchmarks, never src/ or dags/.
deps-check: install ## deptry: every third-party import is a declared dependency ([tool.deptry])
	$(UV) run --locked deptry src dags
	$(UV) run --locked deptry . --exclude '\.venv' --exclude '\.git' --ignore DEP002,DEP004

format: install ## Apply ruff fixes and formatting
	$(UV) run --locked ruff check --fix $(PY_DIRS)
	$(UV) run --locked ruff format $(PY_DIRS)

bench: install system-deps stack-deps ## Benchmarks (quality, timings, serving, stack, ...) on ../shared/data -> bench/results/
	$(UV) run --locked python -m bench.run

clean: ## Remove runtime state and DVC outputs (var/, data/)
	rm -rf var data .dvc/tmp .dvc/cache
