"""How sure the calibration figures are, and how much of ICI and E90 is noise.

Three things, all pure functions of predictions and outcomes:

1. **Analytic 95% intervals** for O/E, calibration-in-the-large (CITL) and the calibration
   slope (``wald_intervals``). Each is the estimate of a one- or two-parameter GLM:

   * slope: ``logit P(y=1) = a + b lp``, lp = logit(p), interval for b;
   * CITL: ``logit P(y=1) = a + lp`` (lp as offset), interval for a;
   * O/E: ``log E[y] = a + log p`` (Poisson-type, log(p) as offset), whose estimate is
     exactly a = log(sum w y / sum w p), interval for a, exponentiated.

   The interval is Wald's, estimate +- z SE with z = 1.959964. With ``cluster=None``
   (``variance="model"``) the SE is the model-based one, inverse information at the
   estimate: for slope and CITL these are the intervals R's CalibrationCurves
   ``val.prob.ci.2`` prints (``confint()`` of its ``lrm.fit`` fits, i.e. Wald; pinned
   against R ``glm`` + ``confint.default`` and statsmodels in the tests); for O/E it is
   SE(log O/E) = 1/sqrt(O), the Poisson-type interval O/E exp(+-z / sqrt(O)) of
   CalibrationCurves ``valProbSurvival`` (and Debray et al. 2017, BMJ 356:i6460).

   With ``cluster`` given, the SE is the cluster-robust sandwich from the same estimating
   equations, I^-1 (sum_g u_g u_g') I^-1 * G/(G-1), u_g the summed score
   w_i (y_i - mu_i) x_i of the G clusters' rows with positive weight: R
   ``sandwich::vcovCL(glm, cluster)``'s default for a glm (HC0 with the G/(G-1) cluster
   adjustment; pinned) and statsmodels ``cov_type="cluster"`` without its extra
   (N-1)/(N-K). The pipeline uses this, clustered by family,
   because (a) a child's several episodes and siblings are not independent rows, (b)
   with inverse-probability-of-censoring weights the model-based variance treats the
   weights as counts of rows and is wrong, and (c) for a binary outcome the Poisson-type
   O/E interval is too wide by 1/sqrt(1 - ybar) (coverage about 97.6% at ybar = 0.25,
   shown in the tests); the sandwich is not. Uncertainty in the IPCW weights themselves
   is not propagated.

2. **Bootstrap intervals for ICI, E50 and E90** (Austin and Steyerberg 2019, Stat Med
   38:4051; the lowess smoother of ``val_prob``): 95% percentile intervals over
   replicates resampling whole families (``bootstrap.family_draws``, a named stream).
   These intervals describe the sampling spread of the *measured* ICI, which is biased
   upwards at small n (point 3): they are not intervals for the true miscalibration. Near
   the floor a replicate's value is noise added to noise, so the interval can lie wholly
   above the estimate (on the default, the Cox model's E90 at 6 months: 0.0059, interval
   0.0065-0.0282). Percentile intervals as asked; a basic (reflected) interval would go
   below 0 there instead. Read them with the floor.

3. **The noise floor**: what ICI and E90 a *perfectly calibrated* model shows at this n
   and this risk distribution. Draw y*_i ~ Bernoulli(p_i) for the observed predictions
   (weights as observed), score them with the same lowess calibration, repeat R times
   (a named stream); report the 50th and 95th percentiles. Reading: "within what a
   perfectly calibrated model shows at this size" when the observed value is at most
   the 95th percentile, else "beyond" it. This is a parametric bootstrap test of
   H0: calibrated, one-sided at 5%. Rows are drawn independently: correlation within
   families would widen the floor, so with large families the floor is, if anything,
   too low (the reading errs towards "beyond").

   No floor-corrected ICI is reported. Subtracting the floor's median assumes noise and
   miscalibration add; they do not (|s(p) - p| is a mean of absolute values: noise adds
   much where the miscalibration is small and little where it is large). Simulated at the
   default's validation predictions (n 5469; true risk expit(a + b logit p), 20 outcome
   sets each), subtracting the median (0.0076) under-read the true ICI by 0.007-0.008 at
   every miscalibration from 0.016 to 0.054, worse than the raw ICI (within 0.002 of it).
   Subtracting in quadrature, sqrt(ICI^2 - floor^2), was nearly unbiased but no more
   accurate than the raw value (root mean square error 0.0037-0.0064 against the raw
   0.0037-0.0062) except at perfect calibration, which the reading already shows
   (``tests/test_calibration_uncertainty.py`` repeats this on synthetic risks). The floor
   is a reference for reading the observed value, not a correction to it.

The Cox model's predicted risks at a horizon are scored on weighted binary statuses
(``calibration.survival_calibration``): ``horizon_uncertainty`` applies all of the above to
those statuses, their weights and families.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import special, stats

from pipeline import compute
from pipeline.bootstrap import family_multiplicity, family_seeds
from pipeline.scoring import logistic_recalibration, weighted_quantile
from pipeline.config import seed_sequence
from pipeline.lowess import distinct, lowess_distinct, lowess_distinct_many

LEVEL = 0.95
WITHIN = "within what a perfectly calibrated model shows at this size"
BEYOND = "beyond what a perfectly calibrated model shows at this size"
#: Measures whose noise floor is reported.
FLOOR_MEASURES = ("ici", "e90")


def _z(level: float) -> float:
    return float(stats.norm.ppf(1 - (1 - level) / 2))


def _variance(scores: np.ndarray, information: np.ndarray, cluster: np.ndarray | None) -> np.ndarray:
    """Model-based inverse information, or the cluster-robust sandwich with the G/(G-1)
    factor (R ``vcovCL``'s default for a glm)."""
    try:
        bread = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        return np.full(information.shape, np.nan)
    if cluster is None:
        return bread
    codes = pd.factorize(np.asarray(cluster))[0]
    g = int(codes.max()) + 1
    if g < 2:
        return np.full_like(bread, np.nan)
    summed = np.stack([np.bincount(codes, weights=scores[:, j], minlength=g) for j in range(scores.shape[1])], axis=1)
    return bread @ (summed.T @ summed) @ bread * (g / (g - 1))


def wald_intervals(p, y, weights=None, cluster=None, level: float = LEVEL) -> dict[str, float]:
    """O/E, CITL and calibration slope with Wald intervals (module docstring, point 1):
    keys ``observed_expected``, ``citl``, ``slope``, each with ``_lower`` and ``_upper``.
    ``weights``: frequency or IPCW weights (rows with weight 0 are left out, with their
    clusters); ``cluster``: labels for the robust variance (None: model-based). NaN where
    the estimate does not exist (separation, one distinct prediction)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    used = w > 0
    p, y, w = p[used], y[used], w[used]
    cl = None if cluster is None else np.asarray(cluster)[used]
    z = _z(level)
    lp = special.logit(p)
    out: dict[str, float] = {}

    observed, expected = float(np.sum(w * y)), float(np.sum(w * p))
    ratio = observed / expected
    # Poisson-type estimating equation sum w (y - p O/E) = 0; information sum w p O/E = O.
    var = _variance((w * (y - p * ratio))[:, None], np.array([[observed]]), cl)[0, 0] if observed > 0 else np.nan
    se = np.sqrt(var)
    out.update(observed_expected=ratio, observed_expected_lower=ratio * np.exp(-z * se),
               observed_expected_upper=ratio * np.exp(z * se))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # NaN estimates give NaN intervals
        citl = logistic_recalibration(lp, w * y, w, slope=False)[0]
        intercept, slope = logistic_recalibration(lp, w * y, w)
    for name, X, beta, index in (("citl", np.ones((len(p), 1)), np.array([citl]), 0),
                                 ("slope", np.column_stack([np.ones(len(p)), lp]), np.array([intercept, slope]), 1)):
        if not np.all(np.isfinite(beta)):
            out.update({name: float(beta[index]), f"{name}_lower": np.nan, f"{name}_upper": np.nan})
            continue
        mu = special.expit(X @ beta + (lp if name == "citl" else 0.0))
        information = (X * (w * mu * (1 - mu))[:, None]).T @ X
        se = float(np.sqrt(_variance(X * (w * (y - mu))[:, None], information, cl)[index, index]))
        out.update({name: float(beta[index]), f"{name}_lower": float(beta[index] - z * se),
                    f"{name}_upper": float(beta[index] + z * se)})
    return {k: float(v) for k, v in out.items()}


def smoothed_errors(p: np.ndarray, y: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """ICI, E50 and E90 exactly as ``val_prob`` computes them (its ``eavg``, ``e50``,
    ``e90``: weighted mean, median and 90th percentile of |p - s(p)|, s the lowess smooth),
    without its other measures, so that a replicate with no events still scores."""
    used = weights > 0
    ux, _, mass, events = distinct(p[used], y[used], weights[used])
    return _errors_on_distinct(ux, mass, events)


def _errors_on_distinct(ux: np.ndarray, mass: np.ndarray, events: np.ndarray,
                        smooth: np.ndarray | None = None) -> dict[str, float]:
    error = np.abs(ux - (lowess_distinct(ux, mass, events) if smooth is None else smooth))
    e50, e90 = weighted_quantile(error, mass, [0.5, 0.9])
    return {"ici": float(np.sum(mass * error) / mass.sum()), "e50": float(e50), "e90": float(e90)}


def percentile_interval(draws: pd.DataFrame, level: float = LEVEL) -> dict[str, float]:
    """``{measure}_lower``/``_upper``: the (1-level)/2 and (1+level)/2 quantiles of each column."""
    q = draws.quantile([(1 - level) / 2, (1 + level) / 2])
    return {f"{m}_{side}": float(q[m].iloc[i]) for m in draws.columns for i, side in enumerate(("lower", "upper"))}


def in_chunks(function: Callable[..., list], shared: tuple, replicates, n_jobs: int = 1) -> list:
    """``function(*shared, chunk)`` over consecutive chunks of ``replicates`` (a sequence, one
    replicate each), results in order: here (in ``n_jobs`` joblib processes, one BLAS thread
    each, as the optimism bootstrap) or as Dask tasks (``pipeline.compute``). Each replicate
    is drawn before or from its own seed, so results do not depend on the workers."""
    if compute.active() is None and (n_jobs <= 1 or len(replicates) < 2):
        return function(*shared, replicates)
    parts = compute.map_tasks(function, compute.chunks(replicates, 2 * compute.slots(n_jobs)), shared, n_jobs)
    return [r for part in parts for r in part]


def _reweighted_errors(p: np.ndarray, y: np.ndarray, w: np.ndarray, family_code: np.ndarray,
                       seeds: list[np.random.SeedSequence]) -> list:
    """ICI, E50 and E90 of the family-bootstrap replicates of ``seeds`` (``family_draws``'s draws)."""
    n_families = int(family_code.max()) + 1
    counted = _whole_counts(p, y, w)
    out = []
    for s in seeds:
        drawn = w * family_multiplicity(np.random.default_rng(s), family_code, n_families)
        exact = counted is not None and drawn.sum() < 2.0**53
        out.append(_errors_on_distinct(*counted(drawn)) if exact else smoothed_errors(p, y, drawn))
    return out


def _whole_counts(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Callable[[np.ndarray], tuple] | None:
    """When the weights are whole numbers and y is 0/1 (unweighted rows: the logistic model's
    validation), a function giving ``distinct``'s distinct predictions, masses and events for
    the same rows reweighted (a replicate's weight times multiplicity), from one sort made
    here. Sums of whole numbers below 2^53 (checked per replicate) are exact in any order, so these are the numbers
    ``distinct`` gives after its own sort, to the bit; None otherwise (IPCW weights: the
    order of a sum moves its last bit, so each replicate keeps its own sort)."""
    if not (np.all(w == np.floor(w)) and np.all((y == 0) | (y == 1))):
        return None
    order = np.argsort(p)
    xs = p[order]
    new = np.empty(len(xs), dtype=bool)
    new[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    group = np.cumsum(new) - 1
    values, y_sorted, n_values = xs[new], y[order], int(new.sum())

    def counted(weights: np.ndarray) -> tuple:
        ws = weights[order]
        mass = np.bincount(group, weights=ws, minlength=n_values)
        events = np.bincount(group, weights=ws * y_sorted, minlength=n_values)
        kept = mass > 0
        return values[kept], mass[kept], events[kept]
    return counted


def _redrawn_errors(p: np.ndarray, w: np.ndarray, outcomes: np.ndarray) -> list:
    """``smoothed_errors`` of each outcome set: the predictions and weights are the same in
    every set, so ``distinct``'s sort, distinct values and masses are made once (the same
    sort of the same array: the same numbers to the bit), only the events are summed, and
    the smooths share their windows (``lowess_distinct_many``: the same numbers to the bit)."""
    used = w > 0
    pu, wu = p[used], w[used]
    order = np.argsort(pu)                                   # as lowess.distinct sorts
    xs = pu[order]
    new = np.empty(len(xs), dtype=bool)
    new[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    group = np.cumsum(new) - 1
    ux, mass = xs[new], np.bincount(group, weights=wu[order])
    out = []
    for at in range(0, len(outcomes), 25):      # 25 sets at a time: 2 x 25 x distinct p floats in memory
        events = np.array([np.bincount(group, weights=(wu * y.astype(float)[used])[order])
                           for y in outcomes[at:at + 25]])
        smooths = lowess_distinct_many(ux, mass, events)    # one window geometry for every outcome set
        out.extend(_errors_on_distinct(ux, mass, e, s) for e, s in zip(events, smooths))
    return out


def error_intervals(p, y, weights, family, replicates: int, seed: int, stream: str,
                    level: float = LEVEL, n_jobs: int = 1) -> dict[str, float]:
    """Family-bootstrap percentile intervals of ICI, E50 and E90 (``ici_lower`` ...)."""
    p, y, w = (np.asarray(a, dtype=float) for a in (p, y, weights))
    code = pd.factorize(np.asarray(family))[0]        # as family_draws: the same multiplicities
    draws = in_chunks(_reweighted_errors, (p, y, w, code), family_seeds(replicates, seed, stream), n_jobs)
    return percentile_interval(pd.DataFrame(draws), level)


def noise_floor_draws(p, weights, replicates: int, seed: int, stream: str, n_jobs: int = 1) -> pd.DataFrame:
    """ICI, E50 and E90 of ``replicates`` outcome sets drawn from the predictions themselves
    (y* ~ Bernoulli(p)): a perfectly calibrated model at this n, risks and weights."""
    p, w = np.asarray(p, dtype=float), np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed_sequence(seed, stream))
    outcomes = np.array([rng.random(len(p)) < p for _ in range(replicates)])
    return pd.DataFrame(in_chunks(_redrawn_errors, (p, w), outcomes, n_jobs))


def reading(observed: float, floor_p95: float) -> str:
    """The plain reading of an observed ICI or E90 against the floor's 95th percentile."""
    if not (np.isfinite(observed) and np.isfinite(floor_p95)):
        return ""
    return WITHIN if observed <= floor_p95 else BEYOND


def floor_summary(observed: dict[str, float], draws: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per measure of ``FLOOR_MEASURES``: observed value, the floor's 50th and 95th
    percentiles and the reading."""
    out = {}
    for m in FLOOR_MEASURES:
        p50, p95 = (float(v) for v in draws[m].quantile([0.5, 0.95]))
        out[m] = {"observed": float(observed[m]), "floor_p50": p50, "floor_p95": p95,
                  "reading": reading(observed[m], p95)}
    return out


def binary_uncertainty(p, y, weights, family, replicates: int, seed: int, stream: str, n_jobs: int = 1
                       ) -> dict[str, Any]:
    """Everything above for one set of binary predictions: Wald intervals (robust by
    family), bootstrap intervals of ICI/E50/E90 (stream ``{stream}/interval``) and the noise
    floor (stream ``{stream}/noise_floor``). Flat ``*_lower``/``*_upper`` keys plus
    ``noise_floor`` (``floor_summary``)."""
    p, y, w = (np.asarray(a, dtype=float) for a in (p, y, weights))
    out: dict[str, Any] = wald_intervals(p, y, w, cluster=family)
    observed = smoothed_errors(p, y, w)
    out.update(observed)
    out.update(error_intervals(p, y, w, family, replicates, seed, f"{stream}/interval", n_jobs=n_jobs))
    out["noise_floor"] = floor_summary(observed, noise_floor_draws(p, w, replicates, seed, f"{stream}/noise_floor",
                                                                   n_jobs=n_jobs))
    return out


def flat_floor(floor: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``noise_floor`` as table columns: ``ici_floor_p50``, ``ici_floor_p95``, ``ici_reading``, ..."""
    return {f"{m}_{k}": v for m, d in floor.items() for k, v in d.items() if k != "observed"}


# -- the Cox model at a horizon ------------------------------------------------------------

def horizon_uncertainty(risk, rows: pd.DataFrame, horizon: float, observed_expected: float, replicates: int,
                        seed: int, stream: str, n_jobs: int = 1) -> dict[str, Any]:
    """Intervals and noise floor of the Cox model's calibration at one horizon.

    ``calibration.survival_calibration`` scores predicted risks by the horizon against
    the statuses of the rows whose status at h is known, weighted by the inverse
    probability of remaining uncensored (``outcome.binary_outcome``, ``ipcw``; ``rows``
    holds ``time_days``, ``event``, ``event_type`` and ``family``). These are the same
    statuses, weights and families: ``binary_uncertainty`` on them gives CITL and slope with
    Wald intervals (robust by family, which also makes them right for the weights), ICI,
    E50 and E90 with family-bootstrap intervals (weights held fixed, as for the logistic
    model's IPCW results) and the noise floor (y* ~ Bernoulli(risk) on the same rows and
    weights). O/E is reported as Aalen-Johansen over the mean predicted risk of all rows
    (``observed_expected``); its interval is that value times exp(+-z SE), SE of log O/E
    from the weighted Poisson-type equation on the known statuses."""
    from pipeline.outcome import binary_outcome

    risk = np.clip(np.asarray(risk, dtype=float), 1e-8, 1 - 1e-8)     # as survival_calibration
    known, _ = binary_outcome(rows.reset_index(drop=True).assign(_risk=risk), horizon, "ipcw")
    found = binary_uncertainty(known["_risk"], known["y"], known["weight"], known["family"], replicates, seed,
                               stream, n_jobs)
    scale = observed_expected / found["observed_expected"]
    found.update(observed_expected=observed_expected, observed_expected_lower=found["observed_expected_lower"] * scale,
                 observed_expected_upper=found["observed_expected_upper"] * scale)
    return found


# -- what the calibration stage writes -------------------------------------------------------

#: How each interval is made, for the metrics and the intervals table.
WALD = "Wald, variance robust by family (sandwich)"
BOOTSTRAP = "95% percentile of {replicates} family-bootstrap replicates"
INTERVAL_METHODS = {"observed_expected": WALD + "; log scale, Poisson-type estimating equation",
                    "citl": WALD, "slope": WALD, "ici": BOOTSTRAP, "e50": BOOTSTRAP, "e90": BOOTSTRAP}


def with_intervals(values: dict[str, Any], found: dict[str, Any], flat: bool = True,
                   names: dict[str, str] | None = None) -> dict[str, Any]:
    """``values`` (measure -> estimate, in order) with each measure's ``_lower`` and
    ``_upper`` from ``found`` right after it, then the noise floor: flat columns
    (``flat_floor``) or the nested ``noise_floor`` entry. ``names``: measure in ``values`` ->
    its name in ``found`` (``val_prob`` calls ICI ``eavg``)."""
    names = names or {}
    out: dict[str, Any] = {}
    for k, v in values.items():
        out[k] = v
        source = names.get(k, k)
        if f"{source}_lower" in found:
            out[f"{k}_lower"], out[f"{k}_upper"] = found[f"{source}_lower"], found[f"{source}_upper"]
    if "noise_floor" in found:
        if flat:
            out.update(flat_floor(found["noise_floor"]))
        else:
            out["noise_floor"] = {m: {k: v for k, v in d.items() if k != "observed"} for m, d in found["noise_floor"].items()}
    return out


def interval_table(validation: dict[str, Any], replicates: int, c_method: str) -> pd.DataFrame:
    """One row per measure of the validation metrics (``with_intervals(..., flat=False)``,
    ICI as ``eavg``): value, 95% interval, how it was made, and the noise floor."""
    floor = validation.get("noise_floor", {})
    rows = []
    for measure, key in (("observed_expected", "observed_expected"), ("citl", "citl"), ("slope", "slope"),
                         ("ici", "eavg"), ("e50", "e50"), ("e90", "e90"), ("c", "c")):
        method = c_method if measure == "c" else INTERVAL_METHODS[measure].format(replicates=replicates)
        f = floor.get(measure, {})
        rows.append({"measure": measure, "value": validation.get(key), "lower": validation.get(f"{key}_lower"),
                     "upper": validation.get(f"{key}_upper"), "interval": method,
                     "noise_floor_p50": f.get("floor_p50"), "noise_floor_p95": f.get("floor_p95"),
                     "reading": f.get("reading", "")})
    return pd.DataFrame(rows)


def rounded(row: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Numbers rounded for the metrics file; text (a reading) as it is."""
    return {k: round(float(v), digits) if isinstance(v, (int, float, np.floating)) else v for k, v in row.items()}
