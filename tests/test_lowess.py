"""Weighted lowess (pipeline.lowess) against R's lowess, statsmodels and expanded data."""

import numpy as np
import pytest
from statsmodels.nonparametric.smoothers_lowess import lowess as statsmodels_lowess

from pipeline.lowess import BLOCK, lowess


def r_inputs():
    """The data tests/data/ref_lowess.R reads (written with %.17g, so R sees these doubles)."""
    rng = np.random.default_rng(20261122)
    x = rng.beta(2, 5, 6000)
    y = (rng.random(6000) < x).astype(float)
    x2 = np.round(rng.random(300), 2)
    ux = np.unique(x2)
    y2 = (rng.random(len(ux)) < 0.4).astype(float)[np.searchsorted(ux, x2)]   # tied rows share y
    return x, y, x2, y2


def test_equals_r_lowess_iter0():
    """R 4.2.2: ``lowess(d$x, d$y, iter = 0)`` (f = 2/3, delta = 0.01 * diff(range(x))),
    fitted values put back in input order; 6,000 distinct x, so the blocked path is used."""
    x, y, _, _ = r_inputs()
    assert len(x) > 4 * BLOCK
    fit = lowess(x, y)
    r_values = {1: 0.171873828831438, 2: 0.0565827718275122, 10: 0.215638502290496, 100: 0.0199904416301177,
                1000: 0.568041455181792, 2500: 0.203287159016593, 4000: 0.23364968088563,
                5999: 0.0618989309422744, 6000: 0.151213243707697}
    for i, value in r_values.items():
        assert fit[i - 1] == pytest.approx(value, abs=1e-10)
    assert fit.sum() == pytest.approx(1682.06410912204, abs=1e-8)


def test_equals_r_lowess_with_ties_and_no_delta():
    """R: ``g <- lowess(t$x, t$y, iter = 0, delta = 0)``; ``g$y[c(1, 50, 150, 300)]``, ``sum(g$y)``."""
    _, _, x, y = r_inputs()
    fit = lowess(x, y, delta=0.0)[np.argsort(x, kind="stable")]
    assert fit[[0, 49, 149, 299]] == pytest.approx(
        [0.212329245199272, 0.240294481802925, 0.462398813082873, 0.371721075660663], abs=1e-12)
    assert fit.sum() == pytest.approx(114.706539178777, abs=1e-10)


# statsmodels skips R's last anchor (it fits the next-to-last point, then the last, where
# clowess jumps straight to the last point within delta), so with delta > 0 the two differ
# by up to ~1e-6 between the last anchors; with delta = 0 they are the same algorithm.
@pytest.mark.parametrize(("n", "delta", "tolerance"), [(7, 0.0, 1e-10), (60, 0.0, 1e-10), (3000, 0.0, 1e-10),
                                                       (60, None, 1e-5), (20000, None, 1e-5)])
def test_equals_statsmodels(n, delta, tolerance):
    rng = np.random.default_rng(n)
    x = rng.random(n)
    y = (rng.random(n) < x).astype(float)
    sm_delta = 0.01 * np.ptp(x) if delta is None else delta
    expected = statsmodels_lowess(y, x, frac=2 / 3, it=0, delta=sm_delta, return_sorted=False)
    assert np.max(np.abs(lowess(x, y, delta=delta) - expected)) < tolerance


@pytest.mark.parametrize("n", [300, 9000])
def test_integer_weights_equal_repeated_rows(n):
    """A bootstrap replicate as frequency weights gives the smooth of the repeated rows
    (statsmodels on the expanded data; blocked path at 9,000 distinct x)."""
    rng = np.random.default_rng(n)
    x = rng.random(n)
    y = (rng.random(n) < x).astype(float)
    w = rng.integers(0, 4, n)
    xe, ye = np.repeat(x, w), np.repeat(y, w)
    expected = statsmodels_lowess(ye, xe, frac=2 / 3, it=0, delta=0.01 * np.ptp(xe), return_sorted=False)
    fit = lowess(x, y, w)
    assert np.isnan(fit[w == 0]).all()
    assert np.max(np.abs(np.repeat(fit, w) - expected)) < 1e-5   # statsmodels' end anchors: see above
    # and not the unweighted smooth: the weights matter
    assert np.max(np.abs(lowess(x, y)[w > 0] - fit[w > 0])) > 1e-4


def test_rejects_bad_weights():
    with pytest.raises(ValueError, match="non-negative"):
        lowess([0.1, 0.2, 0.3], [0, 1, 0], [1, -1, 1])
