"""The numpy Kaplan-Meier and log-rank test of pipeline.nonparametric against lifelines
(whose arithmetic they follow) and a hand-worked log-rank statistic."""

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from pipeline.nonparametric import kaplan_meier, logrank_test


def lifelines_table(time, event) -> pd.DataFrame:
    km = KaplanMeierFitter().fit(time, event)
    table = km.event_table
    out = pd.DataFrame({
        "time_days": table.index.to_numpy(dtype=float), "at_risk": table["at_risk"].to_numpy(),
        "survival": km.survival_function_.iloc[:, 0].to_numpy(),
        "survival_lower": km.confidence_interval_.iloc[:, 0].to_numpy(),
        "survival_upper": km.confidence_interval_.iloc[:, 1].to_numpy()})
    out.loc[out["survival"] <= 0, ["survival_lower", "survival_upper"]] = np.nan
    return out


def test_kaplan_meier_is_lifelines_to_the_bit():
    rng = np.random.default_rng(11)
    for trial in range(150):
        n = int(rng.integers(1, 120))
        time = rng.integers(0 if trial % 3 == 0 else 1, int(rng.integers(2, 40)), n).astype(float)
        event = np.ones(n, bool) if trial % 7 == 0 else rng.random(n) < rng.random()   # all events: S reaches 0
        pd.testing.assert_frame_equal(kaplan_meier(time, event), lifelines_table(time, event),
                                      check_exact=True, check_dtype=False)


def test_logrank_hand_worked():
    # A: (1, event), (3, event); B: (2, event), (4, censored). At each event time, with
    # n at risk, d events, n_A at risk in A: E_A = n_A d / n, V = d (n - d) / (n^2 (n - 1)) n_A n_B
    # t=1: n=4, n_A=2: E 0.5,  V 1*3/(16*3)*2*2 = 0.25; O_A 1
    # t=2: n=3, n_A=1: E 1/3,  V 1*2/(9*2)*1*2 = 2/9;  O_A 0
    # t=3: n=2, n_A=1: E 0.5,  V 1*1/(4*1)*1*1 = 0.25; O_A 1
    # O - E = 2 - 4/3 = 2/3; V = 13/18; chisq = (4/9) / (13/18) = 8/13 on 1 df
    chisq, df, p = logrank_test([1, 3, 2, 4], ["A", "A", "B", "B"], [1, 1, 1, 0])
    assert df == 1
    assert abs(chisq - 8 / 13) < 1e-12
    assert abs(p - 0.432768) < 1e-6     # chi2(1) upper tail at 8/13 = 0.6154 (R: pchisq(8/13, 1, lower.tail = FALSE))


def test_logrank_equals_lifelines():
    rng = np.random.default_rng(12)
    for trial in range(100):
        n = int(rng.integers(4, 300))
        time = rng.integers(1, int(rng.integers(2, 50)), n).astype(float)
        event = rng.random(n) < rng.random()
        groups = rng.integers(0, int(rng.integers(2, 6)), n).astype(str)
        if len(set(groups)) < 2:
            continue
        ours = logrank_test(time, groups, event)
        theirs = multivariate_logrank_test(time, groups, event)
        assert ours[1] == len(set(groups)) - 1
        assert abs(ours[0] - theirs.test_statistic) <= 1e-10 * max(1.0, abs(theirs.test_statistic))
        assert abs(ours[2] - theirs.p_value) <= 1e-10
