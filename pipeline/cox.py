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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class _Stratum:
    """Sorted views and event-time structure of one stratum (fixed across iterations)."""

    rows: np.ndarray          # indices into the full data
    stop: np.ndarray          # stop times of rows (in `rows` order)
    start: np.ndarray
    event: np.ndarray
    event_times: np.ndarray   # unique event times t_k
    d: np.ndarray             # tied events per t_k
    k_of_event: np.ndarray    # for each event row (in `ev_rows` order) its k
    ev_rows: np.ndarray       # positions (within stratum) of event rows, sorted by time
    l_frac: np.ndarray        # l / d_k for each event row (Efron); 0 for Breslow
    by_stop: np.ndarray       # argsort of stop
    by_start: np.ndarray      # argsort of start
    stop_sorted: np.ndarray
    start_sorted: np.ndarray


def _prepare(stop, start, event, rows, efron) -> _Stratum:
    ev_pos = np.flatnonzero(event)
    ev_pos = ev_pos[np.argsort(stop[ev_pos], kind="stable")]
    event_times, first, d = np.unique(stop[ev_pos], return_index=True, return_counts=True)
    k_of_event = np.repeat(np.arange(len(event_times)), d)
    within = np.arange(len(ev_pos)) - np.repeat(first, d)
    l_frac = within / np.repeat(d, d) if efron else np.zeros(len(ev_pos))
    by_stop = np.argsort(stop, kind="stable")
    by_start = np.argsort(start, kind="stable")
    return _Stratum(rows, stop, start, event, event_times, d, k_of_event, ev_pos, l_frac,
                    by_stop, by_start, stop[by_stop], start[by_start])


def _tail_sums(values: np.ndarray, order: np.ndarray, sorted_keys: np.ndarray, at: np.ndarray,
               strict: bool) -> np.ndarray:
    """sum of values[j] over j with key_j >= at (strict=False) or key_j > at (strict=True)."""
    v = values[order]
    csum = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
    idx = np.searchsorted(sorted_keys, at, side="right" if strict else "left")
    return csum[-1] - csum[idx]


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


class CoxPH:
    """Cox model (lifelines / scikit-learn conventions: ``fit`` returns self, fitted
    attributes end in ``_``).

    Parameters
    ----------
    ties : "efron" (default, as R) or "breslow".
    tol : convergence on the relative change in log partial likelihood (R: 1e-9).
    """

    def __init__(self, ties: str = "efron", tol: float = 1e-10, max_iter: int = 50):
        if ties not in ("efron", "breslow"):
            raise ValueError("ties must be 'efron' or 'breslow'")
        self.ties = ties
        self.tol = tol
        self.max_iter = max_iter

    # -- core sums ------------------------------------------------------------------------
    def _stratum_terms(self, s: _Stratum, X: np.ndarray, w: np.ndarray):
        """S0_kl, xbar_kl for every event row, and per-k Efron sums (for I and residuals)."""
        counting = np.isfinite(s.start).any()
        wx = X * w[:, None]
        s0 = _tail_sums(w, s.by_stop, s.stop_sorted, s.event_times, strict=False)
        s1 = _tail_sums(wx, s.by_stop, s.stop_sorted, s.event_times, strict=False)
        if counting:  # remove rows that enter at or after t_k: at risk needs start < t_k
            s0 = s0 - _tail_sums(w, s.by_start, s.start_sorted, s.event_times, strict=False)
            s1 = s1 - _tail_sums(wx, s.by_start, s.start_sorted, s.event_times, strict=False)
        ev = s.ev_rows
        d0 = np.bincount(s.k_of_event, weights=w[ev], minlength=len(s.d))
        d1 = np.stack([np.bincount(s.k_of_event, weights=wx[ev, c], minlength=len(s.d))
                       for c in range(X.shape[1])], axis=1) if X.shape[1] else np.zeros((len(s.d), 0))
        k = s.k_of_event
        s0_l = s0[k] - s.l_frac * d0[k]
        s1_l = s1[k] - s.l_frac[:, None] * d1[k]
        return s0_l, s1_l / s0_l[:, None]

    def _loglik_score_info(self, beta: np.ndarray, want_info: bool = True):
        X = self._X
        eta = X @ beta
        loglik, U = 0.0, np.zeros(X.shape[1])
        info = np.zeros((X.shape[1], X.shape[1]))
        for s in self._strata:
            Xs = X[s.rows]
            w = np.exp(eta[s.rows])
            s0_l, xbar_l = self._stratum_terms(s, Xs, w)
            ev = s.ev_rows
            loglik += float(eta[s.rows][ev].sum() - np.log(s0_l).sum())
            U += Xs[ev].sum(0) - xbar_l.sum(0)
            if want_info:
                a_k = np.bincount(s.k_of_event, weights=1 / s0_l, minlength=len(s.d))
                b_k = np.bincount(s.k_of_event, weights=s.l_frac / s0_l, minlength=len(s.d))
                A = self._cum_at_risk(s, a_k)
                coef = w * A
                coef[ev] -= w[ev] * b_k[s.k_of_event]
                info += (Xs * coef[:, None]).T @ Xs - xbar_l.T @ xbar_l
        return loglik, U, info

    @staticmethod
    def _cum_at_risk(s: _Stratum, per_k: np.ndarray) -> np.ndarray:
        """For each row j: sum of per_k over event times t_k in (start_j, stop_j]."""
        csum = np.concatenate([np.zeros((1,) + per_k.shape[1:]), np.cumsum(per_k, axis=0)])
        upto_stop = csum[np.searchsorted(s.event_times, s.stop, side="right")]
        if np.isfinite(s.start).any():
            upto_stop = upto_stop - csum[np.searchsorted(s.event_times, s.start, side="right")]
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
        event = np.asarray(event).astype(bool)
        start = np.full(n, -np.inf) if entry is None else np.asarray(entry, dtype=float)
        if np.any(start >= stop):
            raise ValueError("entry must be before duration for every row")
        # Centre covariates (as R does) for stability; coefficients are unchanged.
        self._center = X.mean(axis=0)
        self._X = X - self._center
        if strata is None:
            labels, self.strata_levels_ = np.zeros(n, dtype=np.int64), np.array([None], dtype=object)
        else:
            labels, self.strata_levels_ = pd.factorize(np.asarray(strata))
        self._strata = [_prepare(stop[r], start[r], event[r], r, self.ties == "efron")
                        for r in (np.flatnonzero(labels == g) for g in range(labels.max() + 1))]

        beta = np.zeros(p)
        loglik0, U, info = self._loglik_score_info(beta)
        self.loglik_null_ = loglik0
        loglik = loglik0
        for it in range(1, self.max_iter + 1):
            step = np.linalg.solve(info, U)
            new = beta + step
            new_loglik, new_U, new_info = self._loglik_score_info(new)
            halvings = 0
            while new_loglik < loglik - 1e-12 * abs(loglik) and halvings < 30:  # step-halving
                step /= 2
                new = beta + step
                new_loglik, new_U, new_info = self._loglik_score_info(new)
                halvings += 1
            converged = abs(new_loglik - loglik) <= self.tol * abs(loglik) and np.max(np.abs(step)) < 1e-8
            beta, loglik, U, info = new, new_loglik, new_U, new_info
            if converged:
                break
        self.n_iter_ = it
        self.coef_ = beta
        self.loglik_ = loglik
        self.var_ = np.linalg.inv(info)
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

    def _baseline(self, beta: np.ndarray) -> pd.DataFrame:
        """Cumulative baseline hazard at the covariate means, per stratum: increments
        sum_l 1/S0_kl at each event time (Efron; Breslow d_k/S0_k), as R's survfit.coxph."""
        eta = self._X @ beta
        parts = []
        for level, s in zip(self.strata_levels_, self._strata):
            w = np.exp(eta[s.rows])
            s0_l, _ = self._stratum_terms(s, self._X[s.rows], w)
            dh = np.bincount(s.k_of_event, weights=1 / s0_l, minlength=len(s.d))
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
        X = self._X
        eta = X @ beta
        out = np.zeros_like(X)
        for s in self._strata:
            Xs = X[s.rows]
            w = np.exp(eta[s.rows])
            s0_l, xbar_l = self._stratum_terms(s, Xs, w)
            ev = s.ev_rows
            nk = len(s.d)
            a_k = np.bincount(s.k_of_event, weights=1 / s0_l, minlength=nk)
            B_k = np.stack([np.bincount(s.k_of_event, weights=xbar_l[:, c] / s0_l, minlength=nk)
                            for c in range(X.shape[1])], axis=1)
            b_k = np.bincount(s.k_of_event, weights=s.l_frac / s0_l, minlength=nk)
            C_k = np.stack([np.bincount(s.k_of_event, weights=s.l_frac * xbar_l[:, c] / s0_l, minlength=nk)
                            for c in range(X.shape[1])], axis=1)
            mean_xbar = np.stack([np.bincount(s.k_of_event, weights=xbar_l[:, c], minlength=nk)
                                  for c in range(X.shape[1])], axis=1) / s.d[:, None]
            A = self._cum_at_risk(s, a_k)
            B = self._cum_at_risk(s, B_k)
            r = -w[:, None] * (Xs * A[:, None] - B)
            k = s.k_of_event
            r[ev] += Xs[ev] - mean_xbar[k] + w[ev, None] * (Xs[ev] * b_k[k, None] - C_k[k])
            out[s.rows] = r
        return out

    def zph(self, transform: str = "km") -> pd.DataFrame:
        """Test of proportional hazards, as R's ``cox.zph(fit, transform="km")`` (survival 3.x).

        Adds ``x_j * g(t)`` terms with g(t) = 1 - KM(t-) (left-continuous Kaplan-Meier over
        all rows) centred on its mean over events, and computes the score test for them at
        the fitted beta (Grambsch and Therneau 1994). Per covariate: the block of all
        covariates plus that one interaction (1 df); GLOBAL: all interactions (p df).
        With U the interaction score and I the expanded information,
        chisq = u' I^-1 u with u = (0, ..., 0, U).
        """
        if transform not in ("km", "identity", "log", "rank"):
            raise ValueError("transform must be km, identity, log or rank")
        X, p = self._X, self._X.shape[1]
        if transform == "km":
            ttimes = 1 - km_left_continuous(self._stop, self._stop, self._start, self._event)
        elif transform == "identity":
            ttimes = self._stop.copy()
        elif transform == "log":
            ttimes = np.log(self._stop)
        else:
            ttimes = stats.rankdata(self._stop)
        gtime = ttimes - ttimes[self._event].mean()
        eta = X @ self.coef_
        U = np.zeros(p)
        blocks = [np.zeros((p, p)) for _ in range(3)]  # sum V, sum g V, sum g^2 V
        for s in self._strata:
            Xs = X[s.rows]
            w = np.exp(eta[s.rows])
            s0_l, xbar_l = self._stratum_terms(s, Xs, w)
            ev = s.ev_rows
            g_ev = gtime[s.rows][ev]
            U += (g_ev[:, None] * (Xs[ev] - xbar_l)).sum(0)
            nk = len(s.d)
            g_k = np.bincount(s.k_of_event, weights=g_ev, minlength=nk) / s.d
            a_k = np.bincount(s.k_of_event, weights=1 / s0_l, minlength=nk)
            b_k = np.bincount(s.k_of_event, weights=s.l_frac / s0_l, minlength=nk)
            for power, block in enumerate(blocks):
                gp = g_k ** power
                coef = w * self._cum_at_risk(s, gp * a_k)
                coef[ev] -= w[ev] * (gp * b_k)[s.k_of_event]
                ge = g_ev ** power
                block += (Xs * coef[:, None]).T @ Xs - (xbar_l * ge[:, None]).T @ xbar_l
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
        out = pd.DataFrame({
            "coef": self.coef_, "se": se, "model_se": self.se_,
            "hr": np.exp(self.coef_), "hr_lower": np.exp(self.coef_ - z * se),
            "hr_upper": np.exp(self.coef_ + z * se), "z": self.coef_ / se,
        }, index=pd.Index(self.names_, name="covariate"))
        out["p"] = 2 * stats.norm.sf(np.abs(out["z"]))
        return out
