# make repro: set up, then run the whole pipeline on the embedded synthetic default.
# make test:  set up, then run the tests.     make bench: the speed and memory targets.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test bench clean-venv

setup: $(VENV)/.installed

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
