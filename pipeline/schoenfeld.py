"""How a hazard ratio changes over follow-up: scaled Schoenfeld residuals, smoothed.

For each covariate the proportional-hazards advice flags (``survival.ph_advice``), the
smooth of its scaled Schoenfeld residuals against Kaplan-Meier-transformed time estimates
beta(t), the log hazard ratio at time t (Grambsch and Therneau 1994); a flat curve at the
Cox estimate is proportional hazards. The smooth and its band are those of R's
``plot(cox.zph(fit))`` (survival 3.5-3, ``plot.cox.zph`` defaults ``df = 4, nsmo = 40``):

* a least-squares natural cubic spline of the residuals on g(t) = 1 - KM(t-), intercept and
  4 degrees of freedom: knots at the 1/3 and 2/3 quantiles (R's default rule) of the
  40-point grid and the events' g(t) together, boundary knots at their range. A restricted
  cubic spline with the same four knots spans the same functions (cubic between knots,
  linear outside), so ``pipeline.splines.rcs_basis`` plus an intercept gives R's fit;
* its band: smooth +- 2 sqrt(var_jj * h(g)), var = ``cox.zph(fit)$var`` (the variance of a
  scaled residual, ``CoxPH.scaled_schoenfeld().var``) and h(g) = p(g)' (B'B)^-1 p(g) the
  spline's leverage at g. R draws 2 standard errors (about 95%); so do we.

R's smooth is used, not lowess, because its band has this closed form; a lowess band would
need a bootstrap of the whole Cox fit.

Disclosure. A scaled residual belongs to one child, so none is published. The table
(``reports/survival/schoenfeld.csv``, long form, one row per term and point) holds

* ``part = curve``: the smooth and band on the 40-point grid, left out beyond the
  ``min_count``-th event from either end (the grid's ends would otherwise sit on single
  children's event times);
* ``part = bin``: the mean scaled residual in equal-count bins of events ordered by g(t),
  at most 10 bins and each of at least ``min_count`` events (``events``).

No identifier of any kind is in it: terms, times and aggregate values only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cox import ScaledSchoenfeld
from pipeline.nonparametric import DAYS_PER_MONTH
from pipeline.splines import rcs_basis

COLUMNS = ["term", "part", "time_km", "time_months", "scaled_residual", "smooth", "lower", "upper", "events"]
SPLINE_DF = 4       # plot.cox.zph(df = 4)
GRID_POINTS = 40    # plot.cox.zph(nsmo = 40)
BAND_SE = 2.0       # plot.cox.zph draws smooth +- 2 standard errors
MAX_BINS = 10


def spline_smooth(x: np.ndarray, y: np.ndarray, var: float) -> pd.DataFrame | None:
    """R's ``plot.cox.zph`` smooth of ``y`` on ``x`` and its band on its 40-point grid
    (columns x, smooth, lower, upper); None where the spline is singular (R: "spline fit
    is singular, variable skipped"). Rows with NaN ``y`` are left out of the fit but not
    out of the grid and knots (as R)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    grid = np.linspace(x.min(), x.max(), GRID_POINTS)
    both = np.concatenate([grid, x])
    knots = np.concatenate([[both.min()], np.quantile(both, [1 / 3, 2 / 3]), [both.max()]])
    if np.any(np.diff(knots) <= 0):
        return None
    basis = lambda v: np.column_stack([np.ones(len(v)), rcs_basis(v, knots)])  # noqa: E731
    keep = ~np.isnan(y)
    B, P = basis(x[keep]), basis(grid)
    q, r = np.linalg.qr(B)
    if np.linalg.matrix_rank(r) < SPLINE_DF:
        return None
    smooth = P @ np.linalg.solve(r, q.T @ y[keep])
    leverage = (np.linalg.solve(r.T, P.T) ** 2).sum(axis=0)     # p' (B'B)^-1 p, B'B = R'R
    half = BAND_SE * np.sqrt(var * leverage)
    return pd.DataFrame({"x": grid, "smooth": smooth, "lower": smooth - half, "upper": smooth + half})


def binned_means(x: np.ndarray, y: np.ndarray, min_count: int) -> pd.DataFrame:
    """Mean x and y in equal-count bins of the points ordered by x: as many bins as keep
    each at ``min_count`` or more points, at most ``MAX_BINS`` (none when fewer points)."""
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    n_bins = min(MAX_BINS, len(x) // max(min_count, 1))
    if n_bins < 1:
        return pd.DataFrame(columns=["x", "mean", "events"])
    order = np.argsort(x, kind="stable")
    bins = np.array_split(order, n_bins)
    return pd.DataFrame({"x": [x[b].mean() for b in bins], "mean": [y[b].mean() for b in bins],
                         "events": [len(b) for b in bins]})


def schoenfeld_table(res: ScaledSchoenfeld, terms: list[str], min_count: int) -> pd.DataFrame:
    """The published table for ``terms`` (module docstring): smooth and band on the grid,
    binned means; a term with fewer than 2 x ``min_count`` events, or whose spline is
    singular, has no rows."""
    order = np.argsort(res.x, kind="stable")
    x_sorted, t_sorted = res.x[order], res.time[order]
    first = np.concatenate([[True], np.diff(x_sorted) > 0])   # g(t) is one-to-one with event times

    def months(at: np.ndarray) -> np.ndarray:
        return np.round(np.interp(at, x_sorted[first], t_sorted[first]) / DAYS_PER_MONTH, 3)

    parts = []
    for term in terms:
        j = res.y.columns.get_loc(term)
        y = res.y[term].to_numpy()
        used = np.sort(res.x[~np.isnan(y)])
        if len(used) < 2 * min_count:
            continue
        curve = spline_smooth(res.x, y, float(res.var[j, j]))
        if curve is None:
            continue
        lo, hi = used[max(min_count, 1) - 1], used[-max(min_count, 1)]
        curve = curve[(curve["x"] >= lo) & (curve["x"] <= hi)]
        parts.append(pd.DataFrame({"term": term, "part": "curve", "time_km": curve["x"],
                                   "time_months": months(curve["x"].to_numpy()), "smooth": curve["smooth"],
                                   "lower": curve["lower"], "upper": curve["upper"]}))
        bins = binned_means(res.x, y, min_count)
        parts.append(pd.DataFrame({"term": term, "part": "bin", "time_km": bins["x"],
                                   "time_months": months(bins["x"].to_numpy(dtype=float)),
                                   "scaled_residual": bins["mean"], "events": bins["events"]}))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    out["events"] = out["events"].astype("Int64")
    return out
