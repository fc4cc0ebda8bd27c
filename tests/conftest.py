"""Shared fixtures: the project's own params, and small simulated extracts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pipeline import config, faults, simulate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def params() -> dict:
    return config.load_params(ROOT / "params.yaml")


def with_changes(params: dict, **sections) -> dict:
    """A deep copy of params with ``section={key: value}`` overrides."""
    out = copy.deepcopy(params)
    for section, changes in sections.items():
        if isinstance(changes, dict):
            out[section].update(changes)
        else:
            out[section] = changes
    return out


@pytest.fixture(scope="session")
def default_extract(params):
    """The default synthetic extract (clean tables and truth), generated once."""
    return simulate.simulate(params)


@pytest.fixture(scope="session")
def faulted_extract(params, default_extract):
    """The default extract as raw text with faults injected, and the fault log."""
    tables = {"children": default_extract.children, "referrals": default_extract.referrals,
              "plans": default_extract.plans}
    return faults.inject(tables, config.rng(params, "faults"), params["simulate"]["fault_rate"],
                         config.extract_date(params))
