"""CoxPH against R's survival package (numbers pinned), statsmodels and lifelines.

Reference numbers: R 4.2.2, survival 3.5-3, from ``tests/data/reference_cox.R`` on
``tests/data/cox_small.csv`` (60 rows, integer times 1-12 so ties abound, 21 families,
2 strata) and ``tests/data/ag_small.csv`` (15 subjects, 78 (start, stop] rows). R is not
needed to run these tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, CoxTimeVaryingFitter
from statsmodels.duration.hazard_regression import PHReg

from pipeline.cox import CoxPH, km_left_continuous

DATA = Path(__file__).parent / "data"
SMALL = pd.read_csv(DATA / "cox_small.csv")
AG = pd.read_csv(DATA / "ag_small.csv")
RTOL = 1e-8  # R printed 12 significant digits


def fit(ties="efron", **kw):
    return CoxPH(ties=ties).fit(SMALL[["x1", "x2"]], SMALL["time"], SMALL["status"], cluster=SMALL["cid"], **kw)


def test_efron_robust_matches_r():
    # coxph(Surv(time, status) ~ x1 + x2, data=d, ties="efron", cluster=cid)
    m = fit()
    np.testing.assert_allclose(m.coef_, [-0.0604950629144, -0.0443644916182], rtol=RTOL)
    np.testing.assert_allclose(m.se_, [0.323670476209, 0.162571824052], rtol=RTOL)
    np.testing.assert_allclose(m.robust_se_, [0.260333341121, 0.132164587945], rtol=RTOL)
    np.testing.assert_allclose([m.loglik_null_, m.loglik_], [-127.216200782, -127.167583061], rtol=RTOL)


def test_breslow_robust_matches_r():
    # coxph(Surv(time, status) ~ x1 + x2, data=d, ties="breslow", cluster=cid)
    m = fit("breslow")
    np.testing.assert_allclose(m.coef_, [-0.0442163848284, -0.0321010370737], rtol=RTOL)
    np.testing.assert_allclose(m.se_, [0.324775334229, 0.161466033204], rtol=RTOL)
    np.testing.assert_allclose(m.robust_se_, [0.240010061344, 0.124096161239], rtol=RTOL)


def test_stratified_efron_robust_matches_r():
    # coxph(Surv(time, status) ~ x1 + x2 + strata(stratum), data=d, ties="efron", cluster=cid)
    m = fit(strata=SMALL["stratum"])
    np.testing.assert_allclose(m.coef_, [-0.0863750818226, -0.0467332986644], rtol=RTOL)
    np.testing.assert_allclose(m.se_, [0.350923303789, 0.166118774736], rtol=RTOL)
    np.testing.assert_allclose(m.robust_se_, [0.241916171901, 0.137694251702], rtol=RTOL)
    np.testing.assert_allclose(m.loglik_, -100.761588493, rtol=RTOL)


def test_robust_equals_statsmodels_with_breslow_ties():
    m = fit("breslow")
    sm = PHReg(SMALL["time"].to_numpy(), SMALL[["x1", "x2"]].to_numpy(), status=SMALL["status"].to_numpy(),
               ties="breslow").fit(groups=SMALL["cid"].to_numpy())
    np.testing.assert_allclose(m.coef_, sm.params, rtol=1e-6)
    np.testing.assert_allclose(m.robust_se_, sm.bse, rtol=1e-6)


def test_statsmodels_efron_robust_is_not_r():
    """Why the estimator exists: statsmodels' Efron robust SE (no Efron-adjusted residuals)
    is 0.2378 for x1 where R gives 0.2603; ours gives R's."""
    sm = PHReg(SMALL["time"].to_numpy(), SMALL[["x1", "x2"]].to_numpy(), status=SMALL["status"].to_numpy(),
               ties="efron").fit(groups=SMALL["cid"].to_numpy())
    assert abs(sm.bse[0] - 0.260333341121) > 0.01
    assert abs(fit().robust_se_[0] - 0.260333341121) < 1e-8


def test_plain_coefficients_equal_lifelines_and_statsmodels():
    rng = np.random.default_rng(3)
    n = 2000
    X = pd.DataFrame({"a": rng.integers(0, 2, n), "b": rng.normal(size=n), "c": rng.normal(size=n)})
    t = np.ceil(rng.exponential(50 / np.exp(0.5 * X["a"] - 0.3 * X["b"])))  # ties from rounding
    e = (rng.random(n) < 0.8).astype(int)
    ours = CoxPH().fit(X, t, e)
    ll = CoxPHFitter().fit(X.assign(t=t, e=e), "t", "e")  # lifelines uses Efron
    sm = PHReg(t, X.to_numpy(), status=e, ties="efron").fit()
    np.testing.assert_allclose(ours.coef_, ll.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.coef_, sm.params, rtol=1e-6)
    np.testing.assert_allclose(ours.se_, ll.standard_errors_.to_numpy(), rtol=1e-5)


def test_robust_variance_invariant_to_row_order():
    m1 = fit()
    perm = np.random.default_rng(0).permutation(len(SMALL))
    d = SMALL.iloc[perm]
    m2 = CoxPH().fit(d[["x1", "x2"]], d["time"], d["status"], cluster=d["cid"])
    np.testing.assert_allclose(m1.robust_se_, m2.robust_se_, rtol=1e-12)


def test_zph_km_matches_r():
    # z <- cox.zph(coxph(Surv(time, status) ~ x1 + x2, data=d, ties="efron"), transform="km"); z$table
    z = CoxPH().fit(SMALL[["x1", "x2"]], SMALL["time"], SMALL["status"]).zph()
    np.testing.assert_allclose(z["chisq"], [0.452744832223, 3.497560069964, 4.474822929179], rtol=RTOL)
    np.testing.assert_allclose(z["p"], [0.5010343512932, 0.0614593145866, 0.1067344329590], rtol=1e-7)
    assert z["df"].tolist() == [1, 1, 2]


def test_zph_km_stratified_matches_r():
    # cox.zph(coxph(... + strata(stratum), ties="efron", cluster=cid), transform="km")
    z = fit(strata=SMALL["stratum"]).zph()
    np.testing.assert_allclose(z["chisq"], [1.66201195608, 2.60835253528, 4.01974831891], rtol=RTOL)


def test_andersen_gill_matches_r_and_lifelines():
    # coxph(Surv(start, stop, status) ~ x + z, data=a, ties="efron", cluster=id)
    m = CoxPH().fit(AG[["x", "z"]], AG["stop"], AG["status"], entry=AG["start"], cluster=AG["id"])
    np.testing.assert_allclose(m.coef_, [-0.177589991154, 0.0480014450024], rtol=RTOL)
    np.testing.assert_allclose(m.se_, [0.25505539603, 0.119143475261], rtol=RTOL)
    np.testing.assert_allclose(m.robust_se_, [0.155979759268, 0.0602840429729], rtol=RTOL)
    ctv = CoxTimeVaryingFitter().fit(AG[["id", "start", "stop", "status", "x", "z"]], id_col="id",
                                     event_col="status", start_col="start", stop_col="stop")
    np.testing.assert_allclose(m.coef_, ctv.params_.to_numpy(), rtol=1e-6)


def test_pwp_gap_time_matches_r():
    # coxph(Surv(stop - start, status) ~ x + z + strata(enum), data=a, ties="efron", cluster=id)
    m = CoxPH().fit(AG[["x", "z"]], AG["stop"] - AG["start"], AG["status"], strata=AG["enum"], cluster=AG["id"])
    np.testing.assert_allclose(m.coef_, [-0.300407385453, 0.0237561037298], rtol=RTOL)
    np.testing.assert_allclose(m.robust_se_, [0.291057914657, 0.100688193616], rtol=RTOL)


def test_km_left_continuous_by_hand():
    stop = np.array([1.0, 2, 2, 3, 4])
    event = np.array([True, True, False, True, False])
    start = np.full(5, -np.inf)
    # S(1-)=1; S(2-)=4/5; S(3-)=4/5*3/4=0.6; S(5-)=0.6*(1-1/2)=0.3
    got = km_left_continuous(np.array([1.0, 2, 3, 5]), stop, start, event)
    np.testing.assert_allclose(got, [1, 0.8, 0.6, 0.3])
