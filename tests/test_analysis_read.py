"""The lean read of the analysis table (pipeline/analysis_read.py) and the memory releases
the survival stage relies on: each must leave every number the models give unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis_read import columns_used, identifier_ranks, read_analysis, settings_frame
from pipeline.cox import CoxPH
from pipeline.design import with_groups
from pipeline.io import write_parquet


def _table() -> pd.DataFrame:
    # Hand-made: ids chosen so that first appearance, sorted order and UTF-8 byte order all
    # differ from the row order ("é" is U+00E9, after every ASCII letter in both orders).
    return pd.DataFrame({
        "index_referral_id": ["r1", "r2", "r3", "r4", "r5", "r6"],
        "child_id": ["c9", "c10", "c9", "é1", "c2", "c10"],
        "family_id": ["fB", "fA", "fB", "fC", "fA", "fA"],
        "time_days": [5, 3, 9, 1, 7, 2],
        "event": np.array([1, 0, 1, 1, 0, 1], dtype=np.int8),
        "outcome": ["NFA", "CP", "NFA", "CP", "NFA", "CP"],
        "prior_referrals": [0, 4, 1, 2, 3, 0],
        "sex": ["F", "M", "F", "M", "M", "F"],
    })


def test_identifier_ranks_keep_order_equality_and_first_appearance():
    import pyarrow as pa

    ids = ["c9", "c10", "c9", "é1", "c2", "c10"]
    ranks = identifier_ranks(pa.array(ids))
    # sorted distinct ids: "c10" < "c2" < "c9" < "é1" (Python's order: "1" < "2" < "9"; é last)
    assert sorted(set(ids)) == ["c10", "c2", "c9", "é1"]
    assert ranks.tolist() == [2, 0, 2, 3, 1, 0]
    assert ranks.dtype == np.int64
    assert np.array_equal(pd.factorize(ranks, sort=True)[0], pd.factorize(pd.Series(ids), sort=True)[0])
    assert np.array_equal(pd.factorize(ranks)[0], pd.factorize(pd.Series(ids))[0])   # [0, 1, 0, 2, 3, 1]


def test_read_analysis_reads_only_the_named_columns_with_ranks(tmp_path):
    path = tmp_path / "rereport.parquet"
    write_parquet(_table(), path)
    columns = columns_used(settings_frame(path).columns, ["sex"], ["prior_referrals_band", None])
    # core columns present (child_id, family_id, time_days, event), sex, and the band's source
    assert columns == ["child_id", "family_id", "time_days", "event", "prior_referrals", "sex"]
    lean = read_analysis(path, columns)
    full = pd.read_parquet(path, columns=columns)
    assert lean["family_id"].tolist() == [1, 0, 1, 2, 0, 0]     # fA -> 0, fB -> 1, fC -> 2
    assert lean["child_id"].tolist() == [2, 0, 2, 3, 1, 0]
    pd.testing.assert_frame_equal(lean.drop(columns=["child_id", "family_id"]),
                                  full.drop(columns=["child_id", "family_id"]))


def test_an_identifier_with_a_gap_stays_text(tmp_path):
    path = tmp_path / "rereport.parquet"
    table = _table()
    table.loc[2, "family_id"] = None
    write_parquet(table, path)
    lean = read_analysis(path, ["family_id", "child_id"])
    assert lean["family_id"].tolist() == ["fB", "fA", None, "fC", "fA", "fA"]   # the stage's checks see the gap
    assert lean["child_id"].dtype == np.int64


def test_settings_frame_has_the_columns_and_no_rows(tmp_path):
    path = tmp_path / "rereport.parquet"
    write_parquet(_table(), path)
    frame = settings_frame(path)
    assert list(frame.columns) == list(_table().columns) and len(frame) == 0
    assert frame["event"].dtype == np.int8 and frame["sex"].dtype == object


def test_with_groups_adds_the_band_and_leaves_its_input_alone():
    table = _table()
    out = with_groups(table)
    assert out["prior_referrals_band"].tolist() == ["0", "3+", "1", "2", "3+", "0"]
    assert out["prior_referrals_band"].dtype == object
    assert "prior_referrals_band" not in table.columns
    float_counts = with_groups(pd.DataFrame({"prior_referrals": [1.0, np.nan, 5.0]}))
    assert float_counts["prior_referrals_band"].tolist() == ["1.0", "nan", "3+"]   # as astype(str) reads them


def test_a_released_cox_model_still_summarises_and_predicts():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 2))
    time = rng.exponential(10, 200).round() + 1
    event = rng.random(200) < 0.7
    model = CoxPH().fit(X, time, event, cluster=np.arange(200) // 2)
    summary, survival = model.summary(), model.predict_survival(X[:3], [5.0, 10.0])
    model.release_data()
    assert not hasattr(model, "_rs") and not hasattr(model, "linear_predictor_")
    pd.testing.assert_frame_equal(model.summary(), summary)
    assert np.array_equal(model.predict_survival(X[:3], [5.0, 10.0]), survival)
    with pytest.raises(AttributeError):
        model.zph()


def test_robust_variance_in_column_groups_is_the_whole_at_once():
    # 11 covariates: groups of 8 and 3; the robust variance must equal the one from every
    # covariate's residuals at once (the score residuals' column sums by cluster), to the bit.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 11))
    time = rng.integers(1, 40, 300).astype(float)
    event = rng.random(300) < 0.6
    cluster = rng.integers(0, 90, 300)
    model = CoxPH().fit(X, time, event, cluster=cluster)
    residuals = model.score_residuals_                    # n x p, every covariate at once
    codes = pd.factorize(cluster)[0]
    order = model._rs.rows
    u = np.stack([np.bincount(codes[order], weights=residuals[order, j], minlength=codes.max() + 1)
                  for j in range(11)])
    assert np.array_equal(model.robust_var_, model.var_ @ (u @ u.T) @ model.var_)
