# sitesteer: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := cmake etcd-server etcd-client dnsutils

.PHONY: demo test deps venv build lint bench failover-bench clean

## Install what the build needs and is missing (cmake for pingora, etcd for the fleet tests).
deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null 2>&1 || dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
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

## Headless Chromium (Debian's) and the pinned playwright-core the status-page test drives.
.PHONY: browser
BROWSER_DIR := tests/browser
browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium is installed"; else \
	  echo "installing chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
	  || { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }; \
	fi
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are missing: install Node.js 20 or newer (apt-get install nodejs npm)"; exit 1; }
	@if cmp -s $(BROWSER_DIR)/package-lock.json $(BROWSER_DIR)/node_modules/.installed-lock.json; then \
	  echo "$(BROWSER_DIR)/node_modules is ready"; \
	else \
	  cd $(BROWSER_DIR) && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.installed-lock.json; \
	fi
test: browser

## The whole test suite: unit, property and end-to-end tests.
test: deps venv
	@# The e2e suite is a test target of the sitesteer package: cargo builds the binary for it.
	@# End-to-end tests start real processes and measure sub-second timings: one at a time,
	@# so that a 2-core machine is not shared by several of them (unit tests are quick anyway).
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=1
	@$(MAKE) --no-print-directory test-netns

## The ignored real-distance test (network namespaces and a traffic shaper), where this
## machine has what it needs; else one SKIPPED line that says what is missing.
.PHONY: test-netns
test-netns:
	@why=$$($(CARGO) run -q -p sitesteer-test-support --example netlab_probe); rc=$$?; \
	if [ $$rc = 2 ]; then \
	  echo "SKIPPED netns::latency_aware_steering_prefers_the_near_site_and_leaves_it_when_slow_or_lossy: $$why"; \
	else \
	  $(CARGO) test -p sitesteer --test e2e -- --ignored --test-threads=1; \
	fi

## Formatting, clippy, and the architecture check: no module dependency cycle in any crate.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test -q -p sitesteer-lint
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -q --workspace --no-deps

## Failover benchmark against HAProxy (see BENCHMARKS.md).
failover-bench: deps
	bash benches/failover.sh

## Silent failures against HAProxy: a hung site, dropped packets, a slow site (see BENCHMARKS.md).
.PHONY: silent-bench
silent-bench: deps
	bash benches/silent.sh

## Load-aware choice against HAProxy leastconn and nginx least_conn: one of three sites
## slowed by 50 ms mid-run (see BENCHMARKS.md).
.PHONY: p2c-bench
p2c-bench: deps
	bash benches/p2c.sh

## Throughput, latency, CPU and instructions per request: sitesteer against bare pingora,
## HAProxy and nginx, interleaved (see BENCHMARKS.md; installs wrk, haproxy, nginx, valgrind).
bench: deps
	bash benches/run.sh

## Scale: 1,000 probed endpoints, idle WebSocket and SSE connections, a 200-site reload.
.PHONY: bench-scale bench-micro
bench-scale: deps
	bash benches/scale.sh

## criterion micro-benchmarks: steering, health table, Snapshots, session ids.
bench-micro: deps
	$(CARGO) bench -p sitesteer-benches --bench steer

## The full chaos suite (see RELIABILITY.md): every fault under mixed load against sitesteer
## and HAProxy, real distance in network namespaces (needs root), a 10-minute soak. Writes the
## figures into RELIABILITY.md. Knobs: CHAOS_SOAK_SECS, CHAOS_HOLD_MS, CHAOS_PARTS.
.PHONY: chaos
chaos: deps
	@missing=""; \
	command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	command -v iptables-legacy >/dev/null 2>&1 || missing="$$missing iptables"; \
	command -v tc >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	$(CARGO) build --release -p sitesteer
	$(CARGO) build --release -p sitesteer-test-support --example chaos
	SITESTEER_BIN=$(CURDIR)/target/release/sitesteer ./target/release/examples/chaos

clean:
	$(CARGO) clean
