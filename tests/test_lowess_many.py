"""lowess_distinct_many: several outcome vectors on one x and weights, each row the single
smooth to the bit (the noise floor's replicates share the windows)."""

import numpy as np

from pipeline import calibration_uncertainty as cu
from pipeline.lowess import distinct, lowess_distinct, lowess_distinct_many


def test_each_row_is_the_single_smooth_to_the_bit():
    rng = np.random.default_rng(21)
    for m in (40, 3000, 6000):                       # 6000 distinct values: the blocked path
        x = np.round(rng.beta(2, 5, m), 4 if m > 1000 else 2)       # ties
        w = rng.random(m) * 2 + 0.01
        ux, inverse, mass, _ = distinct(x, np.zeros(m), w)
        outcomes = [np.bincount(inverse, weights=w * (rng.random(m) < ux[inverse]), minlength=len(ux))
                    for _ in range(4)]
        many = lowess_distinct_many(ux, mass, np.array(outcomes))
        for row, events in zip(many, outcomes):
            assert np.array_equal(row, lowess_distinct(ux, mass, events))


def test_noise_floor_replicates_equal_one_smooth_each():
    rng = np.random.default_rng(22)
    p = np.clip(np.round(rng.beta(2, 6, 8000), 3), 0.001, 0.999)
    w = rng.random(8000) * 2 * (rng.random(8000) < 0.9)
    outcomes = np.array([rng.random(8000) < p for _ in range(30)])
    one_by_one = [cu.smoothed_errors(p, y.astype(float), w) for y in outcomes]
    assert cu._redrawn_errors(p, w, outcomes) == one_by_one
