# make repro: set up, then run the whole pipeline on the embedded synthetic default.
# make test:  set up, then run the tests.     make bench: the speed and memory targets.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test bench clean-venv chromium

setup: $(VENV)/.installed chromium

chromium:   # optional: the browser check of reports/report.html is skipped without it
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	  || echo "note: could not install chromium; the browser check will be skipped"; \
	else echo "note: chromium not installed (needs apt-get and root); the browser check will be skipped"; fi

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest

bench: setup
	python -m pipeline.bench

clean-venv:
	rm -rf $(VENV)
