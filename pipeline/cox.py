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

How (``_RiskSets``): the rows are sorted once by (stratum, stop time), so that every
stratum is one contiguous block and its event times one run of k, and every sum is
taken over all strata at once: the sums over the row blocks between consecutive risk-set
starts are one sparse product (block indicators carrying w_j, times X); the suffix sums
over blocks and the cumulative sums over event times restart at each stratum's boundary
(segments laid side by side in a zero-padded array: the same additions as one cumsum per
stratum, so no stratum's sums are rounded by another's); X' diag(c) X is formed in blocks
of rows that stay in cache, as Z'Z with Z = diag(sqrt(c)) X when c >= 0. The score is
summed over event times as sum_k (sum of x over the events at t_k - sum_l xbar_kl), whose
terms are small, rather than as the difference of two sums over every event (which loses
digits to cancellation at a million rows). The fit runs with one BLAS thread.

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
from scipy import sparse as sp
from scipy import stats
from threadpoolctl import ThreadpoolController


_blas: ThreadpoolController | None = None


def _one_blas_thread():
    """One BLAS thread for the fit: its matrix products are thin (rows x ~20 columns) and
    memory-bound, where a second thread gains little on a quiet machine and costs much on
    a busy one (measured at 1M rows x 15 on 2 shared cores: 2.7 s with one thread, 5-8 s
    with two). The loaded libraries are looked up once (that takes ~40 ms)."""
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


@dataclass
class _RiskSets:
    """Every stratum at once: rows sorted by (stratum, stop time) once at fit, so each
    stratum is a contiguous block and every pass over risk sets is a few array operations
    over all strata together (no loop over strata).

    Event times are numbered k = 0..K-1 across strata: stratum g holds k_bounds[g] to
    k_bounds[g+1] - 1, in time order. Sums over a risk set run to the end of its stratum
    (``risk_to``); cumulative sums over k restart at each stratum (``_cumsum_within``).
    """

    rows: np.ndarray          # row of the input at each sorted position
    X: np.ndarray             # centred covariates in sorted order (n x p)
    stop: np.ndarray
    start: np.ndarray
    event: np.ndarray
    stratum: np.ndarray       # stratum code of each position
    row_bounds: np.ndarray    # stratum g holds positions row_bounds[g]:row_bounds[g+1]
    event_times: np.ndarray   # t_k
    k_stratum: np.ndarray     # stratum of each t_k
    k_bounds: np.ndarray      # stratum g's event times are k_bounds[g]:k_bounds[g+1]
    d: np.ndarray             # tied events per t_k
    k_of_event: np.ndarray    # for each event row its k
    ev_rows: np.ndarray       # positions of event rows (sorted by stratum, time)
    ev_first: np.ndarray      # position in ev_rows where each t_k's events begin
    l_frac: np.ndarray        # l / d_k for each event row (Efron); 0 for Breslow
    risk_from: np.ndarray     # first position of t_k's stratum with stop >= t_k
    risk_to: np.ndarray       # end of t_k's stratum (one past its last position)
    stop_idx: np.ndarray      # per position: event times (k order) up to (its stratum, its stop)
    stop_at: np.ndarray       # per position: index of that count in ``_cum_at_risk``'s padded cumsum
    counting: bool
    X_ev: np.ndarray          # covariates of the event rows (contiguous copy)
    X_ev_by_k: np.ndarray     # their sums per event time (K x p)
    at_risk: _SuffixPlan      # for the sums over R_k (from risk_from to the stratum's end)
    by_k: sp.csr_matrix       # K x events: each t_k's tied events (values set to w on each call)
    start_at: np.ndarray | None = None    # as stop_at, for the event times <= start
    by_start: np.ndarray | None = None    # positions ordered by (stratum, start) (counting process)
    enter_from: np.ndarray | None = None  # first position (in by_start order) of t_k's stratum with start >= t_k
    entering: _SuffixPlan | None = None   # for the sums over rows entering at or after t_k


def _stable_order(values: np.ndarray) -> np.ndarray:
    """Stable argsort; whole numbers spanning fewer than 2^16 (days, stratum codes) are
    cast to 16 bits, which numpy sorts by radix sort (several times faster)."""
    if len(values) and np.isfinite(values).all():
        low = values.min()
        if values.max() - low < 65536 and (values == np.floor(values)).all():
            return np.argsort((values - low).astype(np.uint16), kind="stable")
    return np.argsort(values, kind="stable")


def _sorted_copy(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.take(X, rows, axis=0)`` (C order), filled a column at a time: for a column-major X
    (a DataFrame's) ``np.take`` first makes a row-major copy of all of X (n x p beside the
    result, 0.2 GB at a million rows by 20 covariates)."""
    out = np.empty((len(rows), X.shape[1]))
    for j in range(X.shape[1]):
        out[:, j] = X[:, j][rows]
    return out


def _prepare(X, stop, start, event, labels, efron, center=None, rows=None) -> _RiskSets:
    """Sort once by (stratum, stop) (ties in the input's row order, as a per-stratum stable
    sort) and index every event time. ``labels``: stratum codes 0..S-1 (each present);
    ``center``: subtracted from the sorted copy of X (None: X is already centred); ``rows``:
    the rows of X the other arguments describe, in their order (None: all of X)."""
    n = len(stop)
    labels = np.asarray(labels, dtype=np.int64)
    n_strata = int(labels.max()) + 1 if n else 1
    order = _stable_order(stop)
    if n_strata > 1:
        order = order[_stable_order(labels[order].astype(float))]
    stop, start, event, stratum = stop[order], start[order], event[order], labels[order]
    row_bounds = np.searchsorted(stratum, np.arange(n_strata + 1))
    Xs = _sorted_copy(X, order if rows is None else rows[order])
    if center is not None:
        Xs -= center
    ev_pos = np.flatnonzero(event)
    ev_stratum, ev_time = stratum[ev_pos], stop[ev_pos]
    new_k = np.r_[True, (ev_stratum[1:] != ev_stratum[:-1]) | (ev_time[1:] != ev_time[:-1])] if len(ev_pos) \
        else np.zeros(0, dtype=bool)
    first = np.flatnonzero(new_k)
    d = np.diff(np.r_[first, len(ev_pos)])
    event_times, k_stratum = ev_time[first], ev_stratum[first]
    k_bounds = np.searchsorted(k_stratum, np.arange(n_strata + 1))
    k_of_event = np.repeat(np.arange(len(first)), d)
    within = np.arange(len(ev_pos)) - np.repeat(first, d)
    l_frac = within / np.repeat(d, d) if efron else np.zeros(len(ev_pos))
    # first position of each run of equal (stratum, stop): t_k's risk set starts at its run
    new_run = np.r_[True, (stratum[1:] != stratum[:-1]) | (stop[1:] != stop[:-1])] if n else np.zeros(0, bool)
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    risk_from = run_start[ev_pos[first]]
    stop_idx = np.searchsorted(risk_from, run_start, side="right")
    counting = bool(np.isfinite(start).any())
    X_ev = np.ascontiguousarray(Xs[ev_pos])
    risk_to = row_bounds[k_stratum + 1]
    r = _RiskSets(order, Xs, stop, start, event, stratum, row_bounds, event_times, k_stratum, k_bounds, d,
                  k_of_event, ev_pos, first, l_frac, risk_from, risk_to, stop_idx, stop_idx + stratum, counting,
                  X_ev, _segment_sums(X_ev, first), _suffix_plan(risk_from, risk_to, k_bounds, n),
                  sp.csr_matrix((np.ones(len(ev_pos)), np.arange(len(ev_pos)), np.r_[first, len(ev_pos)]),
                                shape=(len(first), len(ev_pos))))
    if counting:
        by_start = _stable_order(start)
        if n_strata > 1:
            by_start = by_start[_stable_order(stratum[by_start].astype(float))]
        r.by_start = by_start
        r.enter_from = _search_within(start[by_start], row_bounds, event_times, k_stratum, "left")
        r.entering = _suffix_plan(r.enter_from, risk_to, k_bounds, n, order=by_start)
        r.start_at = _search_within(event_times, k_bounds, start, stratum, "right") + stratum
    return r


def _search_within(sorted_values, bounds, query, query_segment, side) -> np.ndarray:
    """``np.searchsorted`` of each query in its own segment of ``sorted_values`` (segment g
    is bounds[g]:bounds[g+1], sorted within), as a global position: one search on
    (segment, rank of value) keys."""
    values = np.concatenate([sorted_values, query])
    rank = np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)
    width = int(rank.max()) + 1 if len(rank) else 1
    segment = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    key = segment * width + rank[:len(sorted_values)]
    return np.searchsorted(key, query_segment * width + rank[len(sorted_values):], side=side)


def _cumsum_within(values: np.ndarray, bounds: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Cumulative sums along axis 0 restarting at each segment bounds[g]:bounds[g+1]
    (from the segment's end when ``reverse``).

    In the same order of additions as ``np.cumsum`` of each segment alone (the segments
    laid side by side in a zero-padded array, one ``cumsum`` along it), so nothing from
    one segment can round another's sums; when the padding would be large (very unequal
    segments) a segmented doubling scan instead (log2 of the longest segment passes, each
    partial sum within its segment)."""
    lengths = np.diff(bounds)
    n_seg, total = len(lengths), len(values)
    if n_seg <= 1:
        return np.cumsum(values[::-1], axis=0)[::-1] if reverse else np.cumsum(values, axis=0)
    longest = int(lengths.max()) if total else 0
    seg = np.repeat(np.arange(n_seg), lengths)
    pos = np.arange(total) - bounds[seg]
    if reverse:
        pos = lengths[seg] - 1 - pos
    if n_seg * longest <= 2 * total + 4096:
        padded = np.zeros((n_seg, longest) + values.shape[1:])
        padded[seg, pos] = values
        return np.cumsum(padded, axis=1)[seg, pos]
    order = np.argsort(seg * longest + pos, kind="stable") if reverse else np.arange(total)
    out = values[order].astype(float)
    seg_o = seg[order]
    shift = 1
    while shift < longest:
        same = seg_o[shift:] == seg_o[:-shift]
        add = out[:-shift] * (same if out.ndim == 1 else same[:, None])
        out[shift:] = out[shift:] + add
        shift *= 2
    result = np.empty_like(out)
    result[order] = out
    return result


@dataclass
class _SuffixPlan:
    """Where the sums of ``_suffix_sums`` come from, fixed for the fit: the row blocks between
    consecutive positions at_k (cut at each stratum's end), which k owns each block, and a
    sparse matrix whose row b picks block b's rows (its values set to w on each call)."""

    blocks: sp.csr_matrix     # n_blocks x n: block b's rows (in ``rows`` order) in its row b
    rows: np.ndarray          # the row (sorted position) of each stored entry, in block order
    own: np.ndarray           # the k that own a block (the others' blocks are empty)
    block: np.ndarray         # for each of those, its block
    k_bounds: np.ndarray
    n_k: int


def _suffix_plan(at: np.ndarray, to: np.ndarray, k_bounds: np.ndarray, n: int,
                 order: np.ndarray | None = None) -> _SuffixPlan:
    """``at``: positions in ``order`` (None: the sorted positions themselves), ascending within
    each stratum's event times; ``to``: the end of each k's stratum. k's block runs from
    at_k to the next position or its stratum's end; equal consecutive positions give the
    block to the last of them (the others are empty)."""
    nonempty = at < to
    bounds = np.unique(np.concatenate([at[nonempty], to]))
    bounds = bounds[bounds < n]
    first = int(bounds[0]) if len(bounds) else n
    rows = np.arange(first, n) if order is None else np.ascontiguousarray(order[first:])
    blocks = sp.csr_matrix((np.ones(n - first), rows, np.r_[bounds, n] - first), shape=(len(bounds), n))
    last_of_run = np.r_[at[1:] != at[:-1], True] if len(at) else np.zeros(0, dtype=bool)
    last_of_run[k_bounds[1:-1] - 1] = True
    own = np.flatnonzero(nonempty & last_of_run)
    return _SuffixPlan(blocks, rows, own, np.searchsorted(bounds, at[own]), k_bounds, len(at))


def _suffix_sums(w: np.ndarray, X: np.ndarray, plan: _SuffixPlan) -> tuple[np.ndarray, np.ndarray]:
    """sum of w_j and of w_j x_j over the rows of each k's suffix (``plan``; X, w in sorted order).

    The block sums are one sparse product (block indicators carrying w, times X: O(n p),
    no n x p temporary), then cumulated over the blocks from each stratum's end.
    """
    m = plan.blocks
    m.data = w[plan.rows]
    s0 = np.zeros(plan.n_k)
    S1 = np.zeros((plan.n_k, X.shape[1]))
    if len(plan.own):
        s0[plan.own] = np.add.reduceat(m.data, m.indptr[:-1])[plan.block]
        S1[plan.own] = (m @ X)[plan.block]
    return _cumsum_within(s0, plan.k_bounds, reverse=True), _cumsum_within(S1, plan.k_bounds, reverse=True)


def _segment_sums(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments starting at ``first`` (values already grouped)."""
    if len(first) == 0:
        return np.zeros((0,) + values.shape[1:])
    return np.add.reduceat(values, first, axis=0)


#: Rows per block of the blocked products: a block of X and its weighted copy stay in cache.
CHUNK_ROWS = 8192
#: Covariates whose score residuals are formed at a time for the robust variance (an n x 8
#: array, not n x p, beside the clusters x p sums).
RESIDUAL_COLUMNS = 8


def _weighted_cross(X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """X' diag(coef) X in blocks of ``CHUNK_ROWS`` rows (each block of X read from memory once,
    its weighted copy kept in cache); as Z'Z with Z = diag(sqrt(coef)) X (a symmetric rank-k
    update: half the multiplications) when no coef is negative."""
    n, p = X.shape
    out = np.zeros((p, p))
    scratch = np.empty((min(CHUNK_ROWS, n), p))
    symmetric = bool(n == 0 or coef.min() >= 0)
    scale = np.sqrt(coef) if symmetric else coef
    for lo in range(0, n, CHUNK_ROWS):
        block = X[lo:lo + CHUNK_ROWS]
        z = np.multiply(block, scale[lo:lo + CHUNK_ROWS, None], out=scratch[:len(block)])
        out += z.T @ z if symmetric else z.T @ block
    return out


def _cum_table(r: "_RiskSets", per_k: np.ndarray) -> np.ndarray:
    """Cumulative sums of per_k over each stratum's event times, with a 0 before each
    stratum's first (where ``stop_at``/``start_at`` point when no event time has passed)."""
    return np.insert(_cumsum_within(per_k, r.k_bounds), r.k_bounds[:-1], 0.0, axis=0)


def _cum_at_risk(r: "_RiskSets", table: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """For the rows ``rows`` (sorted order): the sum of per_k over the row's stratum's event
    times in (start_j, stop_j], read from ``_cum_table(r, per_k)``."""
    upto_stop = table[r.stop_at[rows]]
    if r.counting:
        upto_stop = upto_stop - table[r.start_at[rows]]
    return upto_stop


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
                strata=None, cluster=None, rows: np.ndarray | None = None) -> np.ndarray:
    """Raise ``CoxInputError`` for the first invalid column (rules in the module docstring);
    return the events as booleans. ``rows``: the rows of X the other arguments describe (None: all)."""
    n = X.shape[0] if rows is None else len(rows)
    for label, values in (("duration", stop), ("event", event), ("entry", entry), ("strata", strata),
                          ("cluster", cluster)):
        if values is not None and len(values) != n:
            raise ValueError(f"{label} has {len(values):,} values for {n:,} rows of covariates")
    # a column at a time (no n x p temporary; with ``rows``, no copy of those rows)
    for j in range(X.shape[1]):
        bad = ~np.isfinite(X[:, j] if rows is None else X[:, j][rows])
        if bad.any():
            raise CoxInputError(f"covariate '{names[j]}'", bad.sum(), "a missing or infinite value (NaN or Inf)")
    if not np.isfinite(stop).all():
        raise CoxInputError("duration", (~np.isfinite(stop)).sum(), "a missing or infinite time")
    ev = np.asarray(event)
    ev = (ev.astype(float) if ev.dtype.kind in "biuf"
          else pd.to_numeric(pd.Series(ev), errors="coerce").to_numpy(dtype=float))
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
        if values is not None:
            values = np.asarray(values)
            missing = pd.isna(values) if values.dtype.kind in "fcOmM" else None   # (other kinds cannot be missing)
            if missing is not None and missing.any():
                raise CoxInputError(label, missing.sum(), "a missing label")
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
    @staticmethod
    def _terms(r: _RiskSets, w: np.ndarray) -> _Terms:
        """Risk-set sums at each event time and the Efron scalar sums (see ``_Terms``), all
        strata at once."""
        s0, S1 = _suffix_sums(w, r.X, r.at_risk)
        if r.counting:  # remove rows entering at or after t_k: at risk needs start < t_k
            entering = _suffix_sums(w, r.X, r.entering)
            s0, S1 = s0 - entering[0], S1 - entering[1]
        w_ev = w[r.ev_rows]
        d0 = _segment_sums(w_ev, r.ev_first)
        r.by_k.data = w_ev
        D1 = r.by_k @ r.X_ev
        f = r.l_frac
        s0_l = s0[r.k_of_event] - f * d0[r.k_of_event]
        inv = 1 / s0_l
        inv2 = inv * inv
        seg = lambda v: _segment_sums(v, r.ev_first)  # noqa: E731
        return _Terms(s0_l, S1, D1, seg(inv), seg(f * inv), seg(inv2), seg(f * inv2), seg(f * f * inv2))

    def _loglik_score_info(self, beta: np.ndarray, want_info: bool = True):
        r = self._rs
        eta = r.X @ beta
        w = np.exp(eta)
        t = self._terms(r, w)
        loglik = float(eta[r.ev_rows].sum() - np.log(t.s0_l).sum())
        # U as a sum over event times of (events' x - sum_l xbar_kl): terms near 0 (the
        # difference of two sums over every event would lose digits to cancellation)
        U = (r.X_ev_by_k - t.S1 * t.a[:, None] + t.D1 * t.b[:, None]).sum(0)
        info = None
        if want_info:
            coef = w * self._cum_at_risk(r, t.a)
            coef[r.ev_rows] -= w[r.ev_rows] * t.b[r.k_of_event]
            info = _weighted_cross(r.X, coef) - t.xbar_outer()
        self._last = (beta.copy(), w, t)   # the fitted beta's sums, reused after the fit
        return loglik, U, info

    def _at(self, beta: np.ndarray) -> tuple[np.ndarray, _Terms]:
        """exp(x'beta) (sorted rows) and the risk-set terms at ``beta``."""
        last = getattr(self, "_last", None)
        if last is not None and np.array_equal(last[0], beta):
            return last[1], last[2]
        w = np.exp(self._rs.X @ beta)
        return w, self._terms(self._rs, w)

    @staticmethod
    def _cum_at_risk(r: _RiskSets, per_k: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """For each row j (sorted order; those of ``rows``): sum of per_k over its stratum's
        event times t_k in (start_j, stop_j]."""
        return _cum_at_risk(r, _cum_table(r, per_k), rows)

    # -- public API -----------------------------------------------------------------------
    def fit(self, X, duration, event, *, entry=None, strata=None, cluster=None, names=None, rows=None) -> "CoxPH":
        """Fit on covariates ``X`` (n x p), ``duration`` (stop time), ``event`` (0/1).

        ``entry``: start times for counting-process (start, stop] data; ``strata``: labels
        (baseline hazard per stratum); ``cluster``: labels for the robust variance; ``rows``:
        positions of the rows of X to fit, in the order of the other arguments (None: all),
        the same fit to the bit as on a column-major ``X[rows]`` (a DataFrame's row subset, as
        ``X.loc[rows]`` of ``design_matrix``'s) without that copy of X.

        Runs with one BLAS thread (``_one_blas_thread``).
        """
        with _one_blas_thread():
            return self._fit(X, duration, event, entry, strata, cluster, names, rows)

    def _fit(self, X, duration, event, entry, strata, cluster, names, rows=None) -> "CoxPH":
        if isinstance(X, pd.DataFrame):
            names = list(X.columns) if names is None else names
            X = X.to_numpy(dtype=float)
        X = np.asarray(X, dtype=float)
        p = X.shape[1]
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
        n = X.shape[0] if rows is None else len(rows)
        self.names_ = list(names) if names is not None else [f"x{i}" for i in range(p)]
        stop = np.asarray(duration, dtype=float)
        event = check_input(X, stop, event, self.names_, entry, strata, cluster, rows=rows)
        start = np.full(n, -np.inf) if entry is None else np.asarray(entry, dtype=float)
        if n == 0 or not event.any():
            raise ValueError("no events: a Cox model cannot be fitted")
        # Centre covariates (as R does) for stability; coefficients are unchanged. With
        # ``rows``, each column's mean of those rows (a column's contiguous copy: the same
        # pairwise sum as X[rows].mean(axis=0) of a DataFrame's column-major copy).
        self._center = X.mean(axis=0) if rows is None else np.array([X[:, j][rows].mean() for j in range(p)])
        if strata is None:
            labels, self.strata_levels_ = np.zeros(n, dtype=np.int64), np.array([None], dtype=object)
        else:
            labels, self.strata_levels_ = pd.factorize(np.asarray(strata))
        self._rs = _prepare(X, stop, start, event, labels, self.ties == "efron", center=self._center, rows=rows)
        self._last = None

        beta = np.zeros(p)
        loglik0, U, info = self._loglik_score_info(beta)
        self.loglik_null_ = loglik0
        loglik = loglik0
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
            warnings.warn(message, CoxConvergenceWarning, stacklevel=4)   # the caller of fit
        self.se_ = np.sqrt(np.diag(self.var_))
        self.n_obs_, self.n_events_ = n, int(event.sum())
        self._event = event
        self.linear_predictor_ = np.empty(n)
        self.linear_predictor_[self._rs.rows] = self._rs.X @ beta
        if cluster is not None:
            codes = pd.factorize(np.asarray(cluster))[0]
            sorted_codes = codes[self._rs.rows]
            u = np.empty((p, codes.max() + 1))    # summed score residuals, covariate x cluster
            # a few covariates' residuals at a time: never all n x p of them beside u
            for lo in range(0, p, RESIDUAL_COLUMNS):
                by_column = self._sorted_score_residuals(beta, slice(lo, lo + RESIDUAL_COLUMNS))
                for column, residuals in zip(u[lo:lo + RESIDUAL_COLUMNS], by_column):
                    column[:] = np.bincount(sorted_codes, weights=residuals, minlength=len(column))
                del by_column
            self.robust_var_ = self.var_ @ (u @ u.T) @ self.var_
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
        r = self._rs
        dh = self._at(beta)[1].a
        return pd.DataFrame({"stratum": self.strata_levels_[r.k_stratum], "time": r.event_times,
                             "cumhaz": _cumsum_within(dh, r.k_bounds)})

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

    @property
    def score_residuals_(self) -> np.ndarray:
        """Score residuals (module docstring) of the fitted model, n x p in the input's row order."""
        out = np.empty((len(self._rs.rows), len(self.coef_)))
        out[self._rs.rows] = self._sorted_score_residuals(self.coef_).T
        return out

    def _sorted_score_residuals(self, beta: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        """Score residuals in the sorted order, transposed (p x n: each covariate's contiguous);
        of the covariates ``columns`` only (each covariate's residual is computed on its own,
        so a subset gives exactly those rows of the whole)."""
        r = self._rs
        w, t = self._at(beta)
        ev, k = r.ev_rows, r.k_of_event
        B_k = (t.S1 * t.c0[:, None] - t.D1 * t.c1[:, None])[:, columns]        # sum_l xbar_kl / S0_kl
        C_k = (t.S1 * t.c1[:, None] - t.D1 * t.c2[:, None])[:, columns]        # sum_l f_l xbar_kl / S0_kl
        mean_xbar = ((t.S1 * t.a[:, None] - t.D1 * t.b[:, None]) / r.d[:, None])[:, columns]
        cum_a, cum_b = _cum_table(r, t.a), _cum_table(r, B_k)
        X, X_ev = r.X[:, columns], r.X_ev[:, columns]
        out = np.empty(X.shape[::-1])
        ev_bounds = np.searchsorted(ev, np.arange(0, len(w) + CHUNK_ROWS, CHUNK_ROWS))
        for i, lo in enumerate(range(0, len(w), CHUNK_ROWS)):     # in blocks: no n x p temporaries
            rows = slice(lo, lo + CHUNK_ROWS)
            block = X[rows] * _cum_at_risk(r, cum_a, rows)[:, None]
            block -= _cum_at_risk(r, cum_b, rows)
            block *= -w[rows, None]
            e = slice(ev_bounds[i], ev_bounds[i + 1])     # the block's events
            x_ev, k_ev, w_ev = X_ev[e], k[e], w[ev[e], None]
            block[ev[e] - lo] += x_ev - mean_xbar[k_ev] + w_ev * (x_ev * t.b[k_ev, None] - C_k[k_ev])
            out[:, rows] = block.T
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
        r = self._rs
        _, t = self._at(self.coef_)
        mean_xbar = (t.S1 * t.a[:, None] - t.D1 * t.b[:, None]) / r.d[:, None]
        resid = r.X_ev - mean_xbar[r.k_of_event]
        rows, stratum = r.rows[r.ev_rows], r.stratum[r.ev_rows]
        n_strata = len(r.row_bounds) - 1
        with _one_blas_thread():
            varies = (np.maximum.reduceat(r.X, r.row_bounds[:-1], axis=0)
                      != np.minimum.reduceat(r.X, r.row_bounds[:-1], axis=0))    # per stratum x covariate
            used = np.where(varies, np.bincount(stratum, minlength=n_strata)[:, None], 0)
            per_event = np.minimum(used[:, :, None], used[:, None, :]).sum(axis=0)
            vmean = self._info / np.where(per_event == 0, 1, per_event)
            scaled = np.full_like(resid, np.nan)
            # one solve per set of varying covariates (usually one set for every stratum)
            patterns, pattern_of = np.unique(used > 0, axis=0, return_inverse=True)
            pattern_of = pattern_of.reshape(-1)
            for i, pattern in enumerate(patterns):
                k, sel = np.flatnonzero(pattern), pattern_of[stratum] == i
                if len(k) and sel.any():
                    scaled[np.ix_(sel, k)] = np.linalg.solve(vmean[np.ix_(k, k)], resid[np.ix_(sel, k)].T).T
            var = np.linalg.inv(vmean)
        return ScaledSchoenfeld(
            row=rows, stratum=self.strata_levels_[stratum], time=self._stop[rows], x=ttimes[rows],
            y=pd.DataFrame(scaled + self.coef_, columns=self.names_), var=var, transform=transform)

    def zph(self, transform: str = "km") -> pd.DataFrame:
        """Test of proportional hazards, as R's ``cox.zph(fit, transform="km")`` (survival 3.x).

        Adds ``x_j * g(t)`` terms with g(t) = 1 - KM(t-) (left-continuous Kaplan-Meier over
        all rows) centred on its mean over events, and computes the score test for them at
        the fitted beta (Grambsch and Therneau 1994). Per covariate: the block of all
        covariates plus that one interaction (1 df); GLOBAL: all interactions (p df).
        With U the interaction score and I the expanded information,
        chisq = u' I^-1 u with u = (0, ..., 0, U).
        """
        r = self._rs
        p = r.X.shape[1]
        ttimes = self._transformed_times(transform)
        gtime = ttimes - ttimes[self._event].mean()
        w, t = self._at(self.coef_)
        ev = r.ev_rows
        g_ev = gtime[r.rows[ev]]
        g_k = _segment_sums(g_ev, r.ev_first) / r.d  # g is constant within a tied time
        U = (g_ev[:, None] * r.X_ev).sum(0) - t.xbar_sum(g_k)
        blocks = []  # sum V, sum g V, sum g^2 V
        with _one_blas_thread():
            for power in range(3):
                gp = g_k ** power
                coef = w * self._cum_at_risk(r, gp * t.a)
                coef[ev] -= w[ev] * (gp * t.b)[r.k_of_event]
                blocks.append(_weighted_cross(r.X, coef) - t.xbar_outer(gp))
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

    def release_data(self) -> "CoxPH":
        """Drop what the fit keeps of the data (its sorted copy, about 0.5 GB at a million
        rows by 20 covariates; the linear predictor; the times and events) once no residual,
        PH test or linear predictor is needed. The estimates, variances and baseline hazard
        stay: ``summary``, ``predict_survival`` and saving the model work as before."""
        for attr in ("_rs", "_last", "_stop", "_start", "_event", "linear_predictor_"):
            self.__dict__.pop(attr, None)
        return self

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
