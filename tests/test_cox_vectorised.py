"""CoxPH's all-strata-at-once sums against a plain loop over strata, event times and Efron's
pseudo-risk-sets (written here from the formulas in ``pipeline/cox.py``'s docstring), and
against numbers pinned from the per-stratum implementation it replaced.

The data are built by modular arithmetic (no random generator, so the same on every numpy):
unequal strata, many tied times, sibling clusters that cross strata, and (start, stop] rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cox import CoxPH, _cumsum_within

TOL = 1e-12


def make_data(n: int = 240, counting: bool = False):
    i = np.arange(n)
    X = np.column_stack([(i * 7 % 11) / 11.0, (i * 13 % 5 == 0).astype(float), ((i * 29) % 17 - 8) / 4.0])
    stop = 1.0 + (i * 37 % 19)                      # 19 distinct times: many ties
    event = (i * 11 % 7 != 0).astype(int)
    strata = np.select([i % 10 < 5, i % 10 < 8, i % 10 < 9], ["a", "b", "c"], "d")   # 50% / 30% / 10% / 10%
    cluster = i // 3                                # crosses strata
    entry = np.floor(stop * ((i * 17 % 10) / 10.0)) - 1 if counting else None
    return X, stop, event, strata, cluster, entry


def reference(X, stop, event, strata, cluster, beta, entry=None, efron=True):
    """Log partial likelihood, score, information, score residuals, cumulative baseline hazard
    and robust variance at ``beta``, one stratum, event time and pseudo-risk-set at a time."""
    n, p = X.shape
    Xc = X - X.mean(axis=0)
    w = np.exp(Xc @ beta)
    start = np.full(n, -np.inf) if entry is None else entry
    loglik, U, info = 0.0, np.zeros(p), np.zeros((p, p))
    resid = np.zeros((n, p))
    baseline = []
    for level in dict.fromkeys(strata):         # first-seen order, as pandas.factorize
        in_g = strata == level
        cumhaz = 0.0
        for t in np.unique(stop[in_g & (event == 1)]):
            D = np.flatnonzero(in_g & (event == 1) & (stop == t))
            R = np.flatnonzero(in_g & (start < t) & (t <= stop))
            d = len(D)
            loglik += float((Xc[D] @ beta).sum())
            U += Xc[D].sum(axis=0)
            for l in range(d):
                f = l / d if efron else 0.0
                c = np.where(np.isin(R, D), 1 - f, 1.0)       # tied events keep weight 1 - l/d
                s0 = (c * w[R]).sum()
                s1 = (c * w[R]) @ Xc[R]
                s2 = (Xc[R] * (c * w[R])[:, None]).T @ Xc[R]
                xbar = s1 / s0
                loglik -= np.log(s0)
                U -= xbar
                info += s2 / s0 - np.outer(xbar, xbar)
                cumhaz += 1 / s0
                resid[R] -= (c * w[R])[:, None] * (Xc[R] - xbar) / s0
                resid[D] += (Xc[D] - xbar) / d
            baseline.append((level, t, cumhaz))
    var = np.linalg.inv(info)
    codes = np.unique(cluster, return_inverse=True)[1]
    u = np.array([resid[codes == g].sum(axis=0) for g in range(codes.max() + 1)])
    return {"loglik": loglik, "score": U, "var": var, "resid": resid, "baseline": baseline,
            "robust_var": var @ (u.T @ u) @ var}


def close(a, b, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b)))


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("counting", [False, True])
def test_every_sum_equals_the_loop_over_strata(ties, counting):
    X, stop, event, strata, cluster, entry = make_data(counting=counting)
    m = CoxPH(ties=ties).fit(X, stop, event, strata=strata, cluster=cluster, entry=entry)
    ref = reference(X, stop, event, strata, cluster, m.coef_, entry, ties == "efron")
    assert close(m.loglik_, ref["loglik"])
    assert np.max(np.abs(ref["score"])) < 1e-9           # the fitted beta solves U(beta) = 0
    assert close(m.var_, ref["var"])
    assert close(m.score_residuals_, ref["resid"])
    assert close(m.robust_var_, ref["robust_var"])
    base = m.baseline_cumulative_hazard_
    assert list(base["stratum"]) == [b[0] for b in ref["baseline"]]
    assert close(base["time"], [b[1] for b in ref["baseline"]], 0)
    assert close(base["cumhaz"], [b[2] for b in ref["baseline"]])


# Pinned from the per-stratum implementation this one replaced (pipeline/cox.py at commit
# 78fbb0f, one CoxPH(ties).fit(X, stop, event, strata=strata, cluster=cluster, entry=entry)
# on make_data(); printed with repr): coefficients, robust standard errors, log-likelihood.
OLD = {
    ("efron", False): ([-0.05110557602496532, -0.06396790327674451, -0.018727010177797914],
                       [0.2071933833726273, 0.16339937925333906, 0.049681648674641386], -692.544724156067),
    ("efron", True): ([-0.05593185215450658, -0.2682919461200091, 0.008619318366799087],
                      [0.22887754221606996, 0.1456908776805554, 0.052540632774868645], -625.7086244447837),
    ("breslow", False): ([-0.06790077911982131, -0.045512557854320616, -0.021192490530606085],
                         [0.1983465648234301, 0.15261025101060324, 0.048164829963148054], -705.8124031479742),
    ("breslow", True): ([-0.06504162225841223, -0.2445034530023745, 0.005119167589741253],
                        [0.21532241447604006, 0.13457848415629886, 0.04997791295642463], -641.4246158936434),
}


@pytest.mark.parametrize("ties, counting", list(OLD))
def test_numbers_equal_the_per_stratum_implementation(ties, counting):
    X, stop, event, strata, cluster, entry = make_data(counting=counting)
    m = CoxPH(ties=ties).fit(X, stop, event, strata=strata, cluster=cluster, entry=entry)
    coef, robust_se, loglik = OLD[(ties, counting)]
    np.testing.assert_allclose(m.coef_, coef, rtol=TOL)
    np.testing.assert_allclose(m.robust_se_, robust_se, rtol=TOL)
    np.testing.assert_allclose(m.loglik_, loglik, rtol=TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_segment_cumsums_restart_at_each_segment_both_ways(reverse):
    """The zero-padded layout (segments of similar length) and the doubling scan (one long
    segment among many short ones: padding would be large) against one cumsum per segment."""
    lengths = np.array([3, 0, 5, 1, 2] * 800 + [12_000])
    bounds = np.r_[0, np.cumsum(lengths)]
    values = np.sin(np.arange(bounds[-1] * 2, dtype=float)).reshape(-1, 2) + 1.5
    expected = np.concatenate([np.cumsum(values[a:b][::-1], axis=0)[::-1] if reverse else np.cumsum(values[a:b], axis=0)
                               for a, b in zip(bounds[:-1], bounds[1:])])
    for cut in (len(lengths) - 1, len(lengths)):          # without the long segment: padded; with it: scan
        sub = bounds[:cut + 1]
        got = _cumsum_within(values[:sub[-1]], sub, reverse)
        np.testing.assert_allclose(got, expected[:sub[-1]], rtol=1e-13)
