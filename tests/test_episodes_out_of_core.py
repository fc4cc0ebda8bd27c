"""The ``episodes`` stage out of core (``pipeline/partitioned.py``) writes what the
in-memory stage writes: the same rows in the same order, the same values and dtypes, and
the same ``metrics/episodes.json``.

The stage runs twice in a scratch project on the same clean tables: once whole
(``episodes.max_rows_in_memory`` above the extract) and once in partitions of at most a few
hundred referrals (and plans), so the extract is cut into many partitions. The tables are a
small simulated extract made awkward on purpose: referral and plan rows shuffled (so order
of first appearance is not file order by child, and a child's rows are scattered), children
without a family id, children with no referral, children with plans only, referrals on the
same day (ties kept in input order), a child with more referrals than a partition holds, and
open referrals and plans. All data are synthetic.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import episodes, partitioned, simulate
from pipeline.cli import InputError
from pipeline.io import write_parquet
from pipeline.partitioned import child_partitions
from tests.conftest import with_changes

SMALL_PARTITION = 300           # referrals (plans) per partition: about 17 referral partitions


@pytest.fixture(scope="module")
def awkward_extract(params):
    sim = simulate.simulate(with_changes(params, simulate={"n_children": 3000}))
    rng = np.random.default_rng(12)
    children, referrals, plans = sim.children.copy(), sim.referrals.copy(), sim.plans.copy()
    children.loc[rng.choice(len(children), 200, replace=False), "family_id"] = None
    # 40 children lose their referrals (children with no referral), 15 of them keep plans (plans only).
    with_plans = children["child_id"][children["child_id"].isin(plans["child_id"])].to_numpy()
    without_plans = children["child_id"][~children["child_id"].isin(plans["child_id"])].to_numpy()
    dropped = np.r_[with_plans[:15], without_plans[:25]]
    referrals = referrals[~referrals["child_id"].isin(dropped)]
    # One child with far more referrals than a partition holds, some on the same day.
    busy = children["child_id"].iloc[100]
    extra = referrals[referrals["child_id"] == busy].iloc[[0] * 400].copy()
    extra["referral_id"] = [f"X{k:04d}" for k in range(len(extra))]
    extra["referral_date"] = extra["referral_date"] + pd.to_timedelta(rng.integers(0, 1500, len(extra)) // 3 * 3, "D")
    extra["closure_date"] = extra["referral_date"] + pd.Timedelta(days=10)
    # Same-day repeats of other children's referrals (ties in input order).
    ties = referrals.sample(150, random_state=3).copy()
    ties["referral_id"] = [f"T{k:04d}" for k in range(len(ties))]
    ties["outcome"] = "NFA"
    referrals = pd.concat([referrals, extra, ties], ignore_index=True)
    referrals = referrals.iloc[rng.permutation(len(referrals))].reset_index(drop=True)
    plans = plans.iloc[rng.permutation(len(plans))].reset_index(drop=True)
    return children, referrals, plans


def _project(tmp_path, params, tables, max_rows):
    for name, table in zip(("children", "referrals", "plans"), tables):
        write_parquet(table, tmp_path / "data" / "clean" / f"{name}.parquet")
    run = with_changes(params, episodes={"max_rows_in_memory": max_rows}, compute={"scheduler": None})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(run))


def _run_stage(tmp_path, monkeypatch, params, tables, max_rows):
    """The stage's outputs in a scratch project: the two tables as read back, and the metrics."""
    _project(tmp_path, params, tables, max_rows)
    monkeypatch.chdir(tmp_path)
    episodes.main()
    return (pd.read_parquet(tmp_path / "data/analysis/rereport.parquet"),
            pd.read_parquet(tmp_path / "data/analysis/cpp_durations.parquet"),
            json.loads((tmp_path / "metrics/episodes.json").read_text()))


def assert_same_outputs(whole, parts):
    for a, b in zip(whole[:2], parts[:2]):
        assert list(a.columns) == list(b.columns) and a.dtypes.to_dict() == b.dtypes.to_dict()
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert whole[2] == parts[2]


def assert_same_files(tmp_path):
    """The same bytes: the parts are written in the in-memory writer's row groups."""
    for name in ("data/analysis/rereport.parquet", "data/analysis/cpp_durations.parquet", "metrics/episodes.json"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes(), name


def test_out_of_core_stage_writes_the_in_memory_outputs(awkward_extract, params, tmp_path, monkeypatch):
    monkeypatch.setattr(partitioned, "BATCH_ROWS", 1000)     # the tables read in several batches
    whole = _run_stage(tmp_path / "whole", monkeypatch, params, awkward_extract, 10 ** 9)
    parts = _run_stage(tmp_path / "parts", monkeypatch, params, awkward_extract, SMALL_PARTITION)
    # The test shows something: many partitions of each table, the awkward rows present.
    clean = tmp_path / "parts/data/clean"
    assert child_partitions(clean / "referrals.parquet", SMALL_PARTITION)["part"].n_unique() > 10
    assert child_partitions(clean / "plans.parquet", SMALL_PARTITION)["part"].n_unique() >= 2
    rereport, durations, metrics = whole
    assert len(rereport) > 3000 and rereport["family_id"].isna().any() and durations["end_date"].isna().any()
    assert not rereport["child_id"].is_monotonic_increasing       # order of first appearance, not of id
    assert metrics["counts"]["same_episode_reports"] > 0 and metrics["dfe_rereferral_within_12_months"]["share"] > 0
    assert_same_outputs(whole, parts)
    assert_same_files(tmp_path)
    assert sorted(p.name for p in (tmp_path / "parts/data/analysis").iterdir()) == ["cpp_durations.parquet",
                                                                                  "rereport.parquet"]


def test_first_per_child_on_referral_origin_is_the_same(awkward_extract, params, tmp_path, monkeypatch):
    params = with_changes(params, episodes={"index": "first_per_child", "time_origin": "referral"})
    whole = _run_stage(tmp_path / "whole", monkeypatch, params, awkward_extract, 10 ** 9)
    parts = _run_stage(tmp_path / "parts", monkeypatch, params, awkward_extract, SMALL_PARTITION)
    assert whole[2]["counts"]["later_episodes_not_index"] > 0
    assert_same_outputs(whole, parts)


def test_no_plans_and_no_index_referral_are_the_same(awkward_extract, params, tmp_path, monkeypatch):
    """Empty outputs: every referral still open (no index referral) and no plan at all."""
    children, referrals, plans = awkward_extract
    referrals = referrals.assign(closure_date=pd.NaT)
    tables = (children, referrals, plans.iloc[:0])
    whole = _run_stage(tmp_path / "whole", monkeypatch, params, tables, 10 ** 9)
    parts = _run_stage(tmp_path / "parts", monkeypatch, params, tables, SMALL_PARTITION)
    assert len(whole[0]) == 0 and len(whole[1]) == 0 and "status" in whole[2]
    assert_same_outputs(whole, parts)
    assert_same_files(tmp_path)


def test_what_the_in_memory_path_crashes_on_is_one_line(awkward_extract, params, tmp_path, monkeypatch):
    children, referrals, plans = awkward_extract
    orphan = (children[children["child_id"] != referrals["child_id"].iloc[0]], referrals, plans)
    with pytest.raises(InputError, match=r"referrals\.parquet: child_id: 1 children not in .*children\.parquet"):
        _run_stage(tmp_path / "orphan", monkeypatch, params, orphan, SMALL_PARTITION)
    repeated = (pd.concat([children, children.iloc[:2]], ignore_index=True), referrals, plans)
    with pytest.raises(InputError, match=r"children\.parquet: child_id: 2 repeated ids"):
        _run_stage(tmp_path / "repeated", monkeypatch, params, repeated, SMALL_PARTITION)
    # Nothing half-written is left behind, nor the partitions' temporary files.
    assert not list((tmp_path / "orphan/data/analysis").iterdir())


def test_parts_are_written_in_the_whole_tables_row_groups(tmp_path, monkeypatch):
    """Row groups of 4 rows (instead of about a million) from parts of 3, 0, 6, 2 and 1 rows,
    a string column with no value in the first parts: the bytes ``pq.write_table`` writes
    for the whole frame in row groups of 4."""
    monkeypatch.setattr(partitioned, "ROW_GROUP_ROWS", 4)
    whole = pd.DataFrame({"id": [f"r{k}" for k in range(12)], "n": np.arange(12, dtype=np.int8),
                          "day": pd.date_range("2020-01-01", periods=12),
                          "reason": [None] * 9 + ["age_18", None, "extract_date"]})
    with partitioned._parquet_parts(tmp_path / "parts.parquet") as write:
        for rows in (slice(0, 3), slice(3, 3), slice(3, 9), slice(9, 11), slice(11, 12)):
            write(whole.iloc[rows].reset_index(drop=True))
    table = pa.Table.from_pandas(whole, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, tmp_path / "whole.parquet", compression="zstd", row_group_size=4)
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups == 3
    assert (tmp_path / "parts.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
