"""Restricted cubic splines (Stone and Koo 1985; Harrell, Regression Modeling Strategies,
2nd ed. 2015, section 2.4.5), as rms's ``rcs()``.

For knots t_1 < ... < t_k the basis is x and, for j = 1 .. k-2,

    [ (x - t_j)+^3 - (x - t_{k-1})+^3 (t_k - t_j) / (t_k - t_{k-1})
                   + (x - t_k)+^3 (t_{k-1} - t_j) / (t_k - t_{k-1}) ] / (t_k - t_1)^2,

cubic between the knots and linear beyond the outer ones (the scaling is Hmisc's
``rcspline.eval(norm = 2)``, so coefficients equal rms's). Default knot positions are
Harrell's quantiles of x (RMS Table 2.3), read with R's default quantile rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

# Harrell (2015), Table 2.3: knot quantiles by number of knots
KNOT_QUANTILES = {3: (0.10, 0.50, 0.90), 4: (0.05, 0.35, 0.65, 0.95), 5: (0.05, 0.275, 0.50, 0.725, 0.95),
                  6: (0.05, 0.23, 0.41, 0.59, 0.77, 0.95),
                  7: (0.025, 0.1833, 0.3417, 0.50, 0.6583, 0.8167, 0.975)}


def rcs_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Columns x and the k - 2 non-linear terms (formula above)."""
    x = np.asarray(x, dtype=float)
    t = np.asarray(knots, dtype=float)
    k = len(t)
    pos = lambda v: np.maximum(v, 0) ** 3  # noqa: E731
    cols = [x]
    for j in range(k - 2):
        cols.append((pos(x - t[j]) - pos(x - t[k - 2]) * (t[k - 1] - t[j]) / (t[k - 1] - t[k - 2])
                     + pos(x - t[k - 1]) * (t[k - 2] - t[j]) / (t[k - 1] - t[k - 2])) / (t[k - 1] - t[0]) ** 2)
    return np.column_stack(cols)


def default_knots(x: np.ndarray, n_knots: int) -> np.ndarray:
    """Harrell's knot quantiles of x; an error when they are not distinct (too few values)."""
    if n_knots not in KNOT_QUANTILES:
        raise ValueError(f"restricted cubic splines take 3 to 7 knots, not {n_knots}")
    knots = np.quantile(np.asarray(x, dtype=float), KNOT_QUANTILES[n_knots])
    if np.any(np.diff(knots) <= 0):
        raise ValueError(f"{n_knots} spline knots at quantiles {list(KNOT_QUANTILES[n_knots])} are not distinct "
                         f"({', '.join(f'{v:g}' for v in knots)}): use fewer knots or keep the variable linear")
    return knots


class RestrictedCubicSpline(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: each column of X becomes its restricted cubic spline basis
    (names ``x``, ``x'``, ``x''``, ... as rms). Knots are learnt in ``fit`` (``knots_``)."""

    def __init__(self, n_knots: int = 4):
        self.n_knots = n_knots

    def fit(self, X, y=None):
        X = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.knots_ = [default_knots(X[c].to_numpy(), self.n_knots) for c in X.columns]
        return self

    def transform(self, X):
        X = pd.DataFrame(X, columns=self.feature_names_in_)
        return np.column_stack([rcs_basis(X[c].to_numpy(), k) for c, k in zip(X.columns, self.knots_)])

    def get_feature_names_out(self, input_features=None):
        return np.array([f"{c}{chr(39) * j}" for c in self.feature_names_in_ for j in range(self.n_knots - 1)],
                        dtype=object)
