"""Nonparametric estimators the libraries do not give us in the form needed.

* ``aalen_johansen``: cumulative incidence of one cause among competing events, with
  tied times kept exactly (lifelines' AalenJohansenFitter jitters ties at random).
* ``turnbull``: NPMLE of a distribution from interval-censored counts (banded durations).
* ``kaplan_meier``: lifelines' Kaplan-Meier with R's conventions (log(-log) interval,
  missing where S = 0); the one KM every stage uses.
* ``logrank_test``: the multivariate log-rank test (lifelines', R's ``survdiff``) from
  group-by-time counts.
* ``step_read``: the one reader of a right-continuous step curve (KM, CIF) at given times.
* ``km_quantile``: a quantile of a step survival curve by R's rule (a flat exactly at the
  target gives the midpoint), where lifelines takes the end of the flat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.schema import DAYS_PER_YEAR


def aalen_johansen(time, event_type, cause, alpha: float = 0.05) -> pd.DataFrame:
    """Cumulative incidence F_j(t) of ``cause`` with competing events (Aalen and Johansen 1978).

    ``event_type``: 0 for censored, any other value a cause. At each distinct time t_i
    with n_i at risk, d_i events of any cause and d_ji of cause j:

        S(t_i) = prod_{t_m <= t_i} (1 - d_m / n_m),     F_j(t) = sum_{t_i <= t} S(t_{i-1}) d_ji / n_i

    Variance: the delta-method (Greenwood-type) estimator of Collett (2003, p. 411), as in
    SAS PROC LIFETEST and lifelines,

        Var F_j(t) = sum_{t_i <= t} [F_j(t) - F_j(t_i)]^2 d_i / (n_i (n_i - d_i))
                     + S(t_{i-1})^2 d_ji (n_i - d_ji) / n_i^3
                     - 2 [F_j(t) - F_j(t_i)] S(t_{i-1}) d_ji / n_i^2,

    expanded into cumulative sums (O(n log n)); the interval is symmetric on log(-log F).
    """
    time = np.asarray(time, dtype=float)
    event_type = np.asarray(event_type)
    uniq, inv = np.unique(time, return_inverse=True)
    removed = np.bincount(inv, minlength=len(uniq))
    n_at = len(time) - np.concatenate([[0], np.cumsum(removed)[:-1]])
    d_any = np.bincount(inv, weights=(event_type != 0), minlength=len(uniq))
    d_j = np.bincount(inv, weights=(event_type == cause), minlength=len(uniq))
    keep = d_any > 0
    t, n, d, dj = uniq[keep], n_at[keep].astype(float), d_any[keep], d_j[keep]
    surv = np.cumprod(1 - d / n)
    lag_s = np.concatenate([[1.0], surv[:-1]])
    F = np.cumsum(lag_s * dj / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = d / (n * (n - d))                  # infinite where everyone left fails
        b = lag_s**2 * dj * (n - dj) / n**3
        c = lag_s * dj / n**2
        var = (F**2 * np.cumsum(a) - 2 * F * np.cumsum(a * F) + np.cumsum(a * F**2)
               + np.cumsum(b) - 2 * F * np.cumsum(c) + 2 * np.cumsum(c * F))
        z = stats.norm.ppf(1 - alpha / 2)
        se_tr = np.sqrt(np.maximum(var, 0)) / (F * np.abs(np.log(F)))
        tr = np.log(-np.log(F))
        one, two = np.exp(-np.exp(tr + z * se_tr)), np.exp(-np.exp(tr - z * se_tr))
    return pd.DataFrame({"time": t, "at_risk": n.astype(np.int64), "events_any": d.astype(np.int64),
                         "events_cause": dj.astype(np.int64), "cif": F, "variance": var,
                         "lower": np.fmin(one, two), "upper": np.fmax(one, two)})


DAYS_PER_MONTH = DAYS_PER_YEAR / 12  # 30.4375: months in every report and horizon


def kaplan_meier(time, event) -> pd.DataFrame:
    """Kaplan-Meier S(t) with its 95% log(-log) interval and numbers at risk, one row per
    distinct time (from time 0). The interval is undefined where S = 0: missing there, as
    in R's ``survfit``.

    lifelines' ``KaplanMeierFitter`` arithmetic, step for step (so the numbers are the same
    to the last bit), on one ``np.unique`` instead of its pandas event table (30 times
    faster on a million rows): with n_i at risk and d_i events at the i-th time,

        log S(t) = sum_{t_i <= t} [log(n_i - d_i) - log n_i],
        Greenwood  V(t) = sum_{t_i <= t} d_i / (n_i (n_i - d_i))   (0 where n_i = d_i),
        interval   exp(-exp(log(-log S) -+ z sqrt(V) / log S))      (1 where undefined).

    The first row is time min(0, first time) (lifelines' birth row).
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event).astype(bool)
    times, inverse = np.unique(t, return_inverse=True)
    removed = np.bincount(inverse, minlength=len(times))
    deaths = np.bincount(inverse, weights=e, minlength=len(times)).astype(np.int64)
    birth = min(0.0, float(times[0])) if len(times) else 0.0
    if not len(times) or birth < times[0]:      # a birth row with no one leaving
        times = np.r_[birth, times]
        removed, deaths = np.r_[0, removed], np.r_[0, deaths]
    at_risk = len(t) - np.r_[0, np.cumsum(removed)[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.log(at_risk - deaths) - np.log(at_risk))
        population = at_risk.astype("uint64")
        step = deaths / (population * (population - deaths))
        greenwood = np.cumsum(np.where(np.isinf(step), 0.0, step))
        survival = np.exp(log_s)
        v = np.log(survival)
        z = stats.norm.ppf(1 - 0.05 / 2)
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(greenwood) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(greenwood) / v))
    lower, upper = np.where(np.isnan(lower), 1.0, lower), np.where(np.isnan(upper), 1.0, upper)
    undefined = survival <= 0
    lower[undefined], upper[undefined] = np.nan, np.nan
    return pd.DataFrame({"time_days": times, "at_risk": at_risk, "survival": survival,
                         "survival_lower": lower, "survival_upper": upper})


def logrank_test(time, groups, event) -> tuple[float, int, float]:
    """Log-rank test that the groups share one survival curve: (chi-square, df, p).

    At each event time t_i with n_i at risk (n_ij in group j) and d_i events (d_ij):
    O_j - E_j = sum_i d_ij - n_ij d_i / n_i, and the hypergeometric covariance
    V_jk = sum_i d_i (n_i - d_i) / (n_i^2 (n_i - 1)) n_ij (delta_jk n_i - n_ik)
    (the last factor 1 where n_i = 1); chi-square = Z' V^+ Z over all groups but the last
    in order of first appearance (lifelines' ``multivariate_logrank_test``, R's
    ``survdiff``), on G - 1 degrees of freedom. One sort and group-by-time counts (no
    table per group).
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event).astype(bool)
    codes, levels = pd.factorize(np.asarray(groups))     # first-appearance order, as lifelines
    n_groups = len(levels)
    times, inverse = np.unique(t, return_inverse=True)
    cell = inverse * n_groups + codes
    size = len(times) * n_groups
    removed = np.bincount(cell, minlength=size).reshape(len(times), n_groups).astype(float)
    observed = np.bincount(cell, weights=e, minlength=size).reshape(len(times), n_groups)
    n_ij = removed.sum(0) - np.vstack([np.zeros(n_groups), np.cumsum(removed, 0)[:-1]])
    n_i = n_ij.sum(1)
    d_i = observed.sum(1)
    z = observed.sum(0) - (n_ij * (d_i / n_i)[:, None]).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (n_i - d_i) / (n_i - 1)
    factor = np.where(np.isfinite(ratio), ratio, 1.0) * d_i / n_i**2
    scaled = n_ij * np.sqrt(factor)[:, None]
    V = -(scaled.T @ scaled)
    V[np.arange(n_groups), np.arange(n_groups)] += (scaled * (n_i * np.sqrt(factor))[:, None]).sum(0)
    V = V[:-1, :-1]
    chisq = float(z[:-1] @ np.linalg.pinv(V) @ z[:-1])
    return chisq, n_groups - 1, float(stats.chi2.sf(chisq, n_groups - 1))


def nelson_aalen(time, event) -> pd.DataFrame:
    """Nelson-Aalen cumulative hazard H(t) = sum d_i / n_i at each distinct time, with R's
    ``survfit`` standard error sqrt(sum d_i / n_i^2) (``std.chaz``; lifelines' variance differs
    in the tail) and a 95% interval on the log scale, H exp(+-1.96 se / H) (missing where H = 0).
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event).astype(bool)
    times, inverse = np.unique(t, return_inverse=True)
    deaths = np.bincount(inverse, weights=e, minlength=len(times))
    leaving = np.bincount(inverse, minlength=len(times))
    at_risk = len(t) - np.concatenate([[0], np.cumsum(leaving)[:-1]])
    hazard = np.cumsum(deaths / at_risk)
    se = np.sqrt(np.cumsum(deaths / at_risk**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(hazard > 0, np.exp(1.959963984540054 * se / hazard), np.nan)
    return pd.DataFrame({"time_days": times, "at_risk": at_risk, "events": deaths, "cumulative_hazard": hazard,
                         "cumhaz_se": se, "cumhaz_lower": hazard / spread, "cumhaz_upper": hazard * spread})


def step_read(times, values, at, before: float, after_last: str = "hold") -> np.ndarray:
    """A right-continuous step function (``values[i]`` from ``times[i]`` on; times sorted)
    read at each of ``at``: ``before`` ahead of the first time; past the last time the last
    value (``"hold"``) or NaN (``"nan"``: the curve was cut where too few remained at risk)."""
    times = np.asarray(times, dtype=float)
    at = np.atleast_1d(np.asarray(at, dtype=float))
    out = np.concatenate([[before], np.asarray(values, dtype=float)])[np.searchsorted(times, at, side="right")]
    if after_last == "nan" and len(times):
        out = np.where(at > times[-1], np.nan, out)
    return out


def km_quantile(times, surv, q: float = 0.5, eps: float = 1e-10) -> float:
    """Smallest t with S(t) <= q, as R's ``quantile.survfit``: when S equals q exactly on a
    flat stretch, the midpoint of that stretch (to the next drop). NaN if S never reaches q.

    Applied to the lower and upper confidence bands it gives the CI of the quantile.
    """
    times = np.asarray(times, dtype=float)
    surv = np.asarray(surv, dtype=float)
    reach = np.flatnonzero(surv <= q + eps)
    if not len(reach):
        return float("nan")
    i = reach[0]
    if abs(surv[i] - q) <= eps:
        drops = np.flatnonzero(surv[i:] < q - eps)
        if len(drops):
            return float((times[i] + times[i + drops[0]]) / 2)
    return float(times[i])


def turnbull(lower, upper, weights=None, tol: float = 1e-10, max_iter: int = 10_000) -> pd.DataFrame:
    """Turnbull (1976) NPMLE of a distribution from interval-censored observations (L, R].

    ``upper = inf`` is right-censoring. Mass can sit only on the Turnbull intervals
    (innermost intervals [q, p] with q a left end and p the next right end); the
    self-consistency (EM) iteration is

        p_j <- sum_i w_i alpha_ij p_j / sum_k alpha_ik p_k / sum_i w_i,

    alpha_ij = 1 if interval j lies within observation i's (L_i, R_i]. Returns each
    support interval with its mass and the survival just after it.
    """
    L = np.asarray(lower, dtype=float)
    R = np.asarray(upper, dtype=float)
    w = np.ones(len(L)) if weights is None else np.asarray(weights, dtype=float)
    if np.any(R <= L):
        raise ValueError("each interval needs upper > lower")
    # Innermost intervals: a left end immediately followed (in the sorted ends) by a right end.
    ends = sorted({(v, 0) for v in L} | {(v, 1) for v in R}, key=lambda e: (e[0], -e[1]))
    support = [(ends[i][0], ends[i + 1][0]) for i in range(len(ends) - 1)
               if ends[i][1] == 0 and ends[i + 1][1] == 1]
    q = np.array([s[0] for s in support])
    p_end = np.array([s[1] for s in support])
    alpha = (q[None, :] >= L[:, None]) & (p_end[None, :] <= R[:, None])
    mass = np.full(len(support), 1 / len(support))
    for _ in range(max_iter):
        denom = alpha @ mass
        new = mass * ((alpha * (w / denom)[:, None]).sum(0)) / w.sum()
        if np.max(np.abs(new - mass)) < tol:
            mass = new
            break
        mass = new
    return pd.DataFrame({"left": q, "right": p_end, "mass": mass, "survival_after": 1 - np.cumsum(mass)})
