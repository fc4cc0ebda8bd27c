"""Time-dependent discrimination and accuracy of predicted risks at a horizon, with
censored (and competing) ends of follow-up: the cumulative/dynamic AUC(t) and the Brier
score BS(t), both by inverse probability of censoring weighting (IPCW), with the
standard errors of R's ``riskRegression::Score`` (``cens.model = "km"``, ``se.fit = TRUE``).

Notation. Row i has follow-up time T_i, a status (the event of interest, a competing end,
or censored) and a predicted risk r_i of the event of interest by the horizon t. G is the
survival function of censoring, estimated by the reverse Kaplan-Meier curve with events
before censorings at a tied time (R's ``prodlim(..., reverse = TRUE)``): at each distinct
time u with Y(u) rows still followed (T >= u), d(u) ends that are events and c(u)
censorings,

    G(s) = prod_{u <= s} (1 - c(u) / (Y(u) - d(u))).

Each row's weight, read on the right side of G's step as Score does:

* **case** (event of interest at T_i <= t): W_i = 1 / G(T_i-), G just before T_i;
* **control** with T_i > t (event-free at t): W_i = 1 / G(t);
* **control** with a competing end at T_i <= t: W_i = 1 / G(T_i-) (competing risks: a
  competing end before the horizon is a known "no", Blanche et al. 2013 definition ii, as
  Score's ``Controls2``);
* **censored** at T_i <= t: W_i = 0 (its status at t is unknown).

AUC(t) (Uno et al. 2007; Hung and Chiang 2010; Blanche, Dartigues and Jacqmin-Gadda 2013):

    AUC(t) = sum_{i case} sum_{j control} W_i W_j {1[r_i > r_j] + 1/2 1[r_i = r_j]}
             / (sum_{i case} W_i  sum_{j control} W_j),

the area under the IPCW ROC curve with ties counted 1/2 (Score's trapezoidal area).

Brier score (Graf et al. 1999; Gerds and Schumacher 2006), over all n rows:

    BS(t) = (1/n) sum_i W_i (1[case_i] - r_i)^2,

and the **null model**'s, the same with every r_i replaced by the marginal risk (Kaplan-Meier
1 - S(t), or the Aalen-Johansen cumulative incidence with competing ends: Score's "Null
model"). **IPA** (index of prediction accuracy, Kattan and Gerds 2018; the scaled Brier)
= 1 - BS_model(t) / BS_null(t).

Standard errors (Score's ``se.fit = TRUE``): se = sd(IF) / sqrt(n), sd with divisor n - 1,
IF_k the estimated influence function of row k. It has two parts:

* IF0, with G taken as known: for the Brier score IF0_k = W_k (1[case_k] - r_k)^2 - BS; for
  the AUC, with nu = AUC mu, mu = (sum_case W)(sum_control W) / n^2,
  IF0_k = (a_k mu - b_k nu) / mu^2, a_k = W_k / n * sum_{j of the other kind} W_j H(k, j)
  (H: 1 when the case's risk is higher, 1/2 tied), b_k = W_k / n * (sum of the other kind's W);
* the censoring term: each weight 1/G(s) moves with G, IF_k(1/G(s)) = f_k(s) / G(s) with
  the Nelson-Aalen linearisation of the censoring hazard (Score's ``cens.model = "km"``
  term; Blanche et al. 2013, Stat Med, web appendix),

      f_k(s) = n 1[T_k <= s, k censored] / Y(T_k) - sum_{u <= min(T_k, s)} n c(u) / Y(u)^2,

  s = T_i- for a case or a competing end (so "<= s" is "< T_i") and s = t for a control
  event-free at t. Brier: + (1/n) sum_i W_i (1[case_i] - r_i)^2 f_k(s_i). AUC: the same
  derivative through the numerator and denominator of nu / mu.

Every sum over k is a cumulative sum over the distinct times: O(n log n).

Matches ``riskRegression::Score`` 2022.11.28 (R 4.2.2) in point estimates, standard errors
and intervals: pinned to 1e-9 in ``tests/test_time_dependent.py`` (measured differences
~1e-14, also on the default validation rows with competing ends). One difference: Score's influence
function for the AUC counts only a competing end coded as the second state (status 2) as a
control; here every competing end is one (``competing`` marks them), so with several
competing causes the estimate equals Score's with the causes merged into one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats


def _check(risk, time, event, competing, horizon) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    risk = np.asarray(risk, dtype=float)
    time = np.asarray(time, dtype=float)
    event = np.asarray(event)
    if event.dtype.kind not in "biu" and not np.all(np.isin(event, (0, 1))):
        raise ValueError("event must be 0 (no event of interest) or 1")
    event = event.astype(bool)
    competing = np.zeros(len(time), bool) if competing is None else np.asarray(competing).astype(bool)
    if not (len(risk) == len(time) == len(event) == len(competing)):
        raise ValueError("risk, time, event and competing must have the same length")
    if not (np.all(np.isfinite(risk)) and np.all(np.isfinite(time))):
        raise ValueError("risk and time must be finite (no missing values)")
    if np.any(event & competing):
        raise ValueError("a row cannot be both an event of interest and a competing end")
    if not np.isfinite(horizon):
        raise ValueError("the horizon must be finite")
    return risk, time, event, competing


class _Censoring:
    """Reverse Kaplan-Meier G and the pieces of its influence function, on the distinct times.

    ``index[i]``: position of T_i among the distinct times ``times``; ``g_before[i]`` = G(T_i-);
    ``at_risk`` Y(u) = #{T >= u}; ``cum[m + 1]`` = sum_{u <= times[m]} n c(u) / Y(u)^2
    (``cum[0]`` = 0)."""

    def __init__(self, time: np.ndarray, censored: np.ndarray):
        n = len(time)
        self.n = n
        self.times, self.index = np.unique(time, return_inverse=True)
        leaving = np.bincount(self.index, minlength=len(self.times))
        self.at_risk = (n - np.concatenate([[0], np.cumsum(leaving)[:-1]])).astype(float)
        cens = np.bincount(self.index, weights=censored, minlength=len(self.times))
        self.cens = cens
        self.dead = leaving - cens
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(cens > 0, 1 - cens / (self.at_risk - self.dead), 1.0)
        self.g = np.cumprod(step)                               # G(times[m])
        self.g_before = np.concatenate([[1.0], self.g])[self.index]   # G(T_i-)
        self.cum = np.concatenate([[0.0], np.cumsum(n * cens / self.at_risk**2)])
        self.censored = censored

    def last_at_or_before(self, horizon: float) -> int:
        """Position of the last distinct time <= horizon (-1 when none)."""
        return int(np.searchsorted(self.times, horizon, side="right") - 1)

    def g_at(self, horizon: float) -> float:
        m = self.last_at_or_before(horizon)
        return 1.0 if m < 0 else float(self.g[m])

    def influence_sum(self, point: np.ndarray, v: np.ndarray) -> np.ndarray:
        """For each row k: sum_i v_i f_k(s_i), where s_i is the distinct time at position
        ``point[i]`` (-1: before the first time, f = 0) and

            f_k(s) = n 1[T_k <= s, k censored] / Y(T_k) - sum_{u <= min(T_k, s)} n c(u) / Y(u)^2.
        """
        size = len(self.times) + 1
        slot = point + 1                                   # 0 .. len(times)
        mass = np.bincount(slot, weights=v, minlength=size)
        at_or_after = np.cumsum(mass[::-1])[::-1]           # [j] = sum of v with slot >= j
        v_ge = at_or_after[self.index + 1]                  # rows with s_i >= T_k
        below = np.cumsum(np.bincount(slot, weights=v * self.cum[slot], minlength=size))
        v_cum_lt = below[self.index]                        # sum over s_i < T_k of v_i cum(s_i)
        own = np.where(self.censored, self.n / self.at_risk[self.index], 0.0)
        return (own - self.cum[self.index + 1]) * v_ge - v_cum_lt


def _status_at(time, event, competing, horizon):
    by = time <= horizon
    case = by & event
    control_early = by & competing                       # competing end by t: a known "no"
    control_late = time > horizon
    return case, control_early, control_late


def _weights(cg: _Censoring, case, control_early, control_late, horizon) -> tuple[np.ndarray, np.ndarray]:
    """W_i and the position of the G value it divides by (for the influence function)."""
    g_t = cg.g_at(horizon)
    m_t = cg.last_at_or_before(horizon)
    before = case | control_early
    weight = np.zeros(len(case))
    weight[before] = 1 / cg.g_before[before]
    if control_late.any():                                # then G(t) > 0 (G reaches 0 only when nobody is left)
        weight[control_late] = 1 / g_t
    point = np.where(control_late, m_t, cg.index - 1)      # G(T_i-): the distinct time before T_i
    return weight, point


def _interval(estimate: float, se: float, alpha: float) -> tuple[float, float]:
    """Score's Wald interval, cut to [0, 1]."""
    z = stats.norm.ppf(1 - alpha / 2)
    return float(max(0.0, estimate - z * se)), float(min(1.0, estimate + z * se))


def ipcw_auc(risk, time, event, horizon: float, competing=None, alpha: float = 0.05,
             conservative: bool = False) -> dict[str, Any]:
    """Cumulative/dynamic AUC(t) at ``horizon`` with IPCW (module docstring), its standard
    error from the influence function and a Wald ``1 - alpha`` interval cut to [0, 1], as
    ``riskRegression::Score(..., metrics = "auc", cens.model = "km", se.fit = TRUE)``.

    ``event``: 1 for the event of interest (at ``time``), else 0; ``competing``: True where
    follow-up ended in a competing end (counts as a control when before the horizon).
    ``conservative=True`` leaves out the censoring term (Score's ``conservative = TRUE``).
    Returns ``auc``, ``se``, ``lower``, ``upper`` and the counts of ``cases``, ``controls``
    and rows ``censored_before_horizon``; NaN measures when there is no case or no control,
    or the horizon is past the last follow-up time (Score does not compute those).
    """
    risk, time, event, competing = _check(risk, time, event, competing, horizon)
    case, control_early, control_late = _status_at(time, event, competing, horizon)
    control = control_early | control_late
    counts = {"cases": int(case.sum()), "controls": int(control.sum()),
              "censored_before_horizon": int((~case & ~control).sum())}
    if not case.any() or not control.any() or horizon > time.max():
        return {"auc": np.nan, "se": np.nan, "lower": np.nan, "upper": np.nan, **counts}
    n = len(time)
    cg = _Censoring(time, ~event & ~competing)
    weight, point = _weights(cg, case, control_early, control_late, horizon)
    # Concordance of each row with the other kind, ties 1/2, from the ordered distinct risks.
    levels, position = np.unique(risk, return_inverse=True)
    case_mass = np.bincount(position, weights=weight * case, minlength=len(levels))
    control_mass = np.bincount(position, weights=weight * control, minlength=len(levels))
    controls_below = np.cumsum(control_mass) - control_mass
    cases_above = case_mass.sum() - np.cumsum(case_mass)
    concordant = np.where(case, controls_below[position] + control_mass[position] / 2,
                          np.where(control, cases_above[position] + case_mass[position] / 2, 0.0))
    w_case, w_control = float(np.sum(weight[case])), float(np.sum(weight[control]))
    pairs = float(np.sum(weight[case] * concordant[case]))
    auc = pairs / (w_case * w_control)
    mu = w_case * w_control / n**2
    nu = auc * mu
    # G known: numerator and denominator derivatives (the other kind's weight sum for b).
    a = weight * concordant / n
    b = weight / n * np.where(case, w_control, np.where(control, w_case, 0.0))
    influence = (a * mu - b * nu) / mu**2
    if not conservative:
        # Through G: d nu and d mu from every weight 1/G(s_i) (f_k(s_i) / G(s_i) each).
        num = cg.influence_sum(point, weight * concordant) / n**2
        den = (cg.influence_sum(point, weight * case) * w_control
               + cg.influence_sum(point, weight * control) * w_case) / n**2
        influence = influence + (num * mu - den * nu) / mu**2
    se = float(np.std(influence, ddof=1) / np.sqrt(n))
    lower, upper = _interval(auc, se, alpha)
    return {"auc": float(auc), "se": se, "lower": lower, "upper": upper, **counts}


def null_risk(time, event, horizon: float, competing=None) -> float:
    """Marginal risk of the event of interest by the horizon: Kaplan-Meier 1 - S(t), or the
    Aalen-Johansen cumulative incidence when there are competing ends (Score's null model)."""
    from pipeline.nonparametric import aalen_johansen, step_read

    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    competing = np.zeros(len(time), bool) if competing is None else np.asarray(competing).astype(bool)
    cif = aalen_johansen(time, np.where(event, 1, np.where(competing, 2, 0)), 1)
    return float(step_read(cif["time"], cif["cif"], horizon, 0.0)[0])


def _brier(risk, time, case, control_early, control_late, cg: _Censoring, horizon: float,
           conservative: bool) -> tuple[float, float]:
    n = len(time)
    weight, point = _weights(cg, case, control_early, control_late, horizon)
    residual = weight * (case - risk) ** 2
    brier = float(residual.sum() / n)
    influence = residual - brier
    if not conservative:
        influence = influence + cg.influence_sum(point, residual) / n
    return brier, float(np.std(influence, ddof=1) / np.sqrt(n))


def ipcw_brier(risk, time, event, horizon: float, competing=None, alpha: float = 0.05,
               conservative: bool = False) -> dict[str, Any]:
    """IPCW Brier score BS(t) at ``horizon`` of predicted risks (module docstring), with the
    null model's (the marginal risk for everyone) and IPA = 1 - BS / BS_null, as
    ``riskRegression::Score(..., metrics = "brier", summary = "ipa", cens.model = "km")``.

    Returns ``brier``, ``se``, ``lower``, ``upper`` (Wald, cut to [0, 1]), ``null_brier``,
    ``null_se``, ``null_risk`` and ``ipa``; all NaN past the last follow-up time (as Score).
    Arguments as :func:`ipcw_auc`.
    """
    risk, time, event, competing = _check(risk, time, event, competing, horizon)
    if np.any((risk < 0) | (risk > 1)):
        raise ValueError("predicted risks must lie between 0 and 1 for the Brier score")
    if horizon > time.max():
        return dict.fromkeys(("brier", "se", "lower", "upper", "null_brier", "null_se", "null_risk", "ipa"), np.nan)
    case, control_early, control_late = _status_at(time, event, competing, horizon)
    cg = _Censoring(time, ~event & ~competing)
    brier, se = _brier(risk, time, case, control_early, control_late, cg, horizon, conservative)
    marginal = null_risk(time, event, horizon, competing)
    null, null_se = _brier(np.full(len(time), marginal), time, case, control_early, control_late, cg, horizon,
                           conservative)
    lower, upper = _interval(brier, se, alpha)
    return {"brier": brier, "se": se, "lower": lower, "upper": upper, "null_brier": null, "null_se": null_se,
            "null_risk": marginal, "ipa": 1 - brier / null if null > 0 else np.nan}


def horizon_scores(risk, time, event, horizon: float, competing=None, alpha: float = 0.05) -> dict[str, float]:
    """The per-horizon columns a report shows: ``auc`` with its interval (``auc_lower``,
    ``auc_upper``), ``brier`` with its interval, ``null_brier`` and ``ipa``."""
    auc = ipcw_auc(risk, time, event, horizon, competing, alpha)
    brier = ipcw_brier(risk, time, event, horizon, competing, alpha)
    return {"auc": auc["auc"], "auc_lower": auc["lower"], "auc_upper": auc["upper"],
            "brier": brier["brier"], "brier_lower": brier["lower"], "brier_upper": brier["upper"],
            "null_brier": brier["null_brier"], "ipa": brier["ipa"]}
