"""Cox proportional-hazards regression with cluster-robust variance in O(n log n).

``CoxPH`` fits the partial likelihood by Newton-Raphson, with Efron (default) or Breslow
handling of tied event times, optional strata and optional counting-process entry times
(start, stop], and computes the cluster-robust ("sandwich") variance of Lin and Wei
(1989) from score residuals, as R's ``coxph(..., cluster=)`` does.

Notation, per stratum: event times t_k with d_k tied events; risk set
R_k = {j : start_j < t_k <= stop_j}; risk weights w_j = exp(x_j' beta).
Efron's approximation splits a tie into d_k pseudo-risk-sets l = 0..d_k-1 in which the
tied events keep weight (1 - l/d_k):

    S0_kl = S0_k - (l/d_k) D0_k,   S1_kl = S1_k - (l/d_k) D1_k,   xbar_kl = S1_kl / S0_kl

with S0_k, S1_k sums of w_j, w_j x_j over R_k and D0_k, D1_k the same over the tied events
(Breslow: l = 0 only, counted d_k times). Then

    log L = sum_events x_j' beta - sum_k sum_l log S0_kl
    U     = sum_events x_j - sum_k sum_l xbar_kl
    I     = sum_k sum_l [S2_kl / S0_kl - xbar_kl xbar_kl']

The first term of I is X' diag(w_j (A_j - delta_j b_k(j))) X with A_j the sum of
a_k = sum_l 1/S0_kl over the event times at which j is at risk and b_k = sum_l (l/d_k)/S0_kl,
so I costs one weighted cross-product, not a sum of n outer products per time.

Score residual of subject j (Therneau and Grambsch 2000, sec. 3.7; Efron form as in R's
``residuals.coxph(type = "score")``):

    r_j = delta_j (x_j - mean_l xbar_k(j)l)
          - w_j sum_{k: j in R_k} sum_l c_jkl (x_j - xbar_kl) / S0_kl,

c_jkl = 1 - l/d_k if j is one of the tied events at t_k, else 1. The robust variance is
V = I^-1 (sum_g u_g u_g') I^-1 with u_g the sum of r_j over cluster g (no small-sample
factor, as R). All sums over risk sets are cumulative sums over sorted times: O(n log n)
for the sort, O(n p^2) per Newton step.

Checked against R ``survival`` 3.5-3 (coxph, cluster=, strata(), Surv(start, stop, event))
and statsmodels PHReg (Breslow, groups=) in ``tests/test_cox.py``.

Input checks (``check_input``; ``CoxInputError``, a ValueError naming the column and how
many rows are bad, never their values): covariates, times and entry times finite; events
0 or 1; strata and cluster labels present; durations not negative; entry before stop.
R differs in three places, and we do not drop rows silently as it does: ``coxph`` drops
rows with an NA covariate or an event code other than 0/1 through ``na.action`` ("Invalid
status value, converted to NA"), and ``Surv(start, stop)`` turns stop <= start into NA
("Stop time must be > start time, NA created"); Inf covariates are an error there too
("data contains an infinite predictor"). A zero duration is accepted, as R accepts
``Surv(0, 1)`` (an end on the day of the origin); a negative one is refused although R
accepts it (the partial likelihood uses only the order of times), because here a time is
a duration since an origin and a negative one is a dating error.

Convergence (as R's ``coxph.fit``, survival 3.5-3; R's messages, with the covariate named;
``CoxConvergenceWarning``, also kept in ``warnings_``): Newton-Raphson with step-halving
(also when exp(x'beta) overflows) stops when the log partial likelihood changes by at most
``tol`` (relative) and no coefficient moves by 1e-8. Before that:

* if the log-likelihood has converged after a full (not halved) step while a coefficient
  is still moving, the likelihood is monotone (separation: among those at risk, a
  covariate's level predicts every event; Bryson and Johnson 1981) and the estimate is
  infinite. R's test, applied at that point:
  the next Newton step |I^-1 U|_j exceeds both eps = 1e-9 and toler.inf * |beta_j|
  (toler.inf = sqrt(eps)). The fit stops there, as R's does, and warns "Loglik converged
  before variable  j (name); coefficient may be infinite." (Iterating on would only grow
  the coefficient until the information underflows to a singular matrix.)
* if ``max_iter`` is reached: "Ran out of iterations and did not converge".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class _Stratum:
    """One stratum, its rows sorted by stop time once at fit (every pass is then contiguous)."""

    rows: np.ndarray          # indices into the full data, in stop-time order
    X: np.ndarray             # centred covariates of `rows` (sorted copy)
    stop: np.ndarray
    start: np.ndarray
    event: np.ndarray
    event_times: np.ndarray   # unique event times t_k
    d: np.ndarray             # tied events per t_k
    k_of_event: np.ndarray    # for each event row its k
    ev_rows: np.ndarray       # positions of event rows (sorted by time)
    ev_first: np.ndarray      # position in ev_rows where each t_k's events begin
    l_frac: np.ndarray        # l / d_k for each event row (Efron); 0 for Breslow
    risk_from: np.ndarray     # first position with stop >= t_k
    counting: bool
    X_ev: np.ndarray | None = None        # covariates of the event rows (contiguous copy)
    stop_k: np.ndarray | None = None      # number of event times <= stop, per row
    start_k: np.ndarray | None = None     # number of event times <= start, per row
    by_start: np.ndarray | None = None   # argsort of start (counting process only)
    enter_from: np.ndarray | None = None  # first position (in start order) with start >= t_k


def _prepare(X, stop, start, event, rows, efron) -> _Stratum:
    order = np.argsort(stop[rows], kind="stable")
    rows = rows[order]
    stop, start, event = stop[rows], start[rows], event[rows]
    ev_pos = np.flatnonzero(event)
    event_times, first, d = np.unique(stop[ev_pos], return_index=True, return_counts=True)
    k_of_event = np.repeat(np.arange(len(event_times)), d)
    within = np.arange(len(ev_pos)) - np.repeat(first, d)
    l_frac = within / np.repeat(d, d) if efron else np.zeros(len(ev_pos))
    counting = bool(np.isfinite(start).any())
    Xs = np.ascontiguousarray(X[rows])
    s = _Stratum(rows, Xs, stop, start, event, event_times, d, k_of_event, ev_pos,
                 first, l_frac, np.searchsorted(stop, event_times, side="left"), counting,
                 X_ev=np.ascontiguousarray(Xs[ev_pos]))
    s.stop_k = np.searchsorted(event_times, stop, side="right")
    if counting:
        s.start_k = np.searchsorted(event_times, start, side="right")
        s.by_start = np.argsort(start, kind="stable")
        s.enter_from = np.searchsorted(start[s.by_start], event_times, side="left")
    return s


def _suffix_sums(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """sum of values[i:] for each i in ``at`` (ascending; values in sorted order).

    Sums the row blocks between consecutive positions (one ``reduceat``), then cumulates
    over the blocks from the end: O(n p) reads, O(K p) writes, no n x p temporary.
    """
    n = len(values)
    if len(at) == 0:
        return np.zeros((0,) + values.shape[1:])
    starts = np.minimum(at, n)
    valid = starts < n
    blocks = np.zeros((len(at),) + values.shape[1:])
    if valid.any():
        first_valid = np.flatnonzero(valid)
        idx = starts[first_valid]
        # reduceat over [idx_j, idx_{j+1}); the last block runs to the end
        sums = np.add.reduceat(values, idx, axis=0)
        # equal consecutive positions give a repeated block; zero all but the last of each run
        same_as_next = np.append(idx[1:] == idx[:-1], False)
        sums[same_as_next] = 0
        blocks[first_valid] = sums
    return np.cumsum(blocks[::-1], axis=0)[::-1]


def _segment_sums(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments starting at ``first`` (values already grouped)."""
    if len(first) == 0:
        return np.zeros((0,) + values.shape[1:])
    return np.add.reduceat(values, first, axis=0)


@dataclass
class _Terms:
    """Per event time k, everything the sums over the Efron pseudo-risk-sets need.

    With f_l = l/d_k: xbar_kl = (S1_k - f_l D1_k) / S0_kl, so every sum over l is a
    combination of S1_k, D1_k and scalar sums over l: a = sum 1/S0_kl, b = sum f/S0_kl,
    c0 = sum 1/S0_kl^2, c1 = sum f/S0_kl^2, c2 = sum f^2/S0_kl^2. Nothing of size
    (events x p) is ever formed.
    """

    s0_l: np.ndarray
    S1: np.ndarray
    D1: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    c2: np.ndarray

    def xbar_sum(self, weight: np.ndarray | None = None) -> np.ndarray:
        """sum_k weight_k sum_l xbar_kl."""
        per_k = self.S1 * self.a[:, None] - self.D1 * self.b[:, None]
        return per_k.sum(0) if weight is None else (per_k * weight[:, None]).sum(0)

    def xbar_outer(self, weight: np.ndarray | None = None) -> np.ndarray:
        """sum_k weight_k sum_l xbar_kl xbar_kl'."""
        w = np.ones(len(self.a)) if weight is None else weight
        cross = (self.S1 * (w * self.c1)[:, None]).T @ self.D1
        return ((self.S1 * (w * self.c0)[:, None]).T @ self.S1 - cross - cross.T
                + (self.D1 * (w * self.c2)[:, None]).T @ self.D1)


def km_left_continuous(at: np.ndarray, stop: np.ndarray, start: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Kaplan-Meier S(t-) at each value of ``at`` (product over event times strictly before t).

    Risk set at t: start < t <= stop (start = -inf for right-censored data).
    """
    times, d = np.unique(stop[event], return_counts=True)
    at_risk = len(stop) - np.searchsorted(np.sort(stop), times, side="left")
    if np.isfinite(start).any():
        at_risk = at_risk - (len(start) - np.searchsorted(np.sort(start), times, side="left"))
    surv = np.cumprod(1 - d / at_risk)
    idx = np.searchsorted(times, at, side="left")  # number of event times strictly before `at`
    return np.concatenate([[1.0], surv])[idx]


@dataclass
class ScaledSchoenfeld:
    """``CoxPH.scaled_schoenfeld``: one entry per event, in time order within strata (as
    R's ``cox.zph``): ``row`` (position in the fitted data), ``stratum``, ``time``, ``x``
    (the transformed time g(t)), ``y`` (scaled residuals, one column per covariate) and
    ``var`` (p x p, R's ``cox.zph(fit)$var``)."""

    row: np.ndarray
    stratum: np.ndarray
    time: np.ndarray
    x: np.ndarray
    y: pd.DataFrame
    var: np.ndarray
    transform: str


class CoxConvergenceWarning(UserWarning):
    """The fit did not converge, or a coefficient may be infinite (R's coxph warnings)."""


class CoxInputError(ValueError):
    """Invalid values in the data given to ``CoxPH.fit``: ``column``, ``count`` rows, ``problem``.

    ``str()`` names the count; ``reason`` does not (for outputs where a small count must
    not be published)."""

    def __init__(self, column: str, count: int, problem: str):
        self.column, self.count, self.problem = column, int(count), problem
        super().__init__(f"{column}: {problem} in {self.count:,} row{'' if self.count == 1 else 's'}")

    @property
    def reason(self) -> str:
        return f"{self.column}: {self.problem} in some rows"


#: R's coxph.control(): eps (relative change in the log-likelihood) and toler.inf = sqrt(eps).
R_EPS = 1e-9
R_TOLER_INF = np.sqrt(R_EPS)


def check_input(X: np.ndarray, stop: np.ndarray, event, names: list[str], entry=None,
                strata=None, cluster=None) -> np.ndarray:
    """Raise ``CoxInputError`` for the first invalid column (rules in the module docstring);
    return the events as booleans."""
    n = X.shape[0]
    for label, values in (("duration", stop), ("event", event), ("entry", entry), ("strata", strata),
                          ("cluster", cluster)):
        if values is not None and len(values) != n:
            raise ValueError(f"{label} has {len(values):,} values for {n:,} rows of covariates")
    bad = ~np.isfinite(X)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        raise CoxInputError(f"covariate '{names[j]}'", bad[:, j].sum(), "a missing or infinite value (NaN or Inf)")
    if not np.isfinite(stop).all():
        raise CoxInputError("duration", (~np.isfinite(stop)).sum(), "a missing or infinite time")
    ev = pd.to_numeric(pd.Series(np.asarray(event)), errors="coerce").to_numpy(dtype=float)
    not_binary = ~np.isin(ev, (0.0, 1.0))
    if not_binary.any():
        raise CoxInputError("event", not_binary.sum(), "a value other than 0 or 1")
    if entry is None:
        if (stop < 0).any():
            raise CoxInputError("duration", (stop < 0).sum(), "a negative time")
    else:
        entry = np.asarray(entry, dtype=float)
        if not np.isfinite(entry).all():
            raise CoxInputError("entry", (~np.isfinite(entry)).sum(), "a missing or infinite time")
        if (entry >= stop).any():   # R: "Stop time must be > start time" (it makes the row NA)
            raise CoxInputError("entry", (entry >= stop).sum(), "an entry time not before the stop time")
    for label, values in (("strata", strata), ("cluster", cluster)):
        if values is not None and pd.isna(pd.Series(np.asarray(values, dtype=object))).any():
            raise CoxInputError(label, pd.isna(pd.Series(np.asarray(values, dtype=object))).sum(), "a missing label")
    return ev.astype(bool)


class CoxPH:
    """Cox model (lifelines / scikit-learn conventions: ``fit`` returns self, fitted
    attributes end in ``_``).

    Parameters
    ----------
    ties : "efron" (default, as R) or "breslow".
    tol : convergence on the relative change in log partial likelihood (R: 1e-9).
    max_iter : Newton-Raphson iterations before the fit gives up with a warning (R: 20).

    Fitted ``warnings_`` lists the ``CoxConvergenceWarning`` messages (empty when it
    converged) and ``converged_`` says whether it did.
    """

    def __init__(self, ties: str = "efron", tol: float = 1e-10, max_iter: int = 50):
        if ties not in ("efron", "breslow"):
            raise ValueError("ties must be 'efron' or 'breslow'")
        self.ties = ties
        self.tol = tol
        self.max_iter = max_iter

    # -- core sums ------------------------------------------------------------------------
    def _stratum_terms(self, s: _Stratum, w: np.ndarray) -> _Terms:
        """Risk-set sums at each event time and the Efron scalar sums (see ``_Terms``)."""
        wx = s.X * w[:, None]
        s0 = _suffix_sums(w, s.risk_from)
        S1 = _suffix_sums(wx, s.risk_from)
        if s.counting:  # remove rows entering at or after t_k: at risk needs start < t_k
            s0 = s0 - _suffix_sums(w[s.by_start], s.enter_from)
            S1 = S1 - _suffix_sums(wx[s.by_start], s.enter_from)
        w_ev = w[s.ev_rows]
        d0 = _segment_sums(w_ev, s.ev_first)
        D1 = _segment_sums(s.X_ev * w_ev[:, None], s.ev_first)
        f = s.l_frac
        s0_l = s0[s.k_of_event] - f * d0[s.k_of_event]
        inv = 1 / s0_l
        inv2 = inv * inv
        seg = lambda v: _segment_sums(v, s.ev_first)  # noqa: E731
        return _Terms(s0_l, S1, D1, seg(inv), seg(f * inv), seg(inv2), seg(f * inv2), seg(f * f * inv2))

    def _loglik_score_info(self, beta: np.ndarray, want_info: bool = True):
        p = len(beta)
        loglik, U, info = 0.0, np.zeros(p), np.zeros((p, p))
        for s in self._strata:
            eta = s.X @ beta
            w = np.exp(eta)
            t = self._stratum_terms(s, w)
            loglik += float(eta[s.ev_rows].sum() - np.log(t.s0_l).sum())
            U += s.X_ev.sum(0) - t.xbar_sum()
            if want_info:
                coef = w * self._cum_at_risk(s, t.a)
                coef[s.ev_rows] -= w[s.ev_rows] * t.b[s.k_of_event]
                info += (s.X * coef[:, None]).T @ s.X - t.xbar_outer()
        return loglik, U, info

    @staticmethod
    def _cum_at_risk(s: _Stratum, per_k: np.ndarray) -> np.ndarray:
        """For each row j: sum of per_k over event times t_k in (start_j, stop_j]."""
        csum = np.concatenate([np.zeros((1,) + per_k.shape[1:]), np.cumsum(per_k, axis=0)])
        upto_stop = csum[s.stop_k]
        if s.counting:
            upto_stop = upto_stop - csum[s.start_k]
        return upto_stop

    # -- public API -----------------------------------------------------------------------
    def fit(self, X, duration, event, *, entry=None, strata=None, cluster=None, names=None) -> "CoxPH":
        """Fit on covariates ``X`` (n x p), ``duration`` (stop time), ``event`` (0/1).

        ``entry``: start times for counting-process (start, stop] data; ``strata``: labels
        (baseline hazard per stratum); ``cluster``: labels for the robust variance.
        """
        if isinstance(X, pd.DataFrame):
            names = list(X.columns) if names is None else names
            X = X.to_numpy(dtype=float)
        X = np.asarray(X, dtype=float)
        n, p = X.shape
        self.names_ = list(names) if names is not None else [f"x{i}" for i in range(p)]
        stop = np.asarray(duration, dtype=float)
        event = check_input(X, stop, event, self.names_, entry, strata, cluster)
        start = np.full(n, -np.inf) if entry is None else np.asarray(entry, dtype=float)
        # Centre covariates (as R does) for stability; coefficients are unchanged.
        self._center = X.mean(axis=0)
        self._X = X - self._center
        if strata is None:
            labels, self.strata_levels_ = np.zeros(n, dtype=np.int64), np.array([None], dtype=object)
        else:
            labels, self.strata_levels_ = pd.factorize(np.asarray(strata))
        self._strata = [_prepare(self._X, stop, start, event, r, self.ties == "efron")
                        for r in (np.flatnonzero(labels == g) for g in range(labels.max() + 1))]

        beta = np.zeros(p)
        loglik0, U, info = self._loglik_score_info(beta)
        self.loglik_null_ = loglik0
        loglik = loglik0
        if len(self._strata) == 0 or sum(len(s.d) for s in self._strata) == 0:
            raise ValueError("no events: a Cox model cannot be fitted")
        for it in range(1, self.max_iter + 1):
            try:
                step = np.linalg.solve(info, U)
            except np.linalg.LinAlgError:
                raise ValueError("the information matrix is singular: a covariate is constant among "
                                 "those at risk, or covariates are collinear") from None
            new = beta + step
            with np.errstate(over="ignore", invalid="ignore"):  # an overflowing step is halved below
                new_loglik, new_U, new_info = self._loglik_score_info(new)
                halvings = 0
                # step-halving, also when exp(x'beta) overflowed (R's coxfit6 halves a step too)
                while not (np.isfinite(new_loglik) and new_loglik >= loglik - 1e-12 * abs(loglik)) and halvings < 30:
                    step /= 2
                    new = beta + step
                    new_loglik, new_U, new_info = self._loglik_score_info(new)
                    halvings += 1
            if not np.isfinite(new_loglik):
                raise ValueError("the log partial likelihood overflowed: a covariate takes extreme values")
            loglik_converged = abs(new_loglik - loglik) <= self.tol * abs(loglik)
            converged = loglik_converged and np.max(np.abs(step)) < 1e-8
            beta, loglik, U, info = new, new_loglik, new_U, new_info
            # R's coxfit6 judges convergence only after a full (not halved) step
            monotone = loglik_converged and halvings == 0 and not converged
            infinite = self._infinite(beta, U, info) if monotone else None
            if converged or (infinite is not None and infinite.any()):
                break
        self.n_iter_ = it
        self.converged_ = converged
        self.coef_ = beta
        self.loglik_ = loglik
        self._info = info
        self.var_ = np.linalg.inv(info)
        if converged:
            self.warnings_ = []
        elif infinite is not None and infinite.any():
            which = np.flatnonzero(infinite)
            self.warnings_ = [f"Loglik converged before variable  {','.join(str(j + 1) for j in which)} "
                              f"({', '.join(self.names_[j] for j in which)}); coefficient may be infinite."]
        else:
            self.warnings_ = [f"Ran out of iterations and did not converge (max_iter = {self.max_iter})."]
        for message in self.warnings_:
            warnings.warn(message, CoxConvergenceWarning, stacklevel=2)
        self.se_ = np.sqrt(np.diag(self.var_))
        self.n_obs_, self.n_events_ = n, int(event.sum())
        self._event = event
        self.linear_predictor_ = (X - self._center) @ beta
        self.score_residuals_ = self._score_residuals(beta)
        if cluster is not None:
            codes = pd.factorize(np.asarray(cluster))[0]
            u = np.stack([np.bincount(codes, weights=self.score_residuals_[:, c]) for c in range(p)], axis=1)
            self.robust_var_ = self.var_ @ (u.T @ u) @ self.var_
            self.n_clusters_ = int(codes.max() + 1)
        else:
            self.robust_var_ = None
            self.n_clusters_ = None
        self.robust_se_ = None if self.robust_var_ is None else np.sqrt(np.diag(self.robust_var_))
        self._stop, self._start = stop, start
        self.baseline_cumulative_hazard_ = self._baseline(beta)
        return self

    @staticmethod
    def _infinite(beta: np.ndarray, U: np.ndarray, info: np.ndarray) -> np.ndarray:
        """R's test for an infinite coefficient once the log-likelihood has converged: the
        next Newton step |I^-1 U|_j exceeds both R_EPS and R_TOLER_INF * |beta_j|."""
        try:
            next_step = np.abs(np.linalg.solve(info, U))
        except np.linalg.LinAlgError:   # the information has vanished: nothing left to estimate with
            return np.ones(len(beta), dtype=bool)
        return ~np.isfinite(next_step) | ((next_step > R_EPS) & (next_step > R_TOLER_INF * np.abs(beta)))

    def _baseline(self, beta: np.ndarray) -> pd.DataFrame:
        """Cumulative baseline hazard at the covariate means, per stratum: increments
        sum_l 1/S0_kl at each event time (Efron; Breslow d_k/S0_k), as R's survfit.coxph."""
        parts = []
        for level, s in zip(self.strata_levels_, self._strata):
            dh = self._stratum_terms(s, np.exp(s.X @ beta)).a
            parts.append(pd.DataFrame({"stratum": level, "time": s.event_times, "cumhaz": np.cumsum(dh)}))
        return pd.concat(parts, ignore_index=True)

    def predict_survival(self, X, times, stratum=None) -> np.ndarray:
        """S(t | x) = exp(-H0(t) exp((x - mean)' beta)) for rows of X at ``times`` (rows x times)."""
        X = np.asarray(X.to_numpy(dtype=float) if isinstance(X, pd.DataFrame) else X, dtype=float)
        base = self.baseline_cumulative_hazard_
        base = base[base["stratum"] == stratum] if stratum is not None else base[base["stratum"].isna()]
        if base.empty:
            raise ValueError(f"no baseline for stratum {stratum!r}")
        idx = np.searchsorted(base["time"].to_numpy(), np.asarray(times, dtype=float), side="right")
        h0 = np.concatenate([[0.0], base["cumhaz"].to_numpy()])[idx]
        risk = np.exp((X - self._center) @ self.coef_)
        return np.exp(-np.outer(risk, h0))

    def _score_residuals(self, beta: np.ndarray) -> np.ndarray:
        out = np.zeros_like(self._X)
        for s in self._strata:
            w = np.exp(s.X @ beta)
            t = self._stratum_terms(s, w)
            ev, k = s.ev_rows, s.k_of_event
            B_k = t.S1 * t.c0[:, None] - t.D1 * t.c1[:, None]        # sum_l xbar_kl / S0_kl
            C_k = t.S1 * t.c1[:, None] - t.D1 * t.c2[:, None]        # sum_l f_l xbar_kl / S0_kl
            mean_xbar = (t.S1 * t.a[:, None] - t.D1 * t.b[:, None]) / s.d[:, None]
            r = -w[:, None] * (s.X * self._cum_at_risk(s, t.a)[:, None] - self._cum_at_risk(s, B_k))
            r[ev] += s.X_ev - mean_xbar[k] + w[ev, None] * (s.X_ev * t.b[k, None] - C_k[k])
            out[s.rows] = r
        return out

    def _transformed_times(self, transform: str) -> np.ndarray:
        """g(t) of ``cox.zph`` at each row's stop time: 1 - KM(t-), t, log t or rank(t)."""
        if transform not in ("km", "identity", "log", "rank"):
            raise ValueError("transform must be km, identity, log or rank")
        if transform == "km":
            return 1 - km_left_continuous(self._stop, self._stop, self._start, self._event)
        if transform == "identity":
            return self._stop.copy()
        if transform == "log":
            return np.log(self._stop)
        return stats.rankdata(self._stop)

    def scaled_schoenfeld(self, transform: str = "km") -> "ScaledSchoenfeld":
        """Scaled Schoenfeld residuals, as R's ``cox.zph(fit, transform)$y`` (survival 3.x).

        Schoenfeld residual of event i at time t_k: r_i = x_i - mean_l xbar_kl (Efron: the
        mean over the tie's pseudo-risk-sets; Breslow: xbar_k). Scaled (Grambsch and
        Therneau 1994): r*_i = V_s^-1 r_i + beta, where V = I / D is the information per
        event: I the information at the fitted beta and D_jk = sum over strata of
        min(d_sj, d_sk), d_sj the events in stratum s if covariate j varies among the
        stratum's rows, else 0. In a stratum where covariate j is constant its residual is
        NaN and V_s keeps only the varying covariates. E[r*_i] is approximately beta(t_i), so
        a smooth of r*_i against g(t_i) shows how the log hazard ratio changes over time;
        ``var`` = V^-1 is the variance R's ``plot.cox.zph`` draws its band with.
        """
        ttimes = self._transformed_times(transform)
        p = len(self.coef_)
        rows, stratum, resid, used = [], [], [], []
        for g, s in enumerate(self._strata):
            t = self._stratum_terms(s, np.exp(s.X @ self.coef_))
            mean_xbar = (t.S1 * t.a[:, None] - t.D1 * t.b[:, None]) / s.d[:, None]
            resid.append(s.X_ev - mean_xbar[s.k_of_event])
            rows.append(s.rows[s.ev_rows])
            stratum.append(np.full(len(s.ev_rows), g))
            varies = (s.X != s.X[:1]).any(axis=0) if len(s.X) else np.zeros(p, dtype=bool)
            used.append(np.where(varies, len(s.ev_rows), 0))
        resid, rows, stratum = np.vstack(resid), np.concatenate(rows), np.concatenate(stratum)
        per_event = sum(np.minimum.outer(u, u) for u in used)
        vmean = self._info / np.where(per_event == 0, 1, per_event)
        scaled = np.full_like(resid, np.nan)
        for g, u in enumerate(used):
            k, sel = np.flatnonzero(u > 0), stratum == g
            if len(k) and sel.any():
                scaled[np.ix_(sel, k)] = np.linalg.solve(vmean[np.ix_(k, k)], resid[np.ix_(sel, k)].T).T
        return ScaledSchoenfeld(
            row=rows, stratum=self.strata_levels_[stratum], time=self._stop[rows], x=ttimes[rows],
            y=pd.DataFrame(scaled + self.coef_, columns=self.names_), var=np.linalg.inv(vmean), transform=transform)

    def zph(self, transform: str = "km") -> pd.DataFrame:
        """Test of proportional hazards, as R's ``cox.zph(fit, transform="km")`` (survival 3.x).

        Adds ``x_j * g(t)`` terms with g(t) = 1 - KM(t-) (left-continuous Kaplan-Meier over
        all rows) centred on its mean over events, and computes the score test for them at
        the fitted beta (Grambsch and Therneau 1994). Per covariate: the block of all
        covariates plus that one interaction (1 df); GLOBAL: all interactions (p df).
        With U the interaction score and I the expanded information,
        chisq = u' I^-1 u with u = (0, ..., 0, U).
        """
        p = self._X.shape[1]
        ttimes = self._transformed_times(transform)
        gtime = ttimes - ttimes[self._event].mean()
        U = np.zeros(p)
        blocks = [np.zeros((p, p)) for _ in range(3)]  # sum V, sum g V, sum g^2 V
        for s in self._strata:
            w = np.exp(s.X @ self.coef_)
            t = self._stratum_terms(s, w)
            ev = s.ev_rows
            g_ev = gtime[s.rows][ev]
            g_k = _segment_sums(g_ev, s.ev_first) / s.d  # g is constant within a tied time
            U += (g_ev[:, None] * s.X_ev).sum(0) - t.xbar_sum(g_k)
            for power, block in enumerate(blocks):
                gp = g_k ** power
                coef = w * self._cum_at_risk(s, gp * t.a)
                coef[ev] -= w[ev] * (gp * t.b)[s.k_of_event]
                block += (s.X * coef[:, None]).T @ s.X - t.xbar_outer(gp)
        i11, i12, i22 = blocks
        full = np.block([[i11, i12], [i12.T, i22]])
        rows = []
        for j in range(p):
            kk = list(range(p)) + [p + j]
            u = np.zeros(p + 1)
            u[-1] = U[j]
            chisq = float(u @ np.linalg.solve(full[np.ix_(kk, kk)], u))
            rows.append((self.names_[j], chisq, 1))
        u = np.concatenate([np.zeros(p), U])
        rows.append(("GLOBAL", float(u @ np.linalg.solve(full, u)), p))
        out = pd.DataFrame(rows, columns=["covariate", "chisq", "df"]).set_index("covariate")
        out["p"] = stats.chi2.sf(out["chisq"], out["df"])
        return out

    def summary(self, robust: bool = True, alpha: float = 0.05) -> pd.DataFrame:
        """Coefficients, hazard ratios and Wald 95% CIs (robust SE when a cluster was given)."""
        se = self.robust_se_ if (robust and self.robust_se_ is not None) else self.se_
        z = stats.norm.ppf(1 - alpha / 2)
        with np.errstate(over="ignore"):   # an infinite coefficient's interval is infinite (its fit warned)
            out = pd.DataFrame({
                "coef": self.coef_, "se": se, "model_se": self.se_,
                "hr": np.exp(self.coef_), "hr_lower": np.exp(self.coef_ - z * se),
                "hr_upper": np.exp(self.coef_ + z * se), "z": self.coef_ / se,
            }, index=pd.Index(self.names_, name="covariate"))
        out["p"] = 2 * stats.norm.sf(np.abs(out["z"]))
        return out
