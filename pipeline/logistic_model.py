"""The logistic prediction model, shared by the stages that fit, validate and refit it.

* ``sklearn_model``: unpenalised logistic regression (Newton-Cholesky);
  ``prediction_pipeline``: optional restricted cubic splines, then that model (``logistic``
  fits it);
* ``fit_model`` / ``score_model``: the modelling step a bootstrap repeats and its scores
  (``calibration``'s optimism correction).
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from pipeline.scoring import val_prob
from pipeline.splines import RestrictedCubicSpline


def sklearn_model() -> LogisticRegression:
    """The prediction model: unpenalised logistic regression by Newton-Cholesky (matches
    statsmodels to ~1e-11; the default lbfgs stops ~2e-3 away)."""
    return LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=100, tol=1e-10)  # C=inf: no penalty


def prediction_pipeline(splines: dict[str, int] | None = None) -> Pipeline:
    """The prediction model as a scikit-learn Pipeline: restricted cubic splines for the
    columns in ``splines`` (name: number of knots; knots learnt in fit), the other design
    columns as they are, then ``sklearn_model``."""
    spline_steps = [(f"rcs_{c}", RestrictedCubicSpline(k), [c]) for c, k in (splines or {}).items()]
    design = ColumnTransformer(spline_steps, remainder="passthrough", verbose_feature_names_out=False)
    return Pipeline([("design", design), ("model", sklearn_model())])


def fit_model(X: np.ndarray, y: np.ndarray, weight: np.ndarray, start: LogisticRegression | None = None
              ) -> LogisticRegression:
    """The modelling step the bootstrap repeats: the prediction model fitted to a design.

    The design (indicator coding, spline knots) is built once, before resampling, as rms's
    ``validate`` reuses the fitted design matrix; ``start``: a fit to begin from (warm start).
    """
    model = sklearn_model()
    if start is not None:
        model.set_params(warm_start=True)
        model.coef_, model.intercept_, model.classes_ = start.coef_.copy(), start.intercept_.copy(), start.classes_
    return model.fit(X, y, sample_weight=weight)


def score_model(model: LogisticRegression, X: np.ndarray, y: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Performance of a fitted model on (weighted) data: C, calibration slope, CITL, Brier, ICI."""
    p = np.clip(model.predict_proba(X)[:, 1], 1e-10, 1 - 1e-10)
    v = val_prob(p, y, weight, intervals=False)
    return {"c": v["c"], "slope": v["slope"], "citl": v["citl"], "brier": v["brier"], "ici": v["eavg"]}
