"""The named Cox models: saved once, loaded by the stages that score them, predicting exactly
as the fitted model did."""

import numpy as np
import pandas as pd

from pipeline import cox_model
from pipeline.design import design_matrix


def _table(n=400, seed=3):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.integers(0, 2, n).astype(float), "band": rng.choice(["a", "b", "c"], n),
                       "la_code": rng.choice(["LA1", "LA2"], n), "family_id": rng.integers(0, 150, n)})
    rate = np.exp(0.7 * df["x"] + 0.4 * (df["band"] == "b"))
    t = rng.exponential(1 / (rate * 0.002))
    c = rng.uniform(0, 900, n)
    return df.assign(time_days=np.ceil(np.minimum(t, c)), event=(t <= c).astype(int))


SETTINGS = {"covariates": ["x"], "categorical": ["band"], "strata": "la_code", "cluster": "family_id",
            "ties": "efron"}


def test_saved_model_predicts_as_the_fitted_one(tmp_path):
    df = _table()
    model, reference = cox_model.fit_development(df, SETTINGS)
    path = tmp_path / "cox.json"
    cox_model.save(model, SETTINGS, reference, path, "development", "all rows")
    loaded, saved = cox_model.load(path)
    days = [30.0, 182.6, 365.25]
    X = design_matrix(df, ["x"], ["band"], reference)[0]
    for level in ("LA1", "LA2"):
        rows = (df["la_code"] == level).to_numpy()
        expected = 1 - model.predict_survival(X[rows], days, stratum=level)
        np.testing.assert_array_equal(cox_model.predict_risks(loaded, saved, df[rows], days), expected)
    np.testing.assert_array_equal(loaded.coef_, model.coef_)


def test_rows_where_a_column_is_constant_keep_its_value(tmp_path):
    """A validation subset in which every row has x = 1 must be scored with x = 1, not
    with the column dropped as constant (which would read as x = 0)."""
    df = _table()
    model, reference = cox_model.fit_development(df, SETTINGS)
    cox_model.save(model, SETTINGS, reference, tmp_path / "m.json", "m", "all")
    loaded, saved = cox_model.load(tmp_path / "m.json")
    ones = df[(df["x"] == 1) & (df["la_code"] == "LA1")]
    zeros = ones.assign(x=0.0)
    hi = cox_model.predict_risks(loaded, saved, ones, [365.25])
    lo = cox_model.predict_risks(loaded, saved, zeros, [365.25])
    assert model.coef_[0] > 0 and (hi > lo).all()


def test_unseen_stratum_is_not_predicted(tmp_path):
    df = _table()
    model, reference = cox_model.fit_development(df, SETTINGS)
    cox_model.save(model, SETTINGS, reference, tmp_path / "m.json", "m", "all")
    loaded, saved = cox_model.load(tmp_path / "m.json")
    risks = cox_model.predict_risks(loaded, saved, df.head(5).assign(la_code="LA9"), [365.25])
    assert np.isnan(risks).all()


def test_not_estimated_model_loads_as_none(tmp_path):
    cox_model.save_not_estimated(tmp_path / "m.json", "no events", SETTINGS, "m")
    model, saved = cox_model.load(tmp_path / "m.json")
    assert model is None and saved["status"] == "no events"
