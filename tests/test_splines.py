"""Restricted cubic splines against rms (numbers pinned; R not needed to run this).

R 4.2.2, rms 6.5.0: ``tests/data/ref_rcs.R`` on ``tests/data/rcs_small.csv`` (500 rows:
age uniform 0-18 with a U-shaped true effect, a binary z, outcome y).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from pipeline import logistic, logistic_model
from pipeline.splines import RestrictedCubicSpline, default_knots, rcs_basis

D = pd.read_csv(Path(__file__).parent / "data" / "rcs_small.csv")


def test_default_knots_match_rms():
    # attr(rcs(d$age, 4), "parms"); attr(rcs(d$age, 3), "parms")
    np.testing.assert_allclose(default_knots(D["age"], 4), [0.979, 6.1567, 11.69275, 16.8416], rtol=1e-10)
    np.testing.assert_allclose(default_knots(D["age"], 3), [1.9356, 9.011, 16.0436], rtol=1e-10)


def test_spline_logistic_model_matches_rms_lrm():
    """``coef(lrm(y ~ rcs(age, 4) + z))`` and its SEs, from the scikit-learn pipeline and
    from the statsmodels inference model on the pipeline's own design."""
    pipe = Pipeline([("design", ColumnTransformer([("rcs", RestrictedCubicSpline(4), ["age"])],
                                                  remainder="passthrough", verbose_feature_names_out=False)),
                     ("model", logistic_model.sklearn_model())]).fit(D[["age", "z"]], D["y"])
    r_coef = [-0.531899454102, -0.117293560383, 0.0678809474727, 0.197402633462, 0.204241684304]
    np.testing.assert_allclose([pipe["model"].intercept_[0], *pipe["model"].coef_[0]], r_coef, rtol=1e-7)
    design = pd.DataFrame(pipe["design"].transform(D[["age", "z"]]), columns=pipe["design"].get_feature_names_out())
    assert list(design.columns) == ["age", "age'", "age''", "z"]
    odds = logistic.fit_logit(design, D["y"])
    np.testing.assert_allclose(odds["coef"], r_coef, rtol=1e-7)
    np.testing.assert_allclose(odds["se"], [0.34916478503, 0.100442315412, 0.31964367086, 0.886499289667,
                                            0.203774903936], rtol=1e-6)


def test_three_knots_match_rms():
    # coef(lrm(y ~ rcs(age, 3) + z))
    X = np.column_stack([rcs_basis(D["age"], default_knots(D["age"], 3)), D["z"]])
    model = logistic_model.sklearn_model().fit(X, D["y"])
    np.testing.assert_allclose([model.intercept_[0], *model.coef_[0]],
                               [-0.457417562562, -0.144501886087, 0.172489589164, 0.200528771762], rtol=1e-7)


def test_too_few_distinct_values_is_a_clear_error():
    with pytest.raises(ValueError, match="not distinct"):
        default_knots(np.repeat([0, 1, 2], 50), 5)
