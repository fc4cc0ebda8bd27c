"""The calibration stage's shortcuts give the numbers of the plain computation, to the bit."""

import numpy as np
import pandas as pd

from pipeline import calibration_uncertainty as uncertainty
from pipeline.bootstrap import family_multiplicity, family_seeds
from pipeline.calibration import curve


def _rows(seed: int = 3, n: int = 3000):
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(2, 5, n), 3).clip(0.001, 0.999)        # many tied predictions
    y = (rng.random(n) < p).astype(float)
    family = rng.integers(0, n // 3, n)
    return p, y, family


def test_one_sort_for_whole_weights_gives_each_replicates_own_numbers():
    p, y, family = _rows()
    w = np.ones(len(p))
    w[::7] = 2.0                                                  # whole numbers: the shortcut applies
    code = pd.factorize(family)[0]
    seeds = family_seeds(12, 1, "test_stream")
    shortcut = uncertainty._reweighted_errors(p, y, w, code, seeds)
    plain = [uncertainty.smoothed_errors(p, y, w * family_multiplicity(np.random.default_rng(s), code, code.max() + 1))
             for s in seeds]
    assert shortcut == plain                                      # dicts of floats: equal to the bit


def test_ipcw_weights_keep_their_own_sort():
    p, y, _ = _rows()
    assert uncertainty._whole_counts(p, y, np.full(len(p), 1.25)) is None
    assert uncertainty._whole_counts(p, y, np.ones(len(p))) is not None


def test_curve_band_does_not_depend_on_the_workers():
    p, y, family = _rows(n=800)
    one = curve(p, y, family, replicates=20, seed=2, n_jobs=1)
    two = curve(p, y, family, replicates=20, seed=2, n_jobs=2)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
