"""The headline bootstrap's replicates fitted on distinct (x, y) rows with summed weights
equal the row-by-row fits (coded covariates: many rows share a pattern)."""

import numpy as np

from pipeline import headline_bootstrap as hb


def _coded_rows(rng: np.random.Generator, n: int) -> hb.Rows:
    X = np.column_stack([rng.integers(0, 2, n), rng.integers(0, 3, n), rng.integers(0, 2, n)]).astype(float)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1 + X @ [0.6, 0.3, -0.5])))).astype(float)
    return hb.rows(X, y, np.ones(n), np.arange(n) // 2)


def statistic(p, y, w):
    flagged = p >= np.quantile(p, 0.8)
    return {"mean_risk": float(np.average(p, weights=w)), "flagged_events": float(np.sum(w * y * flagged))}


def test_pooled_fits_give_the_row_by_row_draws():
    rng = np.random.default_rng(31)
    dev, val = _coded_rows(rng, 2000), _coded_rows(rng, 1500)
    code, first = hb.distinct_rows(dev.X, dev.y)
    assert len(first) <= 24                            # 2 x 3 x 2 patterns x 2 outcomes: pooling applies
    rows = hb.refit_replicates(dev, val, statistic, replicates=12, seed=4, pool=False)
    pooled = hb.refit_replicates(dev, val, statistic, replicates=12, seed=4, pool=True)
    np.testing.assert_allclose(pooled["mean_risk"], rows["mean_risk"], rtol=1e-10)
    np.testing.assert_array_equal(pooled["flagged_events"], rows["flagged_events"])
