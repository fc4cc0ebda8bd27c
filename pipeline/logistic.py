"""Logistic models of re-referral within a horizon (core functions; the stage follows).

* ``binary_outcome``: re-referred within H days. A row's status at H is known if it was
  re-referred by H, followed for H days, or reached a competing end (entering care,
  turning 18) before H (a known non-event). Rows censored at the extract date before H
  are never counted as "no event": they are excluded, or the known rows are weighted by
  the inverse probability of remaining uncensored (IPCW; Kaplan-Meier of the censoring
  times, read just before min(T, H)).
* ``temporal_split``: index dates before the cut-off develop, after it validate, with
  no family on both sides: families belong to the side of their first index date; rows
  of development families dated after the cut-off are left out (counted).
* ``fit_logit``: statsmodels Logit with family-cluster robust (sandwich) SEs, odds ratios
  and 95% CIs; ``sklearn_model``: the same model as a scikit-learn Pipeline
  (``newton-cholesky``, no penalty) for prediction; both use ``design_matrix`` of the
  survival stage, so their coefficients agree (tested to 1e-6).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from lifelines import KaplanMeierFitter
from scipy import stats
from sklearn.linear_model import LogisticRegression

from pipeline.survival import design_matrix

COMPETING_ENDS = ("entered_care", "age_18")


def binary_outcome(df: pd.DataFrame, horizon_days: float, method: str = "exclude"
                   ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows with a known status at the horizon, ``y`` (0/1) and ``weight``; and counts."""
    if method not in ("exclude", "ipcw"):
        raise ValueError("method must be 'exclude' or 'ipcw'")
    t = df["time_days"].to_numpy(dtype=float)
    event = df["event"].to_numpy().astype(bool)
    competing = df["event_type"].isin(COMPETING_ENDS).to_numpy() if "event_type" in df else np.zeros(len(df), bool)
    y = event & (t <= horizon_days)
    known = y | (t >= horizon_days) | (competing & (t < horizon_days))
    weight = np.ones(len(df))
    if method == "ipcw":
        censored = ~event & ~competing   # administrative censoring (extract date) only
        km = KaplanMeierFitter().fit(t, censored)
        sf = km.survival_function_.iloc[:, 0]
        at = np.minimum(t, horizon_days)
        # G(s-): censoring survival just before s
        idx = np.searchsorted(sf.index.to_numpy(), at, side="left") - 1
        g = np.where(idx >= 0, sf.to_numpy()[np.maximum(idx, 0)], 1.0)
        weight = np.where(known, 1 / g, 0.0)
    out = df.loc[known].assign(y=y[known].astype(np.int8), weight=weight[known])
    counts = {"rows": int(len(df)), "known_status": int(known.sum()),
              "censored_before_horizon": int((~known).sum()), "events_within_horizon": int(y.sum()),
              "method": method,
              "handling": ("rows censored before the horizon excluded" if method == "exclude" else
                           "rows censored before the horizon carry weight 0; the others 1/G(min(T, H)-)")}
    return out, counts


def temporal_split(df: pd.DataFrame, cutoff: str | pd.Timestamp, family: str = "family_id"
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Development (before ``cutoff``) and validation (families first seen on or after it)."""
    cutoff = pd.Timestamp(cutoff)
    first_seen = df.groupby(family)["index_date"].transform("min")
    dev_family = (first_seen < cutoff).to_numpy()
    before = (df["index_date"] < cutoff).to_numpy()
    dev, val = df[dev_family & before], df[~dev_family]
    counts = {"development_rows": int(len(dev)), "validation_rows": int(len(val)),
              "development_families": int(dev[family].nunique()), "validation_families": int(val[family].nunique()),
              "left_out_rows_of_development_families_after_cutoff": int((dev_family & ~before).sum())}
    return dev, val, counts


def fit_logit(X: pd.DataFrame, y: pd.Series, cluster: pd.Series | None = None,
              weight: np.ndarray | None = None) -> pd.DataFrame:
    """Odds ratios with Wald 95% CIs from family-cluster robust SEs (statsmodels)."""
    exog = sm.add_constant(X, has_constant="add")
    if weight is not None and not np.allclose(weight, 1):
        model = sm.GLM(y, exog, family=sm.families.Binomial(), freq_weights=None, var_weights=weight)
    else:
        model = sm.Logit(y, exog)
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": pd.factorize(cluster)[0]}} if cluster is not None else {}
    fit = model.fit(disp=0, **kw) if isinstance(model, sm.Logit) else model.fit(**kw)
    z = stats.norm.ppf(0.975)
    out = pd.DataFrame({"coef": fit.params, "se": fit.bse, "or": np.exp(fit.params),
                        "or_lower": np.exp(fit.params - z * fit.bse), "or_upper": np.exp(fit.params + z * fit.bse),
                        "p": fit.pvalues})
    out.index.name = "term"
    return out


def sklearn_model() -> LogisticRegression:
    """The prediction model: unpenalised logistic regression by Newton-Cholesky (matches
    statsmodels to ~1e-11; the default lbfgs stops ~2e-3 away)."""
    return LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=100, tol=1e-10)  # C=inf: no penalty


def design(df: pd.DataFrame, covariates: list[str], categorical: list[str],
           reference: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The design matrix shared with the Cox model (one place for coding covariates)."""
    return design_matrix(df, covariates, categorical, reference)
