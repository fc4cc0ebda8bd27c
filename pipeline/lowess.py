"""Cleveland's lowess (no robustness iterations) with frequency weights.

R's ``lowess(x, y, f = 2/3, iter = 0, delta = 0.01 * diff(range(x)))`` (the C routine
``clowess``, Cleveland 1979 and 1981) is what ``rms::val.prob`` smooths with. statsmodels
implements the same routine but takes no weights, and calibration needs them twice: a
bootstrap replicate is the original rows with family multiplicities as frequency weights
(so nothing is copied), and inverse-probability-of-censoring weights.

Algorithm (clowess, iter = 0), on the data expanded by its weights, N = sum of weights:
the window holds ns = max(floor(f N + 1e-7), 2) points; for an anchor x0 it slides right
while x0 - x[left] > x[right + 1] - x0; h = max(x0 - x[left], x[right] - x0); points
from the window's left end onwards with |x - x0| <= 0.999 h get the tricube weight
(1 - (|x - x0| / h)^3)^3 (1 within 0.001 h), and the fitted value is the weighted local
linear regression at x0 (local mean when the weighted spread is below 0.001 of the
range of x). Anchors are the first point, then repeatedly the last point within
``delta`` of the previous anchor (or the next point); points between anchors are
linearly interpolated, ties share their anchor's value.

Computed on the distinct x values with their total weight. Tied rows that straddle a
window's left end always lie at distance h (the window slid past the earlier ones because
they were farther than its right end), so they get weight 0 and the order of tied rows
never matters, as in R. Checked against statsmodels and R (``tests/test_lowess.py``).
"""

from __future__ import annotations

import numpy as np


def distinct(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct x values (sorted), each row's index into them, and per distinct value the
    total weight and the weighted sum of y. One sort, shared by the measures built on it."""
    order = np.argsort(x)
    xs = x[order]
    new = np.empty(len(xs), dtype=bool)
    new[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    group = np.cumsum(new) - 1
    inverse = np.empty(len(x), dtype=np.intp)
    inverse[order] = group
    return xs[new], inverse, np.bincount(group, weights=weights[order]), np.bincount(group, weights=(weights * y)[order])


def lowess(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, frac: float = 2 / 3,
           delta: float | None = None) -> np.ndarray:
    """Fitted lowess value at each x (input order). ``delta`` defaults to R's 0.01 * range(x).
    Integer ``weights`` act as repeated rows; rows with weight 0 are ignored (NaN)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=float)
    if not (len(x) == len(y) == len(w)):
        raise ValueError("x, y and weights must have the same length")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    fitted = np.full(len(x), np.nan)
    used = w > 0
    if not used.any():
        return fitted
    ux, inverse, mass, mass_y = distinct(x[used], y[used], w[used])
    fitted[used] = lowess_distinct(ux, mass, mass_y, frac, delta)[inverse]
    return fitted


BLOCK = 1024   # distinct x values per block of precomputed moments


def _tricube_polynomials() -> dict[str, np.ndarray]:
    """B[side][j]: matrix taking powers of a block's scaled centre offset e to the
    coefficients, in the scaled within-block offset u, of t(e + u) (e + u)^j, for the
    tricube t(s) = (1 + s^3)^3 left of the anchor, 1 near it and (1 - s^3)^3 right of it."""
    from math import comb

    sides = {"left": np.polynomial.polynomial.polypow([1, 0, 0, 1], 3),
             "near": np.array([1.0]),
             "right": np.polynomial.polynomial.polypow([1, 0, 0, -1], 3)}
    out = {}
    for side, t in sides.items():
        mats = []
        for j in range(3):
            q = np.concatenate([np.zeros(j), t])          # t(s) s^j
            mat = np.zeros((12, 12))                      # [power of e, power of u]
            for i, qi in enumerate(q):
                for k in range(i + 1):
                    mat[i - k, k] += qi * comb(i, k)
            mats.append(mat)
        out[side] = np.array(mats)
    return out


_POLY = _tricube_polynomials()


def lowess_distinct(ux: np.ndarray, mass: np.ndarray, mass_y: np.ndarray, frac: float = 2 / 3,
                    delta: float | None = None) -> np.ndarray:
    """lowess on distinct x values with their total weight and weighted sum of y.

    Each anchor needs five weighted sums over its window (of t m, t m d, t m d^2, t my,
    t my d; d = x - x0, t the tricube weight, m the weight, my the weight times y).
    Within a side of the anchor t is a polynomial in d, so a block of points lying wholly
    on one side contributes a fixed linear combination of its moments about its centre,
    sum m u^k, k <= 11 (precomputed once). Only the few blocks that straddle a boundary
    (window end, 0.001 h, 0.999 h) are summed point by point: O(n + anchors (n/B + B))
    instead of O(anchors n). The expansion is about each block's centre, where |u| is
    small against h, so its terms shrink and nothing cancels catastrophically.
    """
    return lowess_distinct_many(ux, mass, np.asarray(mass_y, dtype=float)[None, :], frac, delta)[0]


def lowess_distinct_many(ux: np.ndarray, mass: np.ndarray, mass_y: np.ndarray, frac: float = 2 / 3,
                         delta: float | None = None) -> np.ndarray:
    """``lowess_distinct`` for several outcome vectors on the same x and weights (``mass_y``
    one row each): row r of the result is ``lowess_distinct(ux, mass, mass_y[r])`` to the
    bit. Anchors, windows, tricube weights and every sum of the weights alone depend on x
    and the weights only, so they are made once; each row's sums of y take the same
    operations in the same order as a single call (the noise floor redraws y on fixed
    predictions hundreds of times)."""
    m = len(ux)
    total = mass.sum()
    cum = np.cumsum(mass)
    x_range = ux[-1] - ux[0]
    if delta is None:
        delta = 0.01 * x_range
    ns = max(min(np.floor(frac * total + 1e-7), total), 2.0)
    last_start = max(np.ceil(total - ns), 0.0)
    tol = 1e-9 * max(total, 1.0)
    rows = range(len(mass_y))

    def x_at_many(position: np.ndarray) -> np.ndarray:
        return ux[np.minimum(np.searchsorted(cum, position - tol), m - 1)]

    def window_starts(x0: np.ndarray) -> np.ndarray:
        """For each anchor x0, the smallest offset s (window = rows s+1 .. s+ns) that
        clowess's sliding stops at: the first s with s + ns >= N or x0 - x[s+1] <= x[s+ns+1] - x0
        (the condition only turns true as s grows), by bisection, all anchors at once."""
        lo, hi = np.zeros(len(x0)), np.full(len(x0), last_start)
        while np.any(lo < hi):
            mid = np.floor((lo + hi) / 2)
            stop = (mid + ns >= total) | (x0 - x_at_many(mid + 1) <= x_at_many(mid + ns + 1) - x0)
            active = lo < hi
            hi = np.where(active & stop, mid, hi)
            lo = np.where(active & ~stop, mid + 1, lo)
        return lo

    blocked = m > 4 * BLOCK
    if blocked:
        starts = np.arange(0, m, BLOCK)
        block_of = np.arange(m) // BLOCK
        ends = ux[np.minimum(starts + BLOCK, m) - 1]
        centre = (ux[starts] + ends) / 2
        half = np.where(ends > ux[starts], (ends - ux[starts]) / 2, 1.0)   # moments in units of half a block
        u = (ux - centre[block_of]) / half[block_of]
        power = np.ones(m)
        moments_m = np.empty((len(starts), 12))
        moments_my = [np.empty((len(starts), 12)) for _ in rows]
        for k in range(12):
            moments_m[:, k] = np.add.reduceat(mass * power, starts)
            for r in rows:
                moments_my[r][:, k] = np.add.reduceat(mass_y[r] * power, starts)
            power = power * u

    def direct(lo: int, hi: int, x0: float, h: float, k_left: int, part: float, sums: np.ndarray) -> None:
        """Add the window's points lo..hi-1, one by one, to each row's five sums."""
        d = ux[lo:hi] - x0
        r = np.abs(d)
        q = r / h if h > 0 else np.zeros_like(r)
        q3 = q * q * q
        t = (1 - q3) * (1 - q3) * (1 - q3)
        t[r <= 0.001 * h] = 1.0
        t[r > 0.999 * h] = 0.0
        if lo == k_left:
            t[0] *= part
        v = t * mass[lo:hi]
        weight_sums = (v.sum(), v @ d, v @ (d * d))
        for row in rows:
            ty = t * mass_y[row, lo:hi]
            sums[row] += np.array([*weight_sums, ty.sum(), ty @ d])

    def window_sums(x0: float, h: float, k_left: int, part: float) -> np.ndarray:
        sums = np.zeros((len(mass_y), 5))
        h9, h1 = 0.999 * h, 0.001 * h
        lo = max(k_left, int(np.searchsorted(ux, x0 - h9)))
        hi = int(np.searchsorted(ux, x0 + h9, side="right"))   # rounding at the edges: exact blocks
        if not blocked or h == 0:
            direct(k_left, min(hi + 1, m), x0, h, k_left, part, sums)
            return sums
        edges = [lo, int(np.searchsorted(ux, x0 - h1)), int(np.searchsorted(ux, x0 + h1, side="right")), hi]
        b_lo, b_hi = lo // BLOCK, min(hi, m - 1) // BLOCK
        exact = set()
        for e in [k_left, *edges]:
            exact.update(b for b in (min(max(e - 1, 0), m - 1) // BLOCK, min(e, m - 1) // BLOCK,
                                     min(e + 1, m - 1) // BLOCK) if b_lo <= b <= b_hi)
        for b in exact:
            direct(max(b * BLOCK, k_left), min((b + 1) * BLOCK, m), x0, h, k_left, part, sums)
        blocks = np.array([b for b in range(b_lo, b_hi + 1) if b not in exact], dtype=int)
        if len(blocks):
            first, last = blocks * BLOCK, np.minimum(blocks * BLOCK + BLOCK, m) - 1
            side = np.where(last < edges[1], 0, np.where(first >= edges[2], 2, 1))
            inside = (first >= lo) & (last < hi)
            e_scaled = (centre[blocks] - x0) / h
            e_pow = e_scaled[:, None] ** np.arange(12)
            u_scale = (half[blocks] / h)[:, None] ** np.arange(12.0)     # <= 1: the block lies within h
            mm = moments_m[blocks] * u_scale
            mmy = [moments_my[row][blocks] * u_scale for row in rows]
            for s, name in enumerate(("left", "near", "right")):
                use = inside & (side == s)
                if not use.any():
                    continue
                mat = _POLY[name]
                ep = e_pow[use]
                t0, t1 = ep @ mat[0], ep @ mat[1]
                sum0 = np.sum(t0 * mm[use])
                sum1 = h * np.sum(t1 * mm[use])
                sum2 = h * h * np.sum((ep @ mat[2]) * mm[use])
                for row in rows:
                    sums[row, 0] += sum0
                    sums[row, 1] += sum1
                    sums[row, 2] += sum2
                    sums[row, 3] += np.sum(t0 * mmy[row][use])
                    sums[row, 4] += h * np.sum(t1 * mmy[row][use])
        return sums

    # Anchors depend on x alone: the first point, then the last point within delta of the
    # previous anchor (or the next point). Their windows are found together.
    anchors = [0]
    while anchors[-1] < m - 1:
        nxt = int(np.searchsorted(ux, ux[anchors[-1]] + delta, side="right")) - 1
        anchors.append(max(anchors[-1] + 1, nxt))
    anchor_x = ux[anchors]
    starts = window_starts(anchor_x)
    spans = np.maximum(anchor_x - x_at_many(starts + 1), x_at_many(starts + ns) - anchor_x)
    lefts = np.minimum(np.searchsorted(cum, starts + 1 - tol), m - 1)
    parts = np.minimum(1.0, (cum[lefts] - starts) / mass[lefts])   # share of the left-end tie block in the window

    fitted = np.empty((len(mass_y), m))
    last = -1
    for anchor, x0, h, k_left, part in zip(anchors, anchor_x, spans, lefts.tolist(), parts):
        all_sums = window_sums(x0, h, k_left, part)
        for row in rows:
            a, s1, s2, y0, y1 = all_sums[row]
            value = y0 / a
            if h > 0:
                mean_offset = s1 / a
                spread = s2 / a - mean_offset * mean_offset
                if np.sqrt(max(spread, 0.0)) > 0.001 * x_range:
                    slope = -mean_offset / spread
                    value = (y0 + slope * (y1 - mean_offset * y0)) / a
            fitted[row, anchor] = value
            if last >= 0 and anchor - last > 1:
                between = slice(last + 1, anchor)
                alpha = (ux[between] - ux[last]) / (x0 - ux[last])
                fitted[row, between] = alpha * value + (1 - alpha) * fitted[row, last]
        last = anchor
    return fitted
