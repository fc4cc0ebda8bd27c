"""Logistic core: horizon outcome (exclusion and IPCW, by hand), family-grouped temporal split,
and statsmodels = scikit-learn coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import logistic, logistic_model, outcome, split
from pipeline.design import design_matrix


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "time_days": [100, 400, 200, 50, 500],
        "event": [1, 0, 0, 0, 1],
        "event_type": ["re_referral", "extract_date", "extract_date", "entered_care", "re_referral"],
    })


def test_outcome_excludes_rows_without_possible_follow_up():
    """Exclusion is by possible follow-up (origin to extract date), not by outcome: the
    row re-referred after 100 days but indexed 200 days before the extract is excluded too."""
    rows = _rows().assign(origin_date=pd.to_datetime(["2024-10-01", "2023-01-01", "2024-09-01",
                                                      "2023-01-01", "2023-01-01"]))
    out, counts = outcome.binary_outcome(rows, 365, "exclude", extract_date=pd.Timestamp("2025-03-31"))
    assert out.index.tolist() == [1, 3, 4] and out["y"].tolist() == [0, 0, 0]
    assert counts["without_possible_follow_up"] == 2


def test_outcome_without_dates_excludes_rows_censored_before_the_horizon():
    out, counts = outcome.binary_outcome(_rows(), 365, "exclude")
    # 200-day censored row is unknown at 365; care entry at 50 is a known non-event;
    # a re-referral at 500 is after the horizon: 0.
    assert out.index.tolist() == [0, 1, 3, 4] and out["y"].tolist() == [1, 0, 0, 0]
    assert counts["censored_before_horizon"] == 1 and (out["weight"] == 1).all()


def test_ipcw_weights_by_hand():
    out, _ = outcome.binary_outcome(_rows(), 365, "ipcw")
    # KM of censoring (extract-date ends at 200 and 400): at 200, 3 at risk -> G = 2/3;
    # at 400 -> 1/3. Weights 1/G(min(T, H)-): t=100 -> 1; t=400 -> 1/G(365-) = 1.5;
    # care at 50 -> 1; t=500 -> 1.5. They sum to n = 5, as IPCW weights should.
    np.testing.assert_allclose(out["weight"].to_numpy(), [1, 1.5, 1, 1.5])
    assert out["weight"].sum() == pytest.approx(5)


def test_temporal_split_keeps_families_apart():
    df = pd.DataFrame({
        "family_id": ["a", "a", "b", "c", "c"],
        "index_date": pd.to_datetime(["2020-01-01", "2023-06-01", "2020-05-01", "2023-02-01", "2022-12-01"]),
    })
    dev, val, counts = split.temporal_split(df, "2023-01-01")
    # a: first seen 2020 -> development; its 2023 row is left out. c: first seen 2022-12 -> development.
    assert dev.index.tolist() == [0, 2, 4] and val.index.tolist() == []
    assert counts["left_out_rows_of_development_families_after_cutoff"] == 2
    assert not set(dev["family_id"]) & set(val["family_id"])
    dev, val, _ = split.temporal_split(df, "2022-06-01")
    assert val.index.tolist() == [3, 4] and set(dev["family_id"]) == {"a", "b"}


def test_statsmodels_and_sklearn_agree():
    rng = np.random.default_rng(4)
    n = 5000
    df = pd.DataFrame({"a": rng.integers(0, 2, n), "b": rng.normal(size=n),
                       "band": rng.choice(["x", "y", "z"], n), "fam": rng.integers(0, 2000, n)})
    lp = -1 + 0.7 * df["a"] - 0.4 * df["b"] + np.where(df["band"] == "y", 0.5, 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    X, ref = design_matrix(df, ["a", "b"], ["band"])
    table = logistic.fit_logit(X, y, cluster=df["fam"])
    sk = logistic_model.sklearn_model().fit(X, y)
    np.testing.assert_allclose(table["coef"].iloc[1:].to_numpy(), sk.coef_[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(table["coef"].iloc[0], sk.intercept_[0], rtol=1e-6)
    np.testing.assert_allclose(table["or"], np.exp(table["coef"]))
    assert ref == {"band": df["band"].value_counts().idxmax()}   # the commonest level is the reference
    # The robust SEs use the family clusters (they differ from the model-based ones).
    plain = logistic.fit_logit(X, y)
    assert not np.allclose(table["se"], plain["se"])


def test_grouped_kfold_keeps_families_whole_and_predicts_every_row_out_of_fold():
    rng = np.random.default_rng(6)
    n = 3000
    df = pd.DataFrame({"a": rng.integers(0, 2, n), "age": rng.uniform(0, 18, n), "fam": rng.integers(0, 1200, n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1 + 0.8 * df["a"])))).astype(int)
    X = df[["a", "age"]].astype(float)
    w = np.ones(n)
    p, fold = logistic.grouped_kfold_predictions(X, y, w, df["fam"], {"age": 3}, folds=5, seed=1)
    assert not np.isnan(p).any() and set(fold) == {1, 2, 3, 4, 5}
    assert df.assign(fold=fold).groupby("fam")["fold"].nunique().max() == 1     # no family in two folds
    again, _ = logistic.grouped_kfold_predictions(X, y, w, df["fam"], {"age": 3}, folds=5, seed=1)
    np.testing.assert_array_equal(p, again)                                   # seeded
    # Out of fold: row 0's prediction is that of a model fitted without its fold.
    train = fold != fold[0]
    alone = logistic_model.prediction_pipeline({"age": 3}).fit(X[train], y[train])
    assert p[0] == pytest.approx(alone.predict_proba(X.iloc[[0]])[0, 1], rel=1e-9)
    full = logistic_model.prediction_pipeline({"age": 3}).fit(X, y)
    assert abs(p[0] - full.predict_proba(X.iloc[[0]])[0, 1]) > 1e-6
