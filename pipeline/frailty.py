"""Shared gamma frailty Cox model, as R's ``coxph(Surv(t, e) ~ x + frailty(g, distribution="gamma"))``.

Model (Therneau and Grambsch 2000, ch. 9): rows j in clusters g (families) share an
unobserved frailty u_g ~ Gamma(shape 1/theta, scale theta) (mean 1, variance theta),

    h_j(t) = u_g(j) exp(x_j' beta) h0_s(j)(t),       omega_g = log u_g,

with a baseline hazard per stratum s. The coefficients are *conditional* on the family's
frailty; a Cox model without it estimates population-averaged effects, attenuated towards
0 when theta > 0 (and a covariate that is partly a consequence of the frailty, such as
the number of earlier referrals, absorbs part of it).

**Inner fit (fixed theta): penalised partial likelihood** (Therneau, Grambsch and Pankratz
2003, "Penalized survival models and frailty", JCGS 12:156-175). With nu = 1/theta,

    PPL(beta, omega) = PL(beta, omega) - nu sum_g (exp(omega_g) - omega_g),

PL the Cox partial likelihood (Efron or Breslow ties, as ``pipeline.cox``; right-censored
data, no entry times) of the linear predictor x_j' beta + omega_g(j). PL does not change
when the omegas of a set of clusters that makes up whole strata move by one constant; the
penalty is smallest over such shifts when exp(omega) averages 1 over the set, so omega is
recentred there after each step (R recentres over all clusters at once: the same maximum,
more steps). Maximised by Newton-Raphson on (omega, beta)
with R's "sparse" information when there are more than 5 clusters: the omega-omega block
of minus the PPL Hessian is replaced by its diagonal

    D_g = sum_k sum_l m_gkl (1 - m_gkl) + nu exp(omega_g),   m_gkl = S0_kl^(g) / S0_kl,

S0_kl^(g) the part of the (Efron pseudo-)risk-set sum S0_kl from cluster g, while the
omega-beta block C and the beta-beta block A are exact. The step solves the bordered
system through the Schur complement (D diagonal: O(q p^2) for q clusters):

    (A - C' D^-1 C) d_beta = U_beta - C' D^-1 U_omega,   d_omega = D^-1 (U_omega - C d_beta).

Everything is a sum over rows, computed with the cumulative risk-set sums of
``pipeline.cox`` (no loop over rows or clusters): with E_j = w_j (sum_{k: j at risk} a_k -
delta_j b_k(j)) the expected count of row j (a_k = sum_l 1/S0_kl, b_k = sum_l (l/d_k)/S0_kl),

    U_omega_g = sum_{j in g} (delta_j - E_j) + nu (1 - exp(omega_g)),
    sum_kl m_gkl = sum_{j in g} E_j,
    C_g = sum_{j in g} [x_j E_j - w_j (sum_{k: j at risk} B_k - delta_j C_k(j))],
          B_k = sum_l xbar_kl / S0_kl,  C_k = sum_l (l/d_k) xbar_kl / S0_kl,
    sum_kl m_gkl^2 = sum over pairs j, j' of g in one stratum of w_j w_j' G0(min(t_j, t_j'))
                     + sum over g's event times k of [D0_kg^2 c2_k - 2 S0_kg D0_kg c1_k],

G0(t) = sum_{t_k <= t} c0_k, c_r,k = sum_l (l/d_k)^r / S0_kl^2 (Efron's pseudo-risk-sets,
S0_kl^(g) = S0_kg - (l/d_k) D0_kg, with S0_kg and D0_kg the sums of w over g's rows at risk
and over g's events at t_k; Breslow: c1 = c2 = 0). The pair sum is sum_j w_j G0(t_j)
(2 T_j - w_j), T_j the sum of w over j and the later rows of its cluster and stratum (one
sort by cluster and time, a grouped suffix sum). Newton-Raphson stops when half the
Newton decrement, U' H^-1 U / 2, is below 1e-13 (1 + |PPL|).
With 5 clusters or fewer the omega-omega block is exact (cluster indicators as extra
penalised columns), as R's non-sparse term. At the solution

    var(beta)  = (A - C' D^-1 C)^-1                (R's ``fit$var``, "se(coef)")
    var2(beta) = var - var C' D^-1 P D^-1 C var,   P = diag(nu exp(omega))  (R's "se2")
    df(frailty) = q - sum_g (H^-1)_gg P_gg         (R's degrees of freedom of the term)

**Outer search on theta: the approximate marginal ("I-") likelihood**, the EM method of
R's ``frailty(..., method="em")`` (Therneau and Grambsch 2000, sec. 9.6; Therneau et al.
2003): with d_g the events of cluster g,

    L_I(theta) = PL(beta^, omega^) + nu sum_g omega^_g
                 + sum_g [d_g + nu log nu - (nu + d_g) log(nu + d_g)
                          + log Gamma(nu + d_g) - log Gamma(nu)],

R's "I-likelihood" (the marginal likelihood of the EM method, Therneau et al. 2003, with the
frailties integrated out); L_I(theta) -> PL of the plain Cox model as theta -> 0. theta is searched as R does (so the
reported theta is R's): theta = 0 (the plain Cox model), theta = 1, then 2 (or 1/2 if
L_I(1) < L_I(0) + 1), then successive parabolic interpolation on sqrt(theta) through the
best point and its neighbours (a golden-section-like step when the parabola's vertex falls
outside them; doubling while the largest theta is best; a tenth of the smallest positive
sqrt(theta) when theta = 0 is best), until L_I changes by less than ``eps`` relative between
consecutive fits (R's default 1e-5) or after ``outer_max`` fits (R's ``outer.max``, 10). The
fit reported is the last one. R's relative stopping rule is loose on large data (1e-5 of a
log-likelihood of 10^5 is 1 unit): a smaller ``eps`` continues the same search to the
maximum.

**Test of theta = 0**: LR = 2 (L_I(theta^) - PL_cox(beta^_cox)). theta = 0 is on the boundary
of the parameter space, so under H0 LR follows the 50:50 mixture of chi2(0) (a point mass
at 0) and chi2(1) (Self and Liang 1987): p = 0.5 P(chi2_1 >= LR) for LR > 0, and 1 when
LR = 0.

Checked against R 4.2.2 / survival 3.5-3 on ``kidney``, ``rats`` and ``retinopathy`` (strata,
ties, Breslow, non-sparse) in ``tests/test_frailty.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse as sp
from scipy.sparse import csgraph
from scipy import stats
from threadpoolctl import threadpool_limits

from pipeline.cox import (CoxConvergenceWarning, CoxPH, _cum_table, _cumsum_within, _prepare, _RiskSets,
                          _weighted_cross, check_input)

#: R's default: clusters above this number get the sparse (diagonal) frailty information.
SPARSE_ABOVE = 5
#: Covariates whose sums by cluster are formed at a time (clusters x 4 temporaries beside the
#: clusters x p sums, not two more clusters x p arrays: 0.2 GB at a million children).
CROSS_COLUMNS = 4
#: The exact information holds a column per cluster: only for a few clusters.
DENSE_MAX = 200


def gamma_correction(events_per_cluster: np.ndarray, nu: float) -> float:
    """sum_g [d_g + nu log nu - (nu + d_g) log(nu + d_g) + log Gamma(nu + d_g) - log Gamma(nu)].

    Written as sum_g [d_g - nu log1p(d_g / nu)] + sum_g sum_{i=1..d_g} log((nu + i - 1) / (nu + d_g))
    so that it stays exact for large nu (theta near 0), where the Gamma terms cancel.
    """
    d = np.asarray(events_per_cluster, dtype=float)
    term1 = float(np.sum(d - nu * np.log1p(d / nu)))
    values, counts = np.unique(d[d > 0].astype(np.int64), return_counts=True)
    if len(values) == 0:
        return term1
    # one entry per (distinct d, i = 1..d): a few hundred at most, however many clusters
    dd = np.repeat(values, values)
    i = np.arange(len(dd)) - np.repeat(np.cumsum(values) - values, values) + 1
    per = np.log1p((i - 1 - dd) / (nu + dd))
    term2 = float(np.sum(per * np.repeat(counts, values)))
    return term1 + term2


def boundary_lr_p(statistic: float) -> float:
    """p-value of an LR statistic for a variance at its boundary 0: 50:50 chi2(0):chi2(1)."""
    return 1.0 if statistic <= 0 else float(0.5 * stats.chi2.sf(statistic, 1))


def _next_theta(thetas: list[float], logliks: list[float]) -> float | None:
    """Next theta of R's search (survival's ``frailty.controlgam``/``frailty.brent``), from the
    fits so far (in the order made, at least 3); None when two fits tie for the best."""
    x, y = np.sqrt(np.asarray(thetas)), np.asarray(logliks)
    if y[-1] == y.max() and x[-1] == x.max():   # still climbing at the largest theta: double it
        return 2 * float(np.max(thetas))
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    best = np.flatnonzero(ys == ys.max())
    if len(best) > 1:
        return None
    b = int(best[0])
    if b == 0:      # best at the smallest: step down, but not below 0
        new = xs[0] - 3 * (xs[1] - xs[0])
        if new < 0:
            new = xs[xs > 0].min() / 10
        return float(new) ** 2
    if b == len(xs) - 1:
        return float(xs[-1] + 3 * (xs[-1] - xs[-2])) ** 2
    (x1, x2, x3), (y1, y2, y3) = xs[b - 1:b + 2], ys[b - 1:b + 2]
    # vertex of the parabola through the best point and its two neighbours
    num = (x2 - x1) ** 2 * (y2 - y3) - (x2 - x3) ** 2 * (y2 - y1)
    den = (x2 - x1) * (y2 - y3) - (x2 - x3) * (y2 - y1)
    new = x2 - 0.5 * num / den
    # distrust a vertex outside the bracket, or (after 4 fits) far beyond the last point
    # relative to the step before it
    far = len(x) > 4 and (new - x[-1]) > 0.5 * abs(x[-2] - x[-3])
    if not (x1 <= new <= x3) or far:
        new = x2 - 0.38 * (x2 - x1) if (x2 - x1) > (x3 - x2) else x2 + 0.32 * (x3 - x2)
    return float(new) ** 2


@dataclass
class _ClusterIndex:
    """The rows (in their (stratum, stop-time) order) by cluster, fixed for the whole fit; a
    group is a cluster's rows in one stratum."""

    g: np.ndarray             # cluster code of each row (sorted order)
    members: sp.csr_matrix    # q x n indicator: members @ v sums v by cluster
    # Sums by cluster of products with row weights, as sparse products (no n x p temporary);
    # each holds one entry per row (of ``perm``; ``by_event``: per event row, ``event_rows``)
    # whose values are set to the weights before use:
    # q x n: by_row @ X = sum_{j in g} v_j x_j (X in sorted order); its entries are the rows of
    # ``perm`` in that order, so each cluster's sum adds the same products in the same order as
    # a cluster-ordered copy of X would (no such copy: n x p, 0.2 GB at a million rows)
    by_row: sp.csr_matrix
    by_stop: sp.csr_matrix    # q x (K + strata): by_stop @ _cum_table(per_k) = sum_{j in g} v_j (cumulated per_k)_j
    by_event: sp.csr_matrix   # q x K: by_event @ per_k = sum over g's events of v_j per_k(j)
    event_rows: np.ndarray    # sorted position of each event entry of ``by_event``
    perm: np.ndarray          # order by (cluster, stratum, stop time)
    group_bounds: np.ndarray  # positions (perm order) where each group begins, and n
    run_start: np.ndarray     # positions (perm order) starting a run of one group and one time
    run_has_event: np.ndarray # which runs hold an event
    run_g: np.ndarray         # cluster of each run holding an event
    run_first: np.ndarray     # start position of each run holding an event
    run_k: np.ndarray         # its event-time index k
    event_perm: np.ndarray    # event indicator in perm order (float)


def _cluster_index(s: _RiskSets, codes: np.ndarray, q: int) -> _ClusterIndex:
    g = codes[s.rows]
    n = len(g)
    key = g * (int(s.stratum.max()) + 1 if n else 1) + s.stratum
    perm = np.argsort(key, kind="stable")     # stable: stop-time order kept within a group
    kp, gp, tp = key[perm], g[perm], s.stop[perm]
    new_group = np.r_[True, kp[1:] != kp[:-1]]
    group_bounds = np.r_[np.flatnonzero(new_group), n]
    new_run = new_group | np.r_[True, tp[1:] != tp[:-1]]
    run_start = np.flatnonzero(new_run)
    event_perm = s.event[perm].astype(float)
    has_event = np.add.reduceat(event_perm, run_start) > 0 if n else np.zeros(0, bool)
    first = run_start[has_event]
    run_k = s.stop_idx[perm[first]] - 1    # an event time of the run's stratum: the last counted
    members = sp.csr_matrix((np.ones(n), (g, np.arange(n))), shape=(q, n))
    by_cluster = np.searchsorted(gp, np.arange(q + 1))       # perm is in cluster order
    by_row = sp.csr_matrix((np.ones(n), perm, by_cluster), shape=(q, n))
    by_stop = sp.csr_matrix((np.ones(n), s.stop_at[perm], by_cluster), shape=(q, len(s.d) + len(s.row_bounds) - 1))
    ev_entries = np.flatnonzero(s.event[perm])
    event_rows = perm[ev_entries]
    by_event = sp.csr_matrix((np.ones(len(ev_entries)), s.stop_idx[event_rows] - 1,
                              np.searchsorted(gp[ev_entries], np.arange(q + 1))), shape=(q, len(s.d)))
    return _ClusterIndex(g, members, by_row, by_stop, by_event, event_rows, perm,
                         group_bounds, run_start,
                         has_event, gp[first], first, run_k, event_perm)


class GammaFrailtyCox:
    """Cox model with a shared gamma frailty per cluster (lifelines / scikit-learn
    conventions: ``fit`` returns self, fitted attributes end in ``_``).

    Parameters
    ----------
    ties : "efron" (default, as R) or "breslow".
    theta : a fixed frailty variance (R's ``theta=``); None (default) searches for it.
    eps : relative change in the I-likelihood that ends the search (R's ``eps``, 1e-5).
    outer_max : most fits in the search (R's ``coxph.control(outer.max=10)``).
    sparse : diagonal frailty information; None (default): when there are more than 5 clusters.
    inner_tol, inner_max : Newton-Raphson stops when half the Newton decrement is below
        ``inner_tol * (1 + |PPL|)`` (tighter than R's relative change of 1e-9).

    Fitted: ``coef_``, ``se_`` (R's "se(coef)"), ``var_``, ``se2_``/``var2_`` (R's "se2"),
    ``theta_``, ``frailty_`` (log frailty per cluster, in ``clusters_`` order), ``frailty_df_``,
    ``loglik_`` (I-likelihood), ``partial_loglik_``, ``loglik_cox_`` (plain Cox model),
    ``lr_statistic_``/``lr_p_`` (test of theta = 0), ``history_`` (the search), ``n_iter_``
    (fits, Newton steps), ``converged_``.
    """

    def __init__(self, ties: str = "efron", theta: float | None = None, eps: float = 1e-5, outer_max: int = 10,
                 sparse: bool | None = None, inner_tol: float = 1e-13, inner_max: int = 100):
        if ties not in ("efron", "breslow"):
            raise ValueError("ties must be 'efron' or 'breslow'")
        if theta is not None and theta < 0:
            raise ValueError("theta must be >= 0")
        self.ties, self.theta, self.eps, self.outer_max = ties, theta, eps, outer_max
        self.sparse, self.inner_tol, self.inner_max = sparse, inner_tol, inner_max

    # -- derivatives ----------------------------------------------------------------------
    def _sparse_derivatives(self, beta, omega, nu):
        """PPL and its derivatives, the omega block diagonal (see the module docstring)."""
        q, p = len(omega), len(beta)
        pl, u_beta, info_beta = 0.0, np.zeros(p), np.zeros((p, p))
        u_omega, m_sum, m_sq, cross = np.zeros(q), np.zeros(q), np.zeros(q), np.zeros((q, p))
        for s, ci in zip(self._strata, self._index):
            eta = s.X @ beta + omega[ci.g]
            w = np.exp(eta)
            t = CoxPH._terms(s, w)
            ev, k = s.ev_rows, s.k_of_event
            pl += float(eta[ev].sum() - np.log(t.s0_l).sum())
            u_beta += s.X_ev.sum(0) - t.xbar_sum()
            expected = w * CoxPH._cum_at_risk(s, t.a)
            expected[ev] -= w[ev] * t.b[k]
            u_omega += ci.members @ (s.event - expected)
            info_beta += _weighted_cross(s.X, expected) - t.xbar_outer()
            B_k = t.S1 * t.c0[:, None] - t.D1 * t.c1[:, None]
            C_k = t.S1 * t.c1[:, None] - t.D1 * t.c2[:, None]
            # cross_g = sum_{j in g} [x_j E_j - w_j (cumulated B)_j + delta_j w_j C_k(j)]
            ci.by_row.data = expected[ci.perm]
            ci.by_stop.data = w[ci.perm]
            ci.by_event.data = w[ci.event_rows]
            cum_B = _cum_table(s, B_k)
            # a few covariates at a time (clusters x CROSS_COLUMNS temporaries, not clusters x p):
            # a sparse product's column adds the same products in the same order either way
            for lo in range(0, p, CROSS_COLUMNS):
                c = slice(lo, lo + CROSS_COLUMNS)
                term = ci.by_row @ s.X[:, c]
                term -= ci.by_stop @ cum_B[:, c]
                term += ci.by_event @ C_k[:, c]
                cross[:, c] += term
            del term, cum_B
            m_sum += ci.members @ expected
            # sum_kl m_gkl^2: pairs of rows of a cluster both at risk (see the docstring)
            wp = w[ci.perm]
            later = _cumsum_within(wp, ci.group_bounds, reverse=True)   # T_j
            g0 = CoxPH._cum_at_risk(s, t.c0)[ci.perm]
            m_sq += np.bincount(ci.g[ci.perm], weights=wp * g0 * (2 * later - wp), minlength=q)
            if self.ties == "efron" and len(ci.run_first):
                d0 = np.add.reduceat(wp * ci.event_perm, ci.run_start)
                d0 = d0[ci.run_has_event]
                s0g = later[ci.run_first]
                corr = -2 * s0g * d0 * t.c1[ci.run_k] + d0 * d0 * t.c2[ci.run_k]
                m_sq += np.bincount(ci.run_g, weights=corr, minlength=q)
        e_omega = np.exp(omega)
        ppl = pl - nu * float(np.sum(e_omega - omega))
        u_omega = u_omega + nu * (1 - e_omega)
        d_omega = m_sum - m_sq + nu * e_omega
        return ppl, pl, u_omega, u_beta, d_omega, cross, info_beta

    def _dense_derivatives(self, beta, omega, nu):
        """The same with the exact omega-omega block: cluster indicators as extra columns."""
        q = len(omega)
        theta_all = np.r_[omega, beta]
        pl, m = 0.0, len(theta_all)
        u, info = np.zeros(m), np.zeros((m, m))
        for s in self._dense_strata:
            eta = s.X @ theta_all
            w = np.exp(eta)
            t = CoxPH._terms(s, w)
            pl += float(eta[s.ev_rows].sum() - np.log(t.s0_l).sum())
            u += s.X_ev.sum(0) - t.xbar_sum()
            coef = w * CoxPH._cum_at_risk(s, t.a)
            coef[s.ev_rows] -= w[s.ev_rows] * t.b[s.k_of_event]
            info += _weighted_cross(s.X, coef) - t.xbar_outer()
        e_omega = np.exp(omega)
        ppl = pl - nu * float(np.sum(e_omega - omega))
        d_omega = info[:q, :q] + np.diag(nu * e_omega)
        return ppl, pl, u[:q] + nu * (1 - e_omega), u[q:], d_omega, info[:q, q:], info[q:, q:]

    def _recentre(self, omega: np.ndarray) -> np.ndarray:
        """Shift omega so that mean exp(omega) = 1 within each group of clusters whose rows
        make up whole strata (clusters linked through a shared stratum are one group).

        The partial likelihood does not change when the omegas of such a group move together
        (every row of those strata moves by the same amount), so this is the exact maximum of
        the PPL along those directions. R recentres over all clusters only; the maximum is the
        same (it satisfies every group's condition), but with families nested in strata the
        per-group shifts are the directions the diagonal information gets wrong, and the
        Newton iterations would crawl along them (rate D_s / (D_s + nu q_s) per step).
        """
        sums = np.bincount(self._group, weights=np.exp(omega), minlength=self._group_size.size)
        return omega - np.log(sums / self._group_size)[self._group]

    @staticmethod
    def _solve_d(d_omega, v):
        return v / (d_omega if v.ndim == 1 else d_omega[:, None]) if d_omega.ndim == 1 else np.linalg.solve(d_omega, v)

    # -- one fit at fixed theta -----------------------------------------------------------
    def _fit_at(self, theta: float, beta: np.ndarray, omega: np.ndarray):
        """Maximise the PPL at theta > 0 from (beta, omega); returns the fit's summary."""
        nu = 1 / theta
        derivs = self._sparse_derivatives if self._sparse else self._dense_derivatives
        omega = self._recentre(omega)
        cur = derivs(beta, omega, nu)
        converged, steps = False, 0
        for steps in range(1, self.inner_max + 1):
            ppl, _, u_omega, u_beta, d_omega, cross, info_beta = cur
            schur = info_beta - cross.T @ self._solve_d(d_omega, cross)
            try:
                d_beta = np.linalg.solve(schur, u_beta - cross.T @ self._solve_d(d_omega, u_omega))
            except np.linalg.LinAlgError:
                raise ValueError("the information matrix is singular: a covariate is constant among those at "
                                 "risk, or covariates are collinear") from None
            d_om = self._solve_d(d_omega, u_omega - cross @ d_beta)
            if 0.5 * (u_beta @ d_beta + u_omega @ d_om) <= self.inner_tol * (1 + abs(ppl)):
                converged = True
                break
            cur = cross = None    # only ppl is needed from here: its clusters x p sums go before the next fit's
            for _ in range(40):     # step halving: the PPL is concave, an ascent step exists
                new_beta, new_omega = beta + d_beta, omega + d_om
                new_omega = self._recentre(new_omega)
                new = None     # (the last fit's, or a rejected step's, sums: not kept beside the next)
                new = derivs(new_beta, new_omega, nu)
                if new[0] >= ppl - 1e-13 * abs(ppl):
                    break
                d_beta, d_om = d_beta / 2, d_om / 2
            beta, omega, cur = new_beta, new_omega, new
        ppl, pl, u_omega, u_beta, d_omega, cross, info_beta = cur
        solved = self._solve_d(d_omega, cross)                    # D^-1 C (clusters x p), formed once
        var = np.linalg.inv(info_beta - cross.T @ solved)
        pen = nu * np.exp(omega)
        cur = new = None
        k = solved @ var                                          # D^-1 C var: minus (H^-1)_{omega,beta}
        # (each clusters x p array freed once read: no more than two of them at a time)
        if d_omega.ndim == 1:
            cross = None
            h_omega_diag = 1 / d_omega + np.einsum("ij,ij->i", k, solved)
        else:
            d_inv = np.linalg.inv(d_omega)
            h_omega_diag = np.diag(d_inv + k @ cross.T @ d_inv)
        solved = None
        var2 = var - k.T @ (pen[:, None] * k)
        i_loglik = pl + nu * float(omega.sum()) + gamma_correction(self._events_per_cluster, nu)
        return {"theta": theta, "beta": beta, "omega": omega, "pl": pl, "i_loglik": i_loglik, "var": var,
                "var2": var2, "df": float(len(omega) - np.sum(h_omega_diag * pen)), "steps": steps,
                "converged": converged}

    # -- public API -----------------------------------------------------------------------
    def fit(self, X, duration, event, cluster, strata=None, names=None, null_fit: CoxPH | None = None
            ) -> "GammaFrailtyCox":
        """Fit on covariates ``X`` (n x p), ``duration``, ``event`` (0/1), ``cluster`` labels
        (the frailty is shared within a cluster, across strata) and optional ``strata``.
        ``null_fit``: the plain Cox model (theta = 0) already fitted to these very rows,
        covariates, times, events and strata (any cluster: the variance it robustifies is
        not used), taken instead of fitting it again.

        Runs with one BLAS thread: its products are thin (rows x ~20 columns), and threads
        cost far more than they give there (measured: 12 times slower with 2 threads on a
        shared 2-core machine)."""
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(X, duration, event, cluster, strata, names, null_fit)

    def _setup(self, X, duration, event, cluster, strata, names):
        """Check the input and build what every fit reuses (sorted strata, cluster index)."""
        if isinstance(X, pd.DataFrame):
            names = list(X.columns) if names is None else names
            X = X.to_numpy(dtype=float)
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] == 0:
            raise ValueError("X must have at least one covariate column")
        n, p = X.shape
        self.names_ = list(names) if names is not None else [f"x{i}" for i in range(p)]
        stop = np.asarray(duration, dtype=float)
        # the Cox model's rules and messages (pipeline.cox.check_input): CoxInputError, a ValueError
        event = check_input(X, stop, event, self.names_, strata=strata, cluster=cluster)
        codes, self.clusters_ = pd.factorize(np.asarray(cluster), sort=True)
        q = len(self.clusters_)
        self._events_per_cluster = np.bincount(codes, weights=event, minlength=q)
        labels = np.zeros(n, dtype=np.int64) if strata is None else pd.factorize(np.asarray(strata))[0]
        start = np.full(n, -np.inf)
        efron = self.ties == "efron"
        center = X.mean(axis=0)          # centred, as R and CoxPH (coefficients unchanged)
        # groups of clusters closed under shared strata: connected components of the
        # cluster-stratum graph
        link = sp.coo_matrix((np.ones(n), (codes, labels)), shape=(q, labels.max() + 1)).tocsr()
        graph = sp.bmat([[None, link], [link.T, None]])
        self._group = csgraph.connected_components(graph, directed=False)[1][:q]
        self._group_size = np.bincount(self._group).astype(float)
        self._sparse = (q > SPARSE_ABOVE) if self.sparse is None else bool(self.sparse)
        if self._sparse:
            # every stratum at once; centred in the sorted copy (no centred copy of X besides it)
            self._strata = [_prepare(X, stop, start, event, labels, efron, center=center)]
            self._index = [_cluster_index(s, codes, q) for s in self._strata]
        else:
            if q > DENSE_MAX:
                raise ValueError(f"exact (non-sparse) frailty information is for at most {DENSE_MAX} clusters")
            Xa = np.hstack([np.eye(q)[codes], X - center])
            self._dense_strata = [_prepare(Xa, stop, start, event, labels, efron)]
        return X, stop, event, strata, q

    def _fit(self, X, duration, event, cluster, strata, names, null_fit=None) -> "GammaFrailtyCox":
        X, stop, event, strata, q = self._setup(X, duration, event, cluster, strata, names)
        n = len(stop)

        # theta = 0: the plain Cox model (the search's first point and the test's null)
        cox = null_fit if null_fit is not None else CoxPH(ties=self.ties).fit(X, stop, event, strata=strata)
        self.loglik_cox_ = cox.loglik_
        fits = [{"theta": 0.0, "beta": cox.coef_, "omega": np.zeros(q), "pl": cox.loglik_,
                 "i_loglik": cox.loglik_, "var": cox.var_, "var2": cox.var_, "df": 0.0, "steps": cox.n_iter_,
                 "converged": cox.converged_}]   # (CoxPH warns for itself when it does not converge)
        done = False
        if self.theta is not None:
            fits = [fits[0]] if self.theta == 0 else [self._fit_at(self.theta, cox.coef_, np.zeros(q))]
            done = True
        while not done and len(fits) < self.outer_max:
            thetas = [f["theta"] for f in fits]
            ll = [f["i_loglik"] for f in fits]
            if len(fits) == 1:
                theta = 1.0
            elif len(fits) == 2:
                theta = thetas[1] / 2 if ll[1] < ll[0] + 1 else 2 * thetas[1]
            else:
                theta = _next_theta(thetas, ll)
                if theta is None:
                    warnings.warn("Two fits tie for the largest I-likelihood: the search for the frailty variance "
                                  "stopped there.", CoxConvergenceWarning, stacklevel=3)
                    break
            near = fits[int(np.argmin(np.abs(np.asarray(thetas) - theta)))]   # warm start
            fits.append(self._fit_at(theta, near["beta"], near["omega"]))
            if len(fits) >= 3:
                done = abs(1 - fits[-1]["i_loglik"] / fits[-2]["i_loglik"]) < self.eps
        last = fits[-1]
        self.history_ = pd.DataFrame({"theta": [f["theta"] for f in fits],
                                      "partial_loglik": [f["pl"] for f in fits],
                                      "i_loglik": [f["i_loglik"] for f in fits]})
        self.theta_ = last["theta"]
        self.coef_, self.frailty_ = last["beta"], last["omega"]
        self.var_, self.var2_ = last["var"], last["var2"]
        self.se_, self.se2_ = np.sqrt(np.diag(self.var_)), np.sqrt(np.diag(self.var2_))
        self.frailty_df_ = last["df"]
        self.loglik_, self.partial_loglik_ = last["i_loglik"], last["pl"]
        self.lr_statistic_ = max(0.0, 2 * (self.loglik_ - self.loglik_cox_))
        self.lr_p_ = boundary_lr_p(self.lr_statistic_)
        self.n_iter_ = (len(fits), int(sum(f["steps"] for f in fits)))
        self.converged_ = bool(done and all(f["converged"] for f in fits))
        unconverged = [f"{f['theta']:.4g}" for f in fits if not f["converged"] and f["theta"] > 0]
        if unconverged:    # R: "Inner loop failed to coverge for iterations ..."
            warnings.warn(f"The penalised fit did not converge in {self.inner_max} Newton-Raphson steps at frailty "
                          f"variance {', '.join(unconverged)}.", CoxConvergenceWarning, stacklevel=3)
        if self.theta is None and not done and len(fits) >= self.outer_max:
            warnings.warn(f"The search for the frailty variance stopped after {self.outer_max} fits (outer_max) "
                          f"before the I-likelihood settled.", CoxConvergenceWarning, stacklevel=3)
        self.n_obs_, self.n_events_, self.n_clusters_ = n, int(event.sum()), q
        for attr in ("_strata", "_index", "_dense_strata"):    # the sorted copies are not needed after fit
            self.__dict__.pop(attr, None)
        return self

    def summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """Hazard ratios with Wald intervals from ``se_`` (R's se(coef)), z and p."""
        z = stats.norm.ppf(1 - alpha / 2)
        out = pd.DataFrame({
            "coef": self.coef_, "hazard_ratio": np.exp(self.coef_), "se": self.se_,
            "lower": np.exp(self.coef_ - z * self.se_), "upper": np.exp(self.coef_ + z * self.se_),
            "z": self.coef_ / self.se_,
        }, index=pd.Index(self.names_, name="covariate"))
        out["p"] = 2 * stats.norm.sf(np.abs(out["z"]))
        return out.reset_index()


# -- for the survival stage ----------------------------------------------------------------
#: Columns of ``frailty_hazard_ratios.csv`` (plus ``true_hr``, ``true_in_ci`` on synthetic data).
TABLE_COLUMNS = ["covariate", "coef", "hazard_ratio", "se", "lower", "upper", "z", "p"]
TEST_RULE = ("likelihood ratio of the integrated (I-) likelihood at the fitted variance against the partial "
             "likelihood of the Cox model without frailty; variance 0 is on the boundary, so p is from the "
             "50:50 mixture of chi2(0) and chi2(1) (Self and Liang 1987)")


def frailty_problem(cluster: pd.Series | None) -> str | None:
    """Why no shared frailty can be fitted to these clusters, or None."""
    if cluster is None:
        return "no cluster column (survival.cluster is null): there is nothing for a frailty to be shared by"
    if len(cluster) and cluster.value_counts().max() < 2:
        return "every cluster has one row: a shared frailty needs clusters of two or more rows"
    return None


def frailty_sentence(variance: float, p: float, alpha: float = 0.05) -> str:
    """The plain-words reading of the test of theta = 0."""
    p_words = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
    if p < alpha:
        return (f"Families differ in their risk beyond the covariates (frailty variance {variance:.2g}, {p_words}): "
                "hazard ratios from the model without frailty are population-averaged and attenuated; the frailty "
                "model's are conditional on the family.")
    return (f"No evidence that families differ in their risk beyond the covariates (frailty variance {variance:.2g}, "
            f"{p_words}): the models with and without frailty estimate the same hazard ratios.")


def fit_shared_frailty(X: pd.DataFrame, duration, event, cluster: pd.Series, strata=None, ties: str = "efron",
                       true_log_hr: pd.Series | None = None, alpha: float = 0.05, min_count: int = 10,
                       null_fit: CoxPH | None = None) -> tuple[pd.DataFrame, dict]:
    """The survival stage's frailty model: the hazard-ratio table (with the true hazard ratio
    beside each estimate when ``true_log_hr`` is given) and its metrics (the number of clusters
    withheld below ``min_count``). Raises ValueError with a one-line reason when the fit fails."""
    model = GammaFrailtyCox(ties=ties).fit(X, duration, event, cluster, strata=strata, null_fit=null_fit)
    table = model.summary(alpha)
    result = {
        "distribution": "gamma", "variance": round(float(model.theta_), 6),
        "lr_statistic": round(float(model.lr_statistic_), 4), "p": float(model.lr_p_), "test": TEST_RULE,
        "clusters": int(model.n_clusters_) if model.n_clusters_ >= min_count else None,
        "i_loglik": float(model.loglik_), "cox_partial_loglik": float(model.loglik_cox_),
        "iterations": model.n_iter_[0], "converged": model.converged_,
        "df": round(float(model.frailty_df_), 4),   # the frailty term's degrees of freedom (R's); outputs' residual df
        "sentence": frailty_sentence(model.theta_, model.lr_p_, alpha),
        "method": "penalised partial likelihood, variance by R's I-likelihood search; equals R's "
                  "coxph(Surv(time, event) ~ x + strata(s) + frailty(cluster, distribution = 'gamma'))",
    }
    if true_log_hr is not None:
        t = true_log_hr.reindex(table["covariate"]).to_numpy()
        table["true_hr"] = np.exp(t)
        inside = (np.log(table["lower"]) <= t) & (t <= np.log(table["upper"]))
        table["true_in_ci"] = np.where(np.isnan(t), np.nan, inside)
        known = ~np.isnan(t)
        result["truth_recovery"] = {"covariates_with_truth": int(known.sum()),
                                    "true_value_in_95ci": int(inside[known].sum())}
    return table, result
