# lesfocus — the two commands of the README, plus the ones developers use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the tests (and a gateway) use; installed only when running as root and missing.
DEBIAN_PACKAGES := postgresql nftables libnftables1 chromium iperf3 dnsmasq-base dnsperf \
	conntrack firefox-esr iproute2 openssl chromium-l10n tcpdump wrk nginx-light ethtool

.PHONY: demo test bench venv system-deps node-deps migration clean agent-deb

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,agent,postgresql,test]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	@scripts/install-debian-packages $(DEBIAN_PACKAGES)

node-deps:
	@if [ -f tests/extension/package.json ]; then \
		npm install --silent --no-audit --no-fund --prefix tests/extension; fi
	@if [ -f tests/support/oidc/package.json ]; then \
		npm install --silent --no-audit --no-fund --prefix tests/support/oidc; fi

## make demo: a SQLite demo school served on http://127.0.0.1:5000 (another port: make demo PORT=5001)
PORT ?= 5000
demo: venv
	$(VENV)/bin/lesfocus demo --port $(PORT)

## make test: everything the tests need, then every test
test: venv system-deps node-deps
	@scripts/run-tests

## make bench: the benchmarks under tests/bench (they print their figures)
bench: venv system-deps node-deps
	@scripts/run-tests --bench

## make migration: regenerate the schema migration from server/models.py (pre-release: one revision)
migration: venv
	@scripts/regenerate-migration

## make agent-deb: dist/lesfocus-agent_<version>_<arch>.deb for gateways (docs/agent.md);
## AGENT_DEB_VERSION, AGENT_DEB_PYTHON (3.12 for Ubuntu 24.04) and AGENT_DEB_OUT change it
agent-deb: venv
	@$(PY) scripts/build-agent-deb

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
