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
   upwards at small n (point 3): they are not intervals for the true miscalibration.

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

Survival (Cox) predictions at a horizon h get the measures of CalibrationCurves
``valProbSurvival`` that have an interval: O/E = (1 - KM(h)) / mean predicted risk with
the Poisson-type interval O/E exp(+-z / sqrt(events by h)); the calibration slope, the
coefficient of cloglog(predicted risk) in a Cox model of the outcome with follow-up cut at
h (robust SE by family); and ICI/E50/E90 of ``survival_calibration`` with family-bootstrap
intervals (rows of a drawn family repeated). Their noise floor simulates event times from
each row's own predicted curve (cumulative hazard linear between the horizons' predicted
values, ``calibrated_event_times``) and censoring from the observed censoring
distribution (independent of the outcome, ``censoring_times``), then scores with
``survival_calibration``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import special, stats

from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from pipeline.bootstrap import family_draws
from pipeline.calibration import logistic_recalibration, weighted_quantile
from pipeline.config import seed_sequence
from pipeline.lowess import distinct, lowess_distinct

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
    error = np.abs(ux - lowess_distinct(ux, mass, events))
    e50, e90 = weighted_quantile(error, mass, [0.5, 0.9])
    return {"ici": float(np.sum(mass * error) / mass.sum()), "e50": float(e50), "e90": float(e90)}


def percentile_interval(draws: pd.DataFrame, level: float = LEVEL) -> dict[str, float]:
    """``{measure}_lower``/``_upper``: the (1-level)/2 and (1+level)/2 quantiles of each column."""
    q = draws.quantile([(1 - level) / 2, (1 + level) / 2])
    return {f"{m}_{side}": float(q[m].iloc[i]) for m in draws.columns for i, side in enumerate(("lower", "upper"))}


def _one_thread(function: Callable, shared: tuple, chunk: np.ndarray) -> list:
    with threadpool_limits(limits=1):
        return function(*shared, chunk)


def in_chunks(function: Callable[..., list], shared: tuple, replicates: np.ndarray, n_jobs: int = 1) -> list:
    """``function(*shared, rows)`` over chunks of ``replicates`` (one row each), results in
    order. With ``n_jobs`` > 1 the chunks run in parallel (joblib, one BLAS thread each, as
    the optimism bootstrap); the replicates are drawn before, so results do not depend on
    the number of workers."""
    if n_jobs <= 1 or len(replicates) < 2:
        return function(*shared, replicates)
    chunks = np.array_split(replicates, min(len(replicates), 2 * n_jobs))
    parts = Parallel(n_jobs=n_jobs)(delayed(_one_thread)(function, shared, c) for c in chunks)
    return [r for part in parts for r in part]


def _reweighted_errors(p: np.ndarray, y: np.ndarray, w: np.ndarray, multiplicities: np.ndarray) -> list:
    return [smoothed_errors(p, y, w * times) for times in multiplicities]


def _redrawn_errors(p: np.ndarray, w: np.ndarray, outcomes: np.ndarray) -> list:
    return [smoothed_errors(p, y.astype(float), w) for y in outcomes]


def error_intervals(p, y, weights, family, replicates: int, seed: int, stream: str,
                    level: float = LEVEL, n_jobs: int = 1) -> dict[str, float]:
    """Family-bootstrap percentile intervals of ICI, E50 and E90 (``ici_lower`` ...)."""
    p, y, w = (np.asarray(a, dtype=float) for a in (p, y, weights))
    multiplicities = np.array(list(family_draws(family, replicates, seed, stream)))
    return percentile_interval(pd.DataFrame(in_chunks(_reweighted_errors, (p, y, w), multiplicities, n_jobs)), level)


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


# -- survival predictions ------------------------------------------------------------------

def survival_observed_expected(risk, time, event, horizon: float, level: float = LEVEL) -> dict[str, float]:
    """O/E at the horizon as CalibrationCurves ``valProbSurvival``: observed (1 - Kaplan-Meier
    at h) over mean predicted risk, interval O/E exp(+-z / sqrt(d)), d events by h."""
    from pipeline.nonparametric import kaplan_meier, step_read

    risk, time, event = (np.asarray(a, dtype=float) for a in (risk, time, event))
    km = kaplan_meier(time, event)
    observed = 1 - float(step_read(km["time_days"], km["survival"], horizon, 1.0)[0])
    ratio = observed / float(risk.mean())
    d = float(np.sum(event[time <= horizon]))
    half = _z(level) / np.sqrt(d) if d > 0 else np.nan
    return {"observed_expected": ratio, "observed_expected_lower": ratio * np.exp(-half),
            "observed_expected_upper": ratio * np.exp(half)}


def survival_slope(risk, time, event, horizon: float, cluster=None, level: float = LEVEL) -> dict[str, float]:
    """Calibration slope at the horizon: the coefficient of cloglog(predicted risk) =
    log(-log(1 - risk)) in a Cox model of the outcome with follow-up cut at h (perfect: 1;
    for a proportional-hazards prediction cloglog(risk) = lp + log H0(h), so this is the
    slope of the linear predictor). Wald interval, robust by ``cluster`` when given; NaN
    when the model cannot be fitted."""
    from pipeline.cox import CoxPH

    risk, time, event = (np.asarray(a, dtype=float) for a in (risk, time, event))
    x = np.log(-np.log(1 - np.clip(risk, 1e-8, 1 - 1e-8)))
    try:
        model = CoxPH().fit(x[:, None], np.minimum(time, horizon), (event == 1) & (time <= horizon), cluster=cluster)
    except ValueError:                            # no events by h, or one distinct prediction
        return {"slope": np.nan, "slope_lower": np.nan, "slope_upper": np.nan}
    row = model.summary(robust=cluster is not None, alpha=1 - level).iloc[0]
    z = _z(level)
    return {"slope": float(row["coef"]), "slope_lower": float(row["coef"] - z * row["se"]),
            "slope_upper": float(row["coef"] + z * row["se"])}


def calibrated_event_times(risks: np.ndarray, horizons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Event times drawn from each row's predicted curve: cumulative hazard H(t) linear
    between H(h_k) = -log(1 - risk_k) at the horizons (0 at time 0), continued beyond the
    last with the last piece's slope; T = H^-1(E), E ~ Exp(1) (infinite if H stays below E).
    ``risks``: rows x horizons, non-decreasing along each row."""
    H = np.column_stack([np.zeros(len(risks)), -np.log1p(-np.clip(risks, 0, 1 - 1e-12))])
    H = np.maximum.accumulate(H, axis=1)
    t = np.concatenate([[0.0], np.asarray(horizons, dtype=float)])
    e = rng.exponential(size=len(risks))
    piece = np.minimum(np.sum(e[:, None] > H[:, 1:], axis=1), len(t) - 2)   # last piece extends beyond
    rows = np.arange(len(risks))
    lo, hi = H[rows, piece], H[rows, piece + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = t[piece] + (e - lo) / (hi - lo) * (t[piece + 1] - t[piece])
    return np.where(hi > lo, out, np.inf)


def censoring_times(time: np.ndarray, event: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A censoring time for every row, drawn independently from the reverse Kaplan-Meier
    G(t) = P(C > t) of the observed data (censoring, competing events included, as the
    event): C = the first time with G(C) <= U, U uniform; the largest observed time when G
    stays above U (follow-up ends there). Then P(C > t) = G(t): the observed amount and
    timing of censoring, independent of the outcome, as the calibration measures assume.
    (Keeping censored rows' own times and drawing only the others' made the censoring
    depend on the covariates through the competing events: Kaplan-Meier of the simulated
    data then read 24-month risk 0.002 high, 4 standard errors, on the default.)"""
    time, event = np.asarray(time, dtype=float), np.asarray(event).astype(bool)
    uniq, inverse = np.unique(time, return_inverse=True)
    leaving = np.bincount(inverse, minlength=len(uniq))
    at_risk = len(time) - np.concatenate([[0], np.cumsum(leaving)[:-1]])
    censored = np.bincount(inverse, weights=~event, minlength=len(uniq))
    G = np.cumprod(1 - censored / at_risk)                   # P(C > t) at each distinct time
    position = np.searchsorted(-G, -rng.random(len(time)), side="left")   # first G <= U (G non-increasing)
    return uniq[np.minimum(position, len(uniq) - 1)]


SurvivalScore = Callable[[np.ndarray, np.ndarray, np.ndarray, float], dict[str, float]]


def survival_errors(risk, time, event, horizon: float) -> dict[str, float]:
    """ICI, E50 and E90 of ``calibration.survival_calibration`` (the scoring being bootstrapped)."""
    from pipeline.calibration import survival_calibration

    summary, _ = survival_calibration(risk, time, event, horizon)
    return {"ici": summary["ici"], "e50": summary["e50"], "e90": summary["e90"]}


def _or_nan(score: SurvivalScore, *args) -> dict[str, float]:
    """A replicate the scoring cannot fit (no events drawn, coinciding knots) scores NaN,
    and the percentiles are of the replicates that scored (pandas skips NaN)."""
    try:
        return score(*args)
    except (ValueError, np.linalg.LinAlgError):
        return {"ici": np.nan, "e50": np.nan, "e90": np.nan}


def _resampled_survival(values: np.ndarray, time: np.ndarray, event: np.ndarray, horizons: list[float],
                        score: SurvivalScore, multiplicities: np.ndarray) -> list:
    rows = np.arange(len(time))
    out = []
    for times in multiplicities:
        take = np.repeat(rows, times)             # the Cox fit takes no weights: a drawn family's rows repeated
        out.append([_or_nan(score, values[take, j], time[take], event[take], h) for j, h in enumerate(horizons)])
    return out


def _simulated_survival(values: np.ndarray, horizons: list[float], score: SurvivalScore, simulated: np.ndarray) -> list:
    return [[_or_nan(score, values[:, j], t_obs, e_obs, h) for j, h in enumerate(horizons)] for t_obs, e_obs in simulated]


def survival_uncertainty(risks: pd.DataFrame, horizons: dict[str, float], time, event, family,
                         replicates: int, seed: int, stream: str,
                         score: SurvivalScore = survival_errors, n_jobs: int = 1) -> dict[str, dict[str, Any]]:
    """Per risk column (``horizons``: column -> horizon in days): O/E, slope, ICI/E50/E90
    with intervals and the noise floor (module docstring). One bootstrap draw of families
    serves every horizon (stream ``{stream}/interval``), one simulated data set too
    (``{stream}/noise_floor``)."""
    time, event = np.asarray(time, dtype=float), np.asarray(event).astype(int)
    family = np.asarray(family)
    columns = list(horizons)
    days = [horizons[c] for c in columns]
    values = risks[columns].to_numpy(dtype=float)
    out: dict[str, dict[str, Any]] = {}
    for j, c in enumerate(columns):
        out[c] = {**survival_observed_expected(values[:, j], time, event, days[j]),
                  **survival_slope(values[:, j], time, event, days[j], cluster=family),
                  **score(values[:, j], time, event, days[j])}
    multiplicities = np.array(list(family_draws(family, replicates, seed, f"{stream}/interval")))
    boot = in_chunks(_resampled_survival, (values, time, event, days, score), multiplicities, n_jobs)
    rng = np.random.default_rng(seed_sequence(seed, f"{stream}/noise_floor"))
    order = np.argsort(days)
    simulated = []
    for _ in range(replicates):
        t_event = calibrated_event_times(values[:, order], np.asarray(days)[order], rng)
        censor = censoring_times(time, event, rng)
        simulated.append((np.minimum(t_event, censor), (t_event <= censor).astype(float)))
    floor = in_chunks(_simulated_survival, (values, days, score), np.array(simulated), n_jobs)
    for j, c in enumerate(columns):
        out[c].update(percentile_interval(pd.DataFrame([b[j] for b in boot])))
        out[c]["noise_floor"] = floor_summary(out[c], pd.DataFrame([f[j] for f in floor]))
    return out


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
