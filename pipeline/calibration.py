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
* ``e50``: median |p - s(p)|;
* ``brier`` and ``scaled_brier`` = 1 - Brier / (ybar (1 - ybar)); ``c`` (area under the ROC
  curve) with its DeLong 95% CI (``c_lower``, ``c_upper``) and ``dxy = 2 (c - 1/2)``;
* ``spiegelhalter_z`` = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p)) and its
  two-sided p-value;
* ``observed_expected``: sum y / sum p.

Checked against rms 6.5.0 ``val.prob`` in ``tests/test_calibration.py``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from pipeline.disclosure import complementary_suppression
from pipeline.lowess import distinct, lowess, lowess_distinct
from pipeline.nonparametric import DAYS_PER_MONTH
from pipeline.config import seed_sequence
from pipeline.schema import group_columns


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


def decile_table(p: np.ndarray, y: np.ndarray, min_count: int, groups: int = 10,
                 weights: np.ndarray | None = None) -> pd.DataFrame:
    """Observed against expected by tenth of predicted risk (counts below min_count withheld).
    With weights (IPCW), the observed rate and mean prediction are weighted means and the
    observed and expected events are both those rates times the tenth's rows (so they can
    be compared); suppression still counts rows."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    tenth = pd.qcut(pd.Series(p).rank(method="first"), groups, labels=False) + 1
    frame = pd.DataFrame({"tenth": tenth, "y": y, "w": w, "wp": w * p, "wy": w * y})
    out = frame.groupby("tenth").agg(n=("y", "size"), observed_events=("y", "sum"), w=("w", "sum"),
                                     wp=("wp", "sum"), wy=("wy", "sum")).reset_index()
    out["mean_predicted"] = out["wp"] / out["w"]
    out["observed_rate"] = out["wy"] / out["w"]
    out["expected_events"] = out["mean_predicted"] * out["n"]
    small = out["observed_events"] < min_count          # the rule counts rows, weighted or not
    if weights is not None and not np.all(w == 1):
        # comparable with expected_events: the weighted observed rate over the tenth's rows
        out["observed_events"] = out["observed_rate"] * out["n"]
    out = out[["tenth", "n", "observed_events", "mean_predicted", "observed_rate", "expected_events"]]
    out.loc[small, ["observed_events", "observed_rate"]] = np.nan
    out.loc[out["n"] < min_count, ["n", "expected_events"]] = np.nan
    return out


def c_interval_bootstrap(p: np.ndarray, y: np.ndarray, weights: np.ndarray, family: np.ndarray,
                         replicates: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the (weighted) C statistic over family bootstrap
    replicates: DeLong's variance has no weighted form, so IPCW results use this."""
    from pipeline.bootstrap import family_draws

    draws = [c_statistic(p, y, weights * times) for times in family_draws(family, replicates, seed, stream="c_interval")]
    lower, upper = np.quantile(draws, [0.025, 0.975])
    return float(lower), float(upper)


def curve(p: np.ndarray, y: np.ndarray, family: np.ndarray | None = None, replicates: int = 200,
          seed: int = 0, points: int = 101, weights: np.ndarray | None = None) -> pd.DataFrame:
    """The lowess calibration curve on a grid of predicted risk, the ideal diagonal, and a
    95% percentile band from resampling whole families (when ``family`` is given)."""
    from pipeline.bootstrap import family_draws

    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    grid = np.linspace(np.quantile(p, 0.01), np.quantile(p, 0.99), points)

    def on_grid(ww: np.ndarray) -> np.ndarray:
        used = ww > 0
        pp = p[used]
        order = np.argsort(pp, kind="stable")
        return np.interp(grid, pp[order], lowess_calibration(pp, y[used], ww[used])[order])

    out = pd.DataFrame({"predicted": grid, "observed": on_grid(w), "ideal": grid})
    if family is not None and replicates:
        draws = np.array([on_grid(w * times) for times in family_draws(family, replicates, seed, stream="calibration_curve_band")])
        out["lower"], out["upper"] = np.quantile(draws, [0.025, 0.975], axis=0)
    return out


def survival_calibration(risk: np.ndarray, time: np.ndarray, event: np.ndarray, horizon: float
                         ) -> tuple[dict[str, float], pd.DataFrame]:
    """Calibration of predicted risks 1 - S(horizon | x) (Austin, Harrell and van Klaveren 2020).

    Observed risk: a Cox model of the outcome on a restricted cubic spline (3 knots, at the
    10th, 50th and 90th percentiles) of cloglog(predicted risk), read at the horizon.
    ICI, E50, E90: mean, median and 90th percentile of |predicted - observed|.
    """
    from pipeline.cox import CoxPH
    from pipeline.splines import rcs_basis

    risk = np.clip(np.asarray(risk, dtype=float), 1e-8, 1 - 1e-8)
    x = np.log(-np.log(1 - risk))
    knots = np.quantile(x, [0.1, 0.5, 0.9])
    basis = rcs_basis(x, knots)
    model = CoxPH().fit(basis, time, event)
    observed = 1 - model.predict_survival(basis, [horizon])[:, 0]
    error = np.abs(risk - observed)
    grid = np.quantile(risk, np.linspace(0.01, 0.99, 99))
    grid_obs = 1 - model.predict_survival(rcs_basis(np.log(-np.log(1 - grid)), knots), [horizon])[:, 0]
    summary = {"ici": float(error.mean()), "e50": float(np.median(error)), "e90": float(np.quantile(error, 0.9)),
               "mean_predicted": float(risk.mean()), "mean_observed": float(observed.mean())}
    return summary, pd.DataFrame({"predicted": grid, "observed": grid_obs, "ideal": grid})


def km_by_risk_tenth(risk: np.ndarray, time: np.ndarray, event: np.ndarray, horizon: float,
                     min_count: int) -> pd.DataFrame:
    """Mean predicted risk against Kaplan-Meier observed risk at the horizon, per tenth."""
    from pipeline.nonparametric import kaplan_meier, step_read

    tenth = pd.qcut(pd.Series(risk).rank(method="first"), 10, labels=False).to_numpy() + 1
    rows = []
    for d in range(1, 11):
        m = tenth == d
        km = kaplan_meier(time[m], event[m])
        s, lo, hi = (float(step_read(km["time_days"], km[c], horizon, 1.0)[0])
                     for c in ("survival", "survival_lower", "survival_upper"))
        n = int(m.sum())
        rows.append({"tenth": d, "n": n if n >= min_count else np.nan, "mean_predicted": float(risk[m].mean()),
                     "observed_km": 1 - s, "observed_lower": 1 - hi, "observed_upper": 1 - lo})
    return pd.DataFrame(rows)


def cox_validation_risks(rereport: pd.DataFrame, params: dict[str, Any], months: list[float]
                         ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Cox model (survival settings) fitted on the development families, predicted risks
    1 - S(t | x) for the validation families at each horizon (LA strata baselines)."""
    from pipeline.settings import survival_settings
    from pipeline.split import validation_split
    from pipeline.survival import design_matrix, fit_cox

    s = survival_settings(params, rereport)
    # The logistic model's split (its grouped k-fold aside: the Cox model is then split in time).
    single = {**params["logistic"], "split": "temporal" if params["logistic"].get("split") == "grouped_kfold"
              else params["logistic"].get("split", "temporal")}
    dev, val, _ = validation_split(rereport, single, int(params["seed"]))
    X_dev, reference = design_matrix(dev, s["covariates"], s.get("categorical", []))
    X_val = design_matrix(val, s["covariates"], s.get("categorical", []), reference)[0].reindex(
        columns=X_dev.columns, fill_value=0.0)
    model = fit_cox(dev, X_dev, s)
    days = [m * DAYS_PER_MONTH for m in months]
    risks = np.full((len(val), len(days)), np.nan)
    strata = val[s["strata"]].to_numpy() if s.get("strata") else np.full(len(val), None)
    known = set(model.strata_levels_)
    for level in pd.unique(strata):
        rows = np.flatnonzero(strata == level) if level is not None else np.arange(len(val))
        if level in known:
            risks[rows] = 1 - model.predict_survival(X_val.iloc[rows], days, stratum=level)
    keep = ~np.isnan(risks[:, 0])
    out = pd.DataFrame(risks[keep], columns=[f"risk_{m}m" for m in months])
    out["time_days"], out["event"] = val["time_days"].to_numpy()[keep], val["event"].to_numpy()[keep]
    if "event_type" in val:
        out["event_type"] = val["event_type"].to_numpy()[keep]
    out["family"] = pd.factorize(val["family_id"])[0][keep]          # anonymous: for resampling only
    return out, {"validation_rows": int(keep.sum()), "rows_in_strata_unseen_in_development": int((~keep).sum())}


def subgroup_calibration(pred: pd.DataFrame, min_count: int, replicates: int = 0, seed: int = 0, n_jobs: int = 1
                         ) -> pd.DataFrame:
    """O/E, calibration-in-the-large, slope and ICI within each subgroup and LA, with 95%
    intervals and the noise floor of ICI and E90 (``calibration_uncertainty``; none when
    ``replicates`` is 0). Groups with fewer than ``min_count`` events or non-events are
    withheld (counts and measures)."""
    from pipeline.calibration_uncertainty import binary_uncertainty, with_intervals

    rows = []
    for var in group_columns(pred):
        for level, g in pred.groupby(pred[var].astype(str), sort=True):
            events = int(g["y"].sum())
            row = {"variable": var, "level": level, "n": len(g), "events": events}
            if min(events, len(g) - events) < max(min_count, 2):
                row.update(n=np.nan, events=np.nan)
            else:
                v = val_prob(g["p"], g["y"], g["weight"] if "weight" in g else None)
                found = binary_uncertainty(g["p"], g["y"], g["weight"] if "weight" in g else np.ones(len(g)),
                                           g["family"], replicates, seed, f"calibration_subgroup/{var}={level}",
                                           n_jobs) if replicates else {}
                row.update(with_intervals(dict(observed_expected=v["observed_expected"], citl=v["citl"], slope=v["slope"],
                                               ici=v["eavg"], e90=v["e90"], c=v["c"]), found))
            rows.append(row)
    return complementary_suppression(pd.DataFrame(rows), ["variable"], "n", ["n", "events"])


def fold_calibration(pred: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """Grouped k-fold split: the measures within each fold's out-of-fold predictions."""
    rows = []
    for fold, g in pred.groupby("fold", sort=True):
        events = int(g["y"].sum())
        v = val_prob(g["p"], g["y"], g["weight"])
        small = min(events, len(g) - events) < min_count
        rows.append({"fold": int(fold), "n": np.nan if small else len(g), "events": np.nan if small else events,
                     "observed_expected": v["observed_expected"], "citl": v["citl"], "slope": v["slope"],
                     "ici": v["eavg"], "brier": v["brier"], "c": v["c"]})
    return pd.DataFrame(rows)


def recalibration(pred: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Logistic (intercept and slope) and isotonic recalibration, each fitted on one half
    of the validation families and assessed, with the original, on the other half."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed_sequence(seed, "recalibration_split"))
    families = pred["family"].unique()
    fit_half = np.isin(pred["family"], rng.choice(families, size=len(families) // 2, replace=False))
    a, b = pred[fit_half], pred[~fit_half]
    w_a = a["weight"].to_numpy() if "weight" in a else np.ones(len(a))
    w_b = b["weight"].to_numpy() if "weight" in b else None
    lp_a, lp_b = special.logit(a["p"].to_numpy()), special.logit(b["p"].to_numpy())
    intercept, slope = logistic_recalibration(lp_a, w_a * a["y"].to_numpy(), w_a)
    logistic_p = special.expit(intercept + slope * lp_b)
    iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip").fit(a["p"], a["y"], sample_weight=w_a)
    isotonic_p = np.clip(iso.predict(b["p"]), 1e-6, 1 - 1e-6)
    rows = []
    for name, p in (("original", b["p"].to_numpy()), ("logistic_recalibration", logistic_p),
                    ("isotonic_recalibration", isotonic_p)):
        v = val_prob(p, b["y"], w_b)
        rows.append({"method": name, "observed_expected": v["observed_expected"], "citl": v["citl"],
                     "slope": v["slope"], "ici": v["eavg"], "e90": v["e90"], "brier": v["brier"], "c": v["c"]})
    out = pd.DataFrame(rows)
    out.attrs["fitted_on"], out.attrs["assessed_on"] = int(fit_half.sum()), int((~fit_half).sum())
    out.attrs["logistic"] = {"intercept": float(intercept), "slope": float(slope)}
    return out


#: Declared outputs' headers, written with no rows when a part could not be estimated.
TABLES = {
    "optimism": ["measure", "apparent", "optimism", "corrected"],
    "subgroups": ["variable", "level", "n", "events"],
    "folds": ["fold", "n", "events"],
    "recalibration": ["method", "observed_expected", "citl", "slope", "ici", "e90", "brier", "c"],
    "intervals": ["measure", "value", "lower", "upper", "interval", "noise_floor_p50", "noise_floor_p95", "reading"],
    "deciles": ["tenth", "n", "observed_events", "mean_predicted", "observed_rate", "expected_events"],
    "curve": ["predicted", "observed", "ideal", "lower", "upper"],
    "cox_calibration": ["horizon_months", "observed_expected", "slope", "ici", "e50", "e90", "mean_predicted",
                        "mean_observed"],
    "cox_curves": ["predicted", "observed", "ideal", "horizon_months"],
    "cox_km_by_tenth": ["tenth", "n", "mean_predicted", "observed_km", "observed_lower", "observed_upper",
                        "horizon_months"],
}
COX_MONTHS = (6, 12, 24)


def logistic_calibration(pred: pd.DataFrame, dev: pd.DataFrame, params: dict[str, Any], min_count: int
                         ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The logistic model's calibration on the validation predictions, with the bootstrap
    optimism of its development fit (whole families resampled)."""
    from pipeline import bootstrap, logistic

    weights = pred["weight"].to_numpy()
    weighted = not np.all(weights == 1)
    c = params["calibration"]
    replicates = int(c["bootstrap_replicates"])
    validation = val_prob(pred["p"], pred["y"], weights)
    if weighted:   # IPCW: DeLong has no weighted form; a family-bootstrap percentile interval instead
        validation["c_lower"], validation["c_upper"] = c_interval_bootstrap(
            pred["p"].to_numpy(), pred["y"].to_numpy(), weights, pred["family"].to_numpy(), replicates,
            int(params["seed"]))
    from pipeline import calibration_uncertainty as uncertainty

    found = uncertainty.binary_uncertainty(pred["p"], pred["y"], weights, pred["family"], replicates,
                                           int(params["seed"]), "calibration_validation", int(c["n_jobs"]))
    validation = uncertainty.with_intervals(validation, found, flat=False, names={"eavg": "ici"})
    metrics = {"weighting": ("inverse probability of censoring weights: every measure weighted; C interval by "
                             "family bootstrap percentiles; Spiegelhalter z not defined" if weighted else "none"),
               "validation": validation,
               "intervals": {k: v.format(replicates=replicates) for k, v in uncertainty.INTERVAL_METHODS.items()}}
    columns = [c for c in dev.columns if c not in ("y", "weight", "family")]
    table = bootstrap.optimism(dev[columns].to_numpy(dtype=float), dev["y"].to_numpy(), dev["weight"].to_numpy(),
                               dev["family"].to_numpy(), logistic.fit_model, logistic.score_model,
                               replicates=replicates, seed=int(params["seed"]),
                               n_jobs=int(c["n_jobs"]), progress=True)
    tables = {"optimism": table.reset_index(), "subgroups": subgroup_calibration(pred, min_count, replicates,
                                                                                int(params["seed"]), int(c["n_jobs"])),
              "intervals": uncertainty.interval_table(validation, replicates, "family bootstrap percentile" if weighted
                                                      else "DeLong")}
    if "fold" in pred:
        tables["folds"] = fold_calibration(pred, min_count)
    recal = recalibration(pred, int(params["seed"]))
    tables["recalibration"] = recal
    metrics["recalibration"] = {"fitted_on_rows": recal.attrs["fitted_on"], "assessed_on_rows": recal.attrs["assessed_on"],
                                "logistic": recal.attrs["logistic"]}
    metrics["optimism_corrected"] = {k: round(float(v), 4) for k, v in table["corrected"].items()}
    metrics["bootstrap_replicates"] = int(c["bootstrap_replicates"])
    tables["deciles"] = decile_table(pred["p"], pred["y"], min_count, weights=weights)
    tables["curve"] = curve(pred["p"], pred["y"], pred["family"], replicates, int(params["seed"]), weights=weights)
    return tables, metrics


def cox_calibration(risks: pd.DataFrame, min_count: int, replicates: int = 0, seed: int = 0, n_jobs: int = 1
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The Cox model's calibration at each horizon of ``COX_MONTHS`` on the validation
    families, with O/E, slope and intervals and the noise floor (``calibration_uncertainty``;
    none when ``replicates`` is 0)."""
    from pipeline.calibration_uncertainty import rounded, survival_uncertainty, with_intervals

    found = survival_uncertainty(risks, {f"risk_{m}m": m * DAYS_PER_MONTH for m in COX_MONTHS}, risks["time_days"],
                                 risks["event"], risks["family"], replicates, seed, "cox_calibration",
                                 n_jobs=n_jobs) if replicates else {}
    surv_rows, curves, tenths = [], [], []
    for m in COX_MONTHS:
        horizon = m * DAYS_PER_MONTH
        summary, grid = survival_calibration(risks[f"risk_{m}m"].to_numpy(), risks["time_days"].to_numpy(),
                                             risks["event"].to_numpy(), horizon)
        more = found.get(f"risk_{m}m", {})
        surv_rows.append({"horizon_months": m, **with_intervals(
            {**{k: more[k] for k in ("observed_expected", "slope") if k in more}, **summary}, more)})
        curves.append(grid.assign(horizon_months=m))
        tenths.append(km_by_risk_tenth(risks[f"risk_{m}m"].to_numpy(), risks["time_days"].to_numpy(),
                                       risks["event"].to_numpy(), horizon, min_count).assign(horizon_months=m))
    metrics = {f"{r['horizon_months']}_months": rounded({k: v for k, v in r.items() if k != "horizon_months"})
               for r in surv_rows}
    return ({"cox_calibration": pd.DataFrame(surv_rows), "cox_curves": pd.concat(curves, ignore_index=True),
             "cox_km_by_tenth": pd.concat(tenths, ignore_index=True)}, metrics)


def main() -> None:
    """Calibration of the logistic model on the validation data, and of the Cox model.

    Each part that cannot be estimated (no validation predictions because the logistic
    model could not be fitted; a Cox model without events, say) writes its tables with
    their header and no rows, and ``status`` / ``not_estimated`` in the metrics say why."""
    from pathlib import Path

    from pipeline import config
    from pipeline.cli import InputError
    from pipeline.estimable import binary_problem, empty, model_problem, record
    from pipeline.io import write_csv, write_json, write_parquet

    params = config.load_params()
    min_count = int(params["disclosure"]["min_cell_count"])
    pred = pd.read_parquet("data/predictions/validation.parquet")
    dev = pd.read_parquet("data/predictions/development.parquet")
    metrics: dict[str, Any] = {"horizon_days": params["logistic"]["horizon_days"],
                               "censoring": params["logistic"]["censoring"]}
    logistic_status = json.loads(Path("metrics/logistic.json").read_text()).get("not_estimated", {}).get(
        "logistic_model") if Path("metrics/logistic.json").exists() else None
    problem = logistic_status or binary_problem(pred["y"], "validation rows")
    tables: dict[str, pd.DataFrame] = {}
    if problem is None:
        tables, found = logistic_calibration(pred, dev, params, min_count)
        metrics.update(found)
    else:
        record(metrics, "logistic_calibration", problem)
        tables = {name: empty(TABLES[name]) for name in ("optimism", "subgroups", "recalibration", "deciles", "curve",
                                                         "intervals")}
    # The Cox model's predicted risks at 6, 12 and 24 months, on the validation families.
    rereport = pd.read_parquet("data/analysis/rereport.parquet")
    risk_columns = {f"risk_{m}m": float for m in COX_MONTHS}
    risks = pd.DataFrame({**{c: pd.Series(dtype=t) for c, t in risk_columns.items()},
                          "time_days": pd.Series(dtype=float), "event": pd.Series(dtype=np.int8),
                          "family": pd.Series(dtype=np.int64)})
    problem = model_problem(rereport["time_days"], rereport["event"])
    if problem is None:
        try:
            risks, counts = cox_validation_risks(rereport, params, list(COX_MONTHS))
            metrics["cox"] = counts
            problem = model_problem(risks["time_days"], risks["event"])
            if problem is not None:
                problem = f"validation rows with predicted risks: {problem}"
        except (InputError, ValueError) as err:
            problem = str(err)
    if problem is None:
        try:
            found_tables, found = cox_calibration(risks, min_count, int(params["calibration"]["bootstrap_replicates"]),
                                                  int(params["seed"]), int(params["calibration"]["n_jobs"]))
            tables.update(found_tables)
            metrics["cox"].update(found)
        except (ValueError, np.linalg.LinAlgError) as err:   # e.g. too few validation rows for the spline fit
            problem = str(err)
    if problem is not None:
        record(metrics, "cox_calibration", problem)
        tables.update({name: empty(TABLES[name]) for name in ("cox_calibration", "cox_curves", "cox_km_by_tenth")})
    write_parquet(risks, Path("data/predictions/cox_validation.parquet"))   # for the errors stage
    for name, table in tables.items():
        write_csv(table, Path("reports/calibration") / f"{name}.csv")
    order = ["horizon_days", "censoring", "weighting", "validation", "cox", "recalibration", "optimism_corrected"]
    metrics = {**{k: metrics[k] for k in order if k in metrics}, **metrics}   # the usual order of the keys
    write_json(metrics, Path("metrics/calibration.json"))
    v = metrics.get("validation")
    print("calibration: " + "; ".join(
        ([f"validation O/E {v['observed_expected']:.3f}, slope {v['slope']:.3f}, ICI {v['eavg']:.4f}, C {v['c']:.3f}"]
         if v else []) + ([metrics["status"]] if "status" in metrics else [])))


if __name__ == "__main__":
    from pipeline.cli import stage_entry

    stage_entry(main)()
