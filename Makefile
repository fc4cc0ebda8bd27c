# make repro:     set up, then run the whole pipeline on the embedded synthetic default.
# make test:      set up, then run the tests.    make test-fast: the same without the slow ones.
# make bench:     the speed and memory targets.
# make setup:     .venv/ from requirements.lock (hash-checked); from wheelhouse/ alone, with no
#                 network, when that folder exists.
# make wheelhouse: every file of the lock into wheelhouse/ (on a connected machine of the same
#                 platform and Python), for an offline install.
# make lock:      re-resolve requirements.lock after pyproject.toml changes (needs the network);
#                 make lock UPGRADE="--upgrade-package numpy" moves one pin, UPGRADE=--upgrade all.
VENV ?= .venv
PYTHON ?= python3
LOCK := requirements.lock
WHEELHOUSE := wheelhouse
# Locked packages that publish no wheel: wheelhouse/ holds their sdist (hash-checked like
# the rest), built offline by `make setup` with setuptools and wheel from wheelhouse/.
# Comma-separated.
SDIST_ONLY := antlr4-python3-runtime,autograd-gamma
PIP := $(VENV)/bin/python -m pip --disable-pip-version-check
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test test-fast bench clean-venv chromium lock wheelhouse

setup: $(VENV)/.installed chromium

chromium:   # optional: the browser check of reports/report.html is skipped without it
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	  || echo "note: could not install chromium; the browser check will be skipped"; \
	else echo "note: chromium not installed (needs apt-get and root); the browser check will be skipped"; fi

# Exactly the locked versions (pip refuses any file whose hash is not in the lock), then the
# project itself without resolving anything (--no-deps) and with the locked setuptools
# (--no-build-isolation): nothing unpinned is fetched, and with wheelhouse/ nothing at all.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@if [ -d $(WHEELHOUSE) ]; then echo "installing from $(WHEELHOUSE)/ only (--no-index)"; fi
	source=$$([ -d $(WHEELHOUSE) ] && echo "--no-index --find-links $(WHEELHOUSE)"); \
	$(PIP) install --quiet --require-hashes $$source -r $(LOCK) && \
	$(PIP) install --quiet --no-deps --no-build-isolation $$source -e .
	touch $@

# uv pip compile (pinned in pyproject's `lock` group): --universal adds the environment
# markers of every platform and --generate-hashes the hash of every file of each pinned
# release; the pins already in the lock are kept (read from the output file) unless UPGRADE
# asks otherwise. The lock is replaced only when it changes (its date drives make setup).
lock: $(VENV)/.installed
	$(PIP) install --quiet --group lock
	cp $(LOCK) $(LOCK).new
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --group setup --universal --python-version 3.11 \
	  --generate-hashes --custom-compile-command "make lock" --quiet $(UPGRADE) -o $(LOCK).new
	{ echo "# Every package make setup installs, pinned with the sha256 of each of its files (all platforms,"; \
	  echo "# CPython >= 3.11): pyproject.toml's dependencies, its test extra and its setup group."; \
	  echo "# Regenerate with: make lock (after editing pyproject.toml; commit the two together)."; \
	  cat $(LOCK).new; } > $(LOCK).tmp && rm $(LOCK).new
	@if cmp -s $(LOCK).tmp $(LOCK); then rm $(LOCK).tmp; echo "$(LOCK): unchanged"; \
	else mv $(LOCK).tmp $(LOCK); echo "$(LOCK): updated ($$(grep -c '^[A-Za-z0-9]' $(LOCK)) packages)"; fi

# Wheels for this machine's platform and Python only (--only-binary=:all:); sdists only for
# SDIST_ONLY. pip checks every download against the lock's hashes.
wheelhouse: $(LOCK)
	$(PYTHON) -m pip --disable-pip-version-check download --quiet --require-hashes --only-binary=:all: \
	  --no-binary $(SDIST_ONLY) -d $(WHEELHOUSE) -r $(LOCK)
	@echo "$(WHEELHOUSE)/: $$(ls $(WHEELHOUSE) | wc -l) files, $$(du -sh $(WHEELHOUSE) | cut -f1)"

repro: setup
	dvc repro

test: setup
	python -m pytest

test-fast: setup
	python -m pytest -m "not slow"

bench: setup
	python -m pipeline.bench

clean-venv:
	rm -rf $(VENV)
