# sitesteer: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := cmake

.PHONY: demo test deps venv build lint bench failover-bench clean

## Install what the build needs and is missing (cmake for pingora).
deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust from your distribution or rustup"; exit 1; }

build: deps
	$(CARGO) build --release -p sitesteer

## Three demo MCP sites behind the proxy, with the admin API.
demo: build
	./target/release/sitesteer demo

## The Python venv of real MCP clients and servers the end-to-end tests drive (pinned).
VENV := build/venv
VENV_PACKAGES := "mcp==1.26.0" "websockets==15.0.1"
venv:
	@if $(VENV)/bin/python -c "import mcp, websockets" 2>/dev/null; then \
	  echo "$(VENV) is ready"; \
	else \
	  command -v python3 >/dev/null || { echo "python3 is missing: install python3 and python3-venv"; exit 1; }; \
	  python3 -m venv $(VENV) || { echo "cannot create $(VENV): install python3-venv"; exit 1; }; \
	  $(VENV)/bin/pip install -q $(VENV_PACKAGES); \
	fi

## The whole test suite: unit, property and end-to-end tests.
test: deps venv
	$(CARGO) build -p sitesteer
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Failover benchmark against HAProxy (see BENCHMARKS.md).
failover-bench: deps
	bash benches/failover.sh

clean:
	$(CARGO) clean
