"""Calibration of predicted probabilities (the measures of R's ``rms::val.prob``).

``val_prob(p, y)`` returns, for predictions p of a binary outcome y:

* ``intercept``, ``slope``: logistic recalibration ``logit P(y=1) = a + b logit(p)``
  (perfect: 0, 1); ``citl``: calibration-in-the-large, ``a`` with ``logit(p)`` as offset
  (Van Calster et al. 2016, level 1);
* ``emax``, ``e90``, ``eavg``: max, 90th percentile and mean of |p - s(p)| where s is the
  lowess smooth of y on p (Cleveland; span 2/3, no robustness iterations, as R's
  ``lowess(p, y, iter = 0)``) read back at each p (``approx(..., ties = mean)``).
  ``eavg`` is the integrated calibration index (ICI) of Austin and Steyerberg (2019)
  computed with this smoother;
* ``brier``; ``c`` (area under the ROC curve) and ``dxy = 2 (c - 1/2)``;
* ``spiegelhalter_z`` = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p)) and its
  two-sided p-value;
* ``observed_expected``: sum y / sum p.

Checked against rms 6.5.0 ``val.prob`` in ``tests/test_calibration.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import statsmodels.api as sm
from scipy import special, stats
from sklearn.metrics import roc_auc_score
from statsmodels.nonparametric.smoothers_lowess import lowess


def lowess_calibration(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """s(p_i): R's ``approx(lowess(p, y, iter = 0), xout = p, ties = mean)$y``."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    delta = 0.01 * (p.max() - p.min())  # R's lowess default
    fit = lowess(y, p, frac=2 / 3, it=0, delta=delta, return_sorted=True)
    xs, ys = fit[:, 0], fit[:, 1]
    ux, inv = np.unique(xs, return_inverse=True)   # ties = mean
    uy = np.bincount(inv, weights=ys) / np.bincount(inv)
    return np.interp(p, ux, uy)


def val_prob(p, y) -> dict[str, Any]:
    """Calibration and discrimination of probabilities ``p`` for outcomes ``y`` (0/1)."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    if p.min() <= 0 or p.max() >= 1:
        raise ValueError("predicted probabilities must lie strictly between 0 and 1")
    lp = special.logit(p)
    recal = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    citl = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp).fit()
    error = np.abs(p - lowess_calibration(p, y))
    c = roc_auc_score(y, p)
    w = 1 - 2 * p
    z = float(np.sum((y - p) * w) / np.sqrt(np.sum(w**2 * p * (1 - p))))
    return {
        "n": int(len(y)), "events": int(y.sum()),
        "observed_expected": float(y.sum() / p.sum()),
        "citl": float(citl.params[0]),
        "intercept": float(recal.params[0]), "slope": float(recal.params[1]),
        "emax": float(error.max()), "e90": float(np.quantile(error, 0.9)), "eavg": float(error.mean()),
        "brier": float(np.mean((p - y) ** 2)),
        "c": float(c), "dxy": float(2 * (c - 0.5)),
        "spiegelhalter_z": z, "spiegelhalter_p": float(2 * stats.norm.sf(abs(z))),
    }
