"""Measures of a risk score against binary outcomes (those of R's ``rms::val.prob``).

Shared by the ``logistic`` stage (optimism bootstrap scores) and the ``calibration`` stage.

``val_prob(p, y)`` returns, for predictions p of a binary outcome y:

* ``intercept``, ``slope``: logistic recalibration ``logit P(y=1) = a + b logit(p)``
  (perfect: 0, 1); ``citl``: calibration-in-the-large, ``a`` with ``logit(p)`` as offset
  (Van Calster et al. 2016, level 1);
* ``emax``, ``e90``, ``eavg``: max, 90th percentile and mean of |p - s(p)| where s is the
  lowess smooth of y on p (Cleveland; span 2/3, no robustness iterations, as R's
  ``lowess(p, y, iter = 0)``) read back at each p (``approx(..., ties = mean)``).
  ``eavg`` is the integrated calibration index (ICI) of Austin and Steyerberg (2019)
  computed with this smoother;
* ``e50``: median |p - s(p)|;
* ``brier`` and ``scaled_brier`` = 1 - Brier / (ybar (1 - ybar)); ``c`` (area under the ROC
  curve) with its DeLong 95% CI (``c_lower``, ``c_upper``) and ``dxy = 2 (c - 1/2)``;
* ``spiegelhalter_z`` = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p)) and its
  two-sided p-value;
* ``observed_expected``: sum y / sum p.

Checked against rms 6.5.0 ``val.prob`` in ``tests/test_calibration.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special, stats

from pipeline.lowess import distinct, lowess, lowess_distinct


def lowess_calibration(p: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """s(p_i): R's ``approx(lowess(p, y, iter = 0), xout = p, ties = mean)$y`` (the smooth
    at each distinct p); with frequency weights, the same on the repeated rows."""
    return lowess(p, y, weights)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    """R's default quantile (type 7) of the data with each value repeated ``weights`` times
    (positions on the cumulative weight; any positive weights), at each probability in q."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, dtype=float)[order], np.asarray(weights, dtype=float)[order]
    v, w = v[w > 0], w[w > 0]
    cum = np.cumsum(w)
    position = (cum[-1] - 1) * np.atleast_1d(np.asarray(q, dtype=float)) + 1   # 1-based, among repeated rows
    below = v[np.minimum(np.searchsorted(cum, np.floor(position) - 1e-9), len(v) - 1)]
    above = v[np.minimum(np.searchsorted(cum, np.ceil(position) - 1e-9), len(v) - 1)]
    return below + (position - np.floor(position)) * (above - below)


def logistic_recalibration(lp: np.ndarray, events: np.ndarray, weights: np.ndarray, slope: bool = True
                           ) -> np.ndarray:
    """Maximum-likelihood (a, b) of ``logit P(y=1) = a + b lp`` (or a alone, lp as offset,
    when ``slope`` is False): the two-parameter GLMs of val.prob, by Newton-Raphson from
    (0, 1) with step halving on the log-likelihood (checked against statsmodels in
    tests/test_calibration.py). ``events``: weighted count of y = 1 at each lp (y itself when
    weights are 1), so rows sharing a prediction may be pooled. NaN, with a warning, when
    there is no finite maximum (separation, a single distinct prediction) or no convergence."""
    import warnings

    X = np.column_stack([np.ones_like(lp), lp]) if slope else np.ones((len(lp), 1))
    beta = np.array([0.0, 1.0]) if slope else np.array([0.0])

    def linear(b: np.ndarray) -> np.ndarray:
        return X @ b if slope else b[0] + lp

    def loglik(b: np.ndarray) -> float:
        eta = linear(b)
        return float(np.sum(events * eta - weights * np.logaddexp(0, eta)))

    current = loglik(beta)
    for _ in range(100):
        mu = special.expit(linear(beta))
        gradient = X.T @ (events - weights * mu)
        hessian = (X * (weights * mu * (1 - mu))[:, None]).T @ X
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        for _ in range(40):                      # halve until the likelihood does not fall
            trial = beta + step
            value = loglik(trial)
            if value >= current - 1e-12 * abs(current):
                break
            step = step / 2
        else:
            break
        beta, current = trial, value
        if np.max(np.abs(step)) < 1e-12:
            return beta
    warnings.warn("logistic recalibration has no finite maximum or did not converge; NaN returned",
                  RuntimeWarning, stacklevel=2)
    return np.full(len(beta), np.nan)


def c_statistic(p: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """Area under the ROC curve, ties counted 1/2: sum over (event, non-event) pairs of
    w_i w_j [p_i > p_j] / (W_events W_non-events), from the distinct values of p."""
    _, _, mass, mass_y = distinct(np.asarray(p, dtype=float), np.asarray(y, dtype=float), np.asarray(weights, dtype=float))
    return _c_distinct(mass_y, mass - mass_y)


def _c_distinct(pos: np.ndarray, neg: np.ndarray) -> float:
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + neg / 2)) / (pos.sum() * neg.sum()))


def delong_auc(p: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """AUC with DeLong, DeLong and Clarke-Pearson (1988) variance and a Wald interval (as
    pROC's ``ci.auc(method = "delong")``), by midranks in O(n log n) (Sun and Xu 2014).
    Returns (auc, variance, lower, upper)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y).astype(bool)
    pos, neg = p[y], p[~y]
    m, n = len(pos), len(neg)
    r_all = stats.rankdata(np.concatenate([pos, neg]))
    r_pos, r_neg = stats.rankdata(pos), stats.rankdata(neg)
    v10 = (r_all[:m] - r_pos) / n          # for each positive: share of negatives below (ties 1/2)
    v01 = 1 - (r_all[m:] - r_neg) / m      # for each negative: share of positives above
    auc = float(v10.mean())
    var = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    z = stats.norm.ppf(1 - alpha / 2)
    return auc, var, auc - z * np.sqrt(var), auc + z * np.sqrt(var)


def val_prob(p, y, weights=None, intervals: bool = True) -> dict[str, Any]:
    """Calibration and discrimination of probabilities ``p`` for outcomes ``y`` (0/1).

    ``weights``: frequency weights (a bootstrap replicate's family multiplicities) or
    inverse-probability-of-censoring weights; every measure is then the weighted one
    (for integer weights, the measure on the repeated rows). DeLong's interval and
    Spiegelhalter's z assume unweighted independent rows: NaN when weights are not all 1
    (the calibration stage then gives C a family-bootstrap interval). ``intervals=False``
    skips DeLong (inside bootstrap replicates).
    """
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    if p.min() <= 0 or p.max() >= 1:
        raise ValueError("predicted probabilities must lie strictly between 0 and 1")
    unweighted = bool(np.all(w == 1))
    used = w > 0
    p, y, w = p[used], y[used], w[used]
    # Every measure below is a sum over distinct predictions: one sort serves them all.
    ux, inverse, mass, events = distinct(p, y, w)
    lp = special.logit(ux)
    intercept, slope = logistic_recalibration(lp, events, mass)
    citl = logistic_recalibration(lp, events, mass, slope=False)[0]
    error = np.abs(ux - lowess_distinct(ux, mass, events))
    total = mass.sum()
    c = _c_distinct(events, mass - events)
    c_lower = c_upper = z = np.nan
    if unweighted:
        if intervals:
            _, _, c_lower, c_upper = delong_auc(p, y)
        s = 1 - 2 * p
        z = float(np.sum((y - p) * s) / np.sqrt(np.sum(s**2 * p * (1 - p))))
    e50, e90 = weighted_quantile(error, mass, [0.5, 0.9])
    prevalence = float(events.sum() / total)
    brier = float(np.sum(mass * ux**2 - 2 * ux * events) / total + prevalence)   # sum w (p - y)^2, y in {0, 1}
    return {
        "n": int(len(y)), "events": int(y.sum()),
        "observed_expected": float(events.sum() / np.sum(mass * ux)),
        "citl": float(citl), "intercept": float(intercept), "slope": float(slope),
        "emax": float(error.max()), "e90": float(e90), "eavg": float(np.sum(mass * error) / total), "e50": float(e50),
        "brier": brier, "scaled_brier": float(1 - brier / (prevalence * (1 - prevalence))),
        "c": c, "c_lower": float(c_lower), "c_upper": float(c_upper), "dxy": float(2 * (c - 0.5)),
        "spiegelhalter_z": float(z), "spiegelhalter_p": float(2 * stats.norm.sf(abs(z))),
    }
