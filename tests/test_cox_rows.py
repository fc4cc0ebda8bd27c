"""CoxPH.fit(rows=...) is the fit on X[rows] to the bit, without that copy (pipeline/cox.py);
the survival stage's recurrent models fit this way."""

import numpy as np
import pandas as pd
import pytest

from pipeline.cox import CoxInputError, CoxPH


def _data(n=400, p=3, seed=5):
    rng = np.random.default_rng(seed)
    # built column by column, as pipeline.design.design_matrix builds it: column-major, as are its
    # row subsets (the centring means are then the same pairwise sums; a row-major copy's differ
    # in the last bit)
    X = pd.DataFrame({f"x{j}": rng.normal(size=n) for j in range(p)})
    stop = rng.integers(1, 60, n).astype(float)
    start = np.maximum(stop - rng.integers(1, 30, n), 0.0)
    event = rng.random(n) < 0.4
    cluster = rng.integers(0, 80, n)
    return X, stop, start, event, cluster


def test_rows_fit_equals_fit_on_the_copy():
    X, stop, start, event, cluster = _data()
    rows = np.sort(np.random.default_rng(1).choice(len(X), 300, replace=False))[::-1]   # any order
    copy = CoxPH().fit(X.loc[rows], stop[rows], event[rows], entry=start[rows], cluster=cluster[rows])
    lean = CoxPH().fit(X, stop[rows], event[rows], entry=start[rows], cluster=cluster[rows], rows=rows)
    for attr in ("coef_", "var_", "robust_var_", "linear_predictor_"):
        assert np.array_equal(getattr(copy, attr), getattr(lean, attr)), attr   # bit for bit
    assert copy.loglik_ == lean.loglik_
    pd.testing.assert_frame_equal(copy.baseline_cumulative_hazard_, lean.baseline_cumulative_hazard_)


def test_rows_fit_checks_only_those_rows():
    X, stop, start, event, cluster = _data()
    X.iloc[0, 1] = np.nan                       # outside the rows fitted: no error
    rows = np.arange(1, len(X))
    CoxPH().fit(X, stop[rows], event[rows], rows=rows)
    with pytest.raises(CoxInputError, match="covariate 'x1'.*1 row"):   # inside: the same message as on a copy
        CoxPH().fit(X, stop, event, rows=np.arange(len(X)))
