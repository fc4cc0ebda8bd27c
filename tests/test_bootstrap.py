"""Bootstrap optimism correction: detects overfitting, moves towards validation, reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import bootstrap, logistic


def _data(n: int, noise: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"z{j}": rng.normal(size=n) for j in range(noise)})
    df["x"] = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(-0.5 + 0.8 * df["x"])))
    df["y"] = (rng.random(n) < p).astype(int)
    df["weight"] = 1.0
    df["family_id"] = np.arange(n) // 2          # pairs of siblings
    return df


COLUMNS = ["x", *[f"z{j}" for j in range(30)]]


@pytest.fixture(scope="module")
def overfitted():
    dev = _data(300, 30, 1)
    fit, score = logistic.fit_function(COLUMNS), logistic.score_function(COLUMNS)
    table = bootstrap.optimism(dev, "family_id", fit, score, replicates=60, seed=11, n_jobs=2, progress=False)
    valid = _data(50_000, 30, 2)
    external = score(fit(dev), valid)
    return table, external


def test_overfitting_is_detected_and_corrected(overfitted):
    table, external = overfitted
    # Apparent slope is 1 by construction of maximum likelihood; the truth is well below.
    assert table.loc["slope", "apparent"] == pytest.approx(1, abs=1e-6)
    assert external["slope"] < 0.85
    assert table.loc["slope", "optimism"] > 0.1 and table.loc["c", "optimism"] > 0.02
    # The corrected figures move from the apparent ones towards the external validation.
    for measure in ("slope", "c"):
        apparent, corrected, truth = table.loc[measure, ["apparent", "corrected"]].tolist() + [external[measure]]
        assert abs(corrected - truth) < abs(apparent - truth), measure


def test_same_seed_same_answer_whatever_the_workers():
    dev = _data(200, 5, 3)
    cols = ["x", *[f"z{j}" for j in range(5)]]
    args = (dev, "family_id", logistic.fit_function(cols), logistic.score_function(cols))
    one = bootstrap.optimism(*args, replicates=8, seed=5, n_jobs=1, progress=False)
    two = bootstrap.optimism(*args, replicates=8, seed=5, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(one, two)


def test_family_resampling_keeps_families_whole():
    family = np.array([0, 0, 1, 2, 2, 2])
    order, starts, sizes = bootstrap.family_index(family)
    rows = bootstrap.resample_rows(np.random.default_rng(0), order, starts, sizes)
    drawn = pd.Series(family[rows]).value_counts()
    sizes_by_family = pd.Series(family).value_counts()
    # Each drawn family appears a multiple of its size (whole families, possibly repeated).
    assert all(drawn[f] % sizes_by_family[f] == 0 for f in drawn.index)
    assert len(rows) == sum(sizes_by_family[f] * (drawn[f] // sizes_by_family[f]) for f in drawn.index)
