# The two set-up commands of the README: `make demo` and `make test`.
# Everything they need is installed here, never by hand (CI runs a clean clone).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
SYSSTAMP := $(VENV)/.installed-system
# Debian packages the tests need: the reference `age` tool (interoperability tests and
# the benchmark baseline) and SoftHSM2 (PKCS#11 token tests).
DEBS := age softhsm2

.PHONY: demo test lint typecheck unit bench system clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(DEVSTAMP): $(STAMP) pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $@

# Installs the Debian packages when they are missing and we may (root, or sudo).
system:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "missing Debian packages:$$missing (install them, or the tests that need them skip)"; exit 0; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/accord demo

# mypy finds modules by their folders, and the repository's folders (crypto/, gateway/...)
# are installed as `accord.crypto`, `accord.gateway`...: it reads them through a tree of
# links named as they are installed.
TYPECHECK := $(VENV)/typecheck

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check crypto
	$(VENV)/bin/lint-imports --config pyproject.toml
	@mkdir -p $(TYPECHECK)/accord
	@for p in crypto policy storage gateway; do ln -sfn "$(CURDIR)/$$p" "$(TYPECHECK)/accord/$$p"; done
	@ln -sfn "$(CURDIR)/deploy/profiles" "$(TYPECHECK)/accord/profiles"
	cd $(TYPECHECK) && $(CURDIR)/$(VENV)/bin/mypy --config-file "$(CURDIR)/pyproject.toml" --cache-dir "$(CURDIR)/.mypy_cache"

test: $(DEVSTAMP) system lint
	$(PY) -m tests.vectors.generate --check
	$(PY) -m tests.vectors.merkle.generate --check
	$(VENV)/bin/pytest --cov --cov-branch --cov-report=term:skip-covered -q

bench: $(DEVSTAMP) system
	$(PY) -m bench.crypto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
