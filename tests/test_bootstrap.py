"""Bootstrap optimism correction: detects overfitting, moves towards validation, reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import bootstrap, logistic_model as logistic


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


def _arrays(df: pd.DataFrame, columns: list[str]):
    return df[columns].to_numpy(), df["y"].to_numpy(), df["weight"].to_numpy(), df["family_id"].to_numpy()


@pytest.fixture(scope="module")
def overfitted():
    dev = _data(300, 30, 1)
    table = bootstrap.optimism(*_arrays(dev, COLUMNS), logistic.fit_model, logistic.score_model,
                               replicates=60, seed=11, n_jobs=2, progress=False)
    valid = _data(50_000, 30, 2)
    external = logistic.score_model(logistic.fit_model(*_arrays(dev, COLUMNS)[:3]), *_arrays(valid, COLUMNS)[:3])
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
    args = (*_arrays(dev, cols), logistic.fit_model, logistic.score_model)
    one = bootstrap.optimism(*args, replicates=40, seed=5, n_jobs=1, progress=False)   # 4 per task
    two = bootstrap.optimism(*args, replicates=40, seed=5, n_jobs=2, progress=False)   # 2 per task
    pd.testing.assert_frame_equal(one, two)


def test_family_multiplicities_keep_families_whole():
    family = np.array([0, 0, 1, 2, 2, 2])
    code = pd.factorize(family)[0]
    times = bootstrap.family_multiplicity(np.random.default_rng(0), code, 3)
    # every row of a family is drawn as often as the family; three families drawn in all
    assert all(len(set(times[family == f])) == 1 for f in range(3))
    assert sum(times[family == f][0] for f in range(3)) == 3


def test_a_weighted_replicate_is_the_repeated_rows():
    """Refit and scores on frequency weights equal those on the physically repeated rows."""
    dev = _data(400, 3, 4)
    cols = ["x", "z0", "z1", "z2"]
    X, y, w, family = _arrays(dev, cols)
    times = bootstrap.family_multiplicity(np.random.default_rng(1), pd.factorize(family)[0], 200)
    weighted = logistic.fit_model(X, y, w * times)
    rows = np.repeat(np.arange(len(y)), times)
    repeated = logistic.fit_model(X[rows], y[rows], w[rows])
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-9)
    # warm start from another fit reaches the same maximum
    warm = logistic.fit_model(X, y, w * times, start=logistic.fit_model(X, y, w))
    np.testing.assert_allclose(warm.coef_, weighted.coef_, rtol=1e-9)
    a = logistic.score_model(weighted, X, y, w * times)
    b = logistic.score_model(repeated, X[rows], y[rows], w[rows])
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-8), k


def test_named_streams_never_meet_the_bootstrap_replicates():
    """A named stream's seed differs from every optimism replicate's (the old hand-numbered
    spawn_key=[7] recalibration split was bootstrap replicate 8's stream)."""
    import pytest as _pytest

    from pipeline.config import seed_sequence

    names = ["optimism_bootstrap", "c_interval", "calibration_curve_band", "recalibration_split", "group_rates",
             "validation_split", "faults"]
    seed = 20261122
    replicate_states = {tuple(child.generate_state(4)) for child in seed_sequence(seed, "optimism_bootstrap").spawn(200)}
    replicate_states |= {tuple(child.generate_state(4)) for child in np.random.SeedSequence(seed).spawn(200)}
    named = [tuple(seed_sequence(seed, n).generate_state(4)) for n in names]
    assert len(set(named)) == len(names) and not set(named) & replicate_states
    with _pytest.raises(ValueError):
        seed_sequence(seed, "7")


def test_pooled_replicates_equal_row_by_row_replicates():
    """Replicates on distinct (x, y) rows with summed weights give the row-by-row answer."""
    rng = np.random.default_rng(8)
    n = 3000
    X = np.column_stack([rng.integers(0, 2, n), rng.integers(0, 4, n), rng.integers(0, 2, n)]).astype(float)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1 + X @ [0.5, 0.3, -0.4])))).astype(float)
    family = np.arange(n) // 3
    code, first = bootstrap.distinct_rows(X, y)
    assert len(first) <= 2 * 2 * 4 * 2 and np.array_equal(np.column_stack([X, y])[first][code], np.column_stack([X, y]))
    args = (X, y, np.ones(n), family, logistic.fit_model, logistic.score_model)
    rows = bootstrap.optimism(*args, replicates=20, seed=3, n_jobs=1, progress=False, pool=False)
    pooled = bootstrap.optimism(*args, replicates=20, seed=3, n_jobs=1, progress=False, pool=True)
    pd.testing.assert_frame_equal(rows, pooled, rtol=1e-9, atol=1e-12)
