"""The simulate stage's lean path (issue 12: 10 million children in <= 6 GB) gives the same
extract, faults, calibration figures and file bytes as the object-string tables.

simulate_lean holds ids as Arrow strings and codes as categoricals; faults.inject_lazy
holds the raw text as typed rows + faulted cells + appended rows, written in row batches;
published.achieved_figures takes derive_rereport a block of children at a time. Each is
checked here against the plain form on a small extract (3,000 children).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import with_changes
from pipeline import config, faults, published, simulate
from pipeline.io import write_csv_batches, write_csv_fast

TABLES = ("children", "referrals", "plans")


@pytest.fixture(scope="module")
def small(params):
    p = with_changes(params, simulate={"n_children": 3000})
    return p, simulate.simulate_lean(p), simulate.simulate(p)


def test_lean_tables_are_the_classic_tables(small):
    _, lean, classic = small
    assert lean.truth == classic.truth
    for name in TABLES:
        lean_frame, classic_frame = getattr(lean, name), getattr(classic, name)
        # Lean columns really are lean (else the test below compares like with like).
        assert str(lean_frame["child_id"].dtype) == "string"
        pd.testing.assert_frame_equal(simulate.classic_frame(lean_frame), classic_frame, check_exact=True)
        # The CSV text of each form is the same (categorical code -1 renders as '', like None).
        pd.testing.assert_frame_equal(faults.to_text(lean_frame), faults.to_text(classic_frame))


def test_faults_on_lean_tables_match_classic_and_batches_match_whole(small, tmp_path):
    p, lean, classic = small
    args = (float(p["simulate"]["fault_rate"]), config.extract_date(p))
    lazy, lazy_log = faults.inject_lazy({t: getattr(lean, t) for t in TABLES}, config.rng(p, "faults"), *args)
    whole, whole_log = faults.inject({t: getattr(classic, t) for t in TABLES}, config.rng(p, "faults"), *args)
    assert lazy_log == whole_log
    for name in TABLES:
        pd.testing.assert_frame_equal(lazy[name].frame(), whole[name])
        # Batches of 250 rows: faulted cells fall on both sides of batch edges.
        write_csv_batches(lazy[name].batches(rows=250), lazy[name].columns, tmp_path / f"{name}_batches.csv")
        write_csv_fast(whole[name], tmp_path / f"{name}_whole.csv")
        assert (tmp_path / f"{name}_batches.csv").read_bytes() == (tmp_path / f"{name}_whole.csv").read_bytes()
        assert sum(1 for _ in lazy[name].batches(rows=250)) > 2


def test_calibration_figures_same_on_integer_ids_and_in_blocks(small, monkeypatch):
    p, lean, classic = small
    args = (config.extract_date(p), int(p["episodes"]["same_episode_days"]))
    expected = published.achieved_figures(classic.children, classic.referrals, classic.plans, *args)
    monkeypatch.setattr(published, "CHILDREN_PER_BLOCK", 700)   # 5 blocks of the ~3,000 children
    blocks = published.achieved_figures(
        *(simulate.integer_ids(getattr(lean, t)) for t in TABLES), *args)
    assert blocks == expected
    assert simulate.integer_ids(lean.referrals)["child_id"].iloc[0] == int(classic.referrals["child_id"].iloc[0][1:])
