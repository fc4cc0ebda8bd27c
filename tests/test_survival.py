"""Survival stage: descriptions, models and truth recovery, against hand computation, R and truth.

R numbers: R 4.2.2, survival 3.5-3, ``tests/data/reference_survival.R`` on
``tests/data/cox_small.csv`` (R is not needed to run the tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import config, design, simulate, survival
from pipeline.derive import derive_rereport
from pipeline.nonparametric import aalen_johansen

SMALL = pd.read_csv(Path(__file__).parent / "data" / "cox_small.csv")


def test_km_by_hand_on_ten_rows():
    time = pd.Series([1, 2, 2, 3, 4, 5, 5, 6, 8, 9])
    event = pd.Series([1, 1, 0, 1, 0, 1, 1, 0, 1, 0])
    km = survival.km_table(time, event, min_count=1).set_index("time_days")
    # n at risk 10, 9, 7, 6, 5, 3, 2, 1; S = 9/10, *8/9 = .8, *6/7, (censor), *3/5, (censor), *1/2
    s1 = 0.9
    s2 = s1 * 8 / 9
    s3 = s2 * 6 / 7
    s5 = s3 * 3 / 5
    s8 = s5 * 1 / 2
    assert km["at_risk"].tolist() == [10, 9, 7, 6, 5, 3, 2, 1]
    np.testing.assert_allclose(km.loc[[1, 2, 3, 5, 8], "survival"], [s1, s2, s3, s5, s8])
    np.testing.assert_allclose(km.loc[4, "survival"], s3)           # censoring leaves S unchanged
    np.testing.assert_allclose(km.loc[2, "cumulative_rereport"], 1 - s2)
    # Nelson-Aalen: sum d/n = 1/10 + 1/9 + 1/7 + 2/5 + 1/2 at t = 8
    np.testing.assert_allclose(km.loc[8, "cumulative_hazard"], 1 / 10 + 1 / 9 + 1 / 7 + 2 / 5 + 1 / 2)
    # median: first time S <= 0.5 is t = 5 (S = 0.411)
    from lifelines import KaplanMeierFitter
    assert KaplanMeierFitter().fit(time, event).median_survival_time_ == 5


def test_km_and_loglog_ci_match_r():
    # survfit(Surv(time, status) ~ 1, data=d, conf.type="log-log")
    km = survival.km_table(SMALL["time"], SMALL["status"], min_count=1)
    r_surv = [0.95, 0.914814814815, 0.802796674225, 0.68811143505, 0.68811143505, 0.609470128187,
              0.588453916871, 0.517839446846, 0.414271557477, 0.284811695765, 0.221520207817, 0.0738400692725]
    r_lower = [0.852946764147, 0.807231128751, 0.671669200247, 0.546334544434, 0.546334544434, 0.465236469998,
               0.443785236675, 0.371666074513, 0.27092046013, 0.159001311636, 0.107173181285, 0.0142012175322]
    r_upper = [0.983594919474, 0.963659882096, 0.88583120004, 0.793628129698, 0.793628129698, 0.725843835127,
               0.707445695825, 0.645607613492, 0.551755075415, 0.424095600509, 0.361597169142, 0.20268631342]
    np.testing.assert_allclose(km["survival"], r_surv, rtol=1e-10)
    np.testing.assert_allclose(km["survival_lower"], r_lower, rtol=1e-8)
    np.testing.assert_allclose(km["survival_upper"], r_upper, rtol=1e-8)
    assert km["at_risk"].tolist() == [60, 54, 49, 42, 36, 35, 29, 25, 20, 16, 9, 6]


def test_km_curve_stops_where_few_are_at_risk():
    km = survival.km_table(SMALL["time"], SMALL["status"], min_count=10)
    assert km["at_risk"].min() >= 10 and km["time_days"].max() == 10


def test_logrank_matches_r():
    # survdiff(Surv(time, status) ~ stratum, data=d)$chisq
    out = survival.describe(SMALL.assign(time_days=SMALL["time"], event=SMALL["status"]), ["stratum"], [3], 1)
    np.testing.assert_allclose(out["logrank"]["chisq"].iloc[0], 0.288719728484, rtol=1e-9)


@pytest.mark.parametrize("dist, r_coef, r_log_scale, r_loglik", [
    # survreg(Surv(time, status) ~ x1 + x2, data=d, dist="weibull"), printed with %.10g
    ("weibull", [2.196723402, -0.01143399409, -0.009454555324], -0.6446856507, -120.7099655),
    ("lognormal", [2.026698159, -0.1834280993, -0.08344872499], -0.2584820845, -124.043277),
    ("loglogistic", [2.031645819, -0.1078722518, -0.09158383853], -0.8288520304, -123.792178),
])
def test_parametric_aft_matches_r_survreg(dist, r_coef, r_log_scale, r_loglik):
    """The survival stage's AFT fitter (pipeline.aft; Rossi, robust SEs and a categorical
    covariate in tests/test_aft.py) equals R to the 10 digits printed (lifelines' log-logistic
    fit agreed to 2e-3 only)."""
    m = survival.AFT[dist]().fit(SMALL[["x1", "x2"]], SMALL["time"], SMALL["status"])
    np.testing.assert_allclose(m.coef_, r_coef, rtol=1e-8)
    np.testing.assert_allclose(m.log_scale_, r_log_scale, rtol=1e-8)
    np.testing.assert_allclose(m.loglik_, r_loglik, rtol=1e-9)


def test_aalen_johansen_matches_r_with_ties():
    # survfit(Surv(time, type) ~ 1, data=d) with type censor / a (x1 == 1) / b; R lists time 5
    # (censoring only) too, where the estimates repeat.
    et = np.where(SMALL["status"] == 0, 0, np.where(SMALL["x1"] == 1, 1, 2))
    a = aalen_johansen(SMALL["time"], et, 1).set_index("time")["cif"]
    b = aalen_johansen(SMALL["time"], et, 2).set_index("time")["cif"]
    r_a = [0.05, 0.0675925925926, 0.123601662887, 0.180944282475, 0.220264935906, 0.220264935906,
           0.267341249256, 0.319125193941, 0.319125193941, 0.382416681888, 0.493176785797]
    r_b = [0, 0.0175925925926, 0.0736016628874, 0.130944282475, 0.170264935906, 0.191281147223,
           0.214819303898, 0.266603248583, 0.396063110294, 0.396063110294, 0.43298314493]
    np.testing.assert_allclose(a.to_numpy(), r_a, atol=1e-11)
    np.testing.assert_allclose(b.to_numpy(), r_b, atol=1e-11)
    # With no competing events the cumulative incidence is 1 - KM.
    km = survival.km_table(SMALL["time"], SMALL["status"], 1).set_index("time_days")["survival"]
    only = aalen_johansen(SMALL["time"], SMALL["status"], 1).set_index("time")["cif"]
    np.testing.assert_allclose(only.to_numpy(), 1 - km.reindex(only.index).to_numpy(), atol=1e-12)


def test_aalen_johansen_equals_lifelines_without_ties():
    from lifelines import AalenJohansenFitter
    rng = np.random.default_rng(1)
    t, e = rng.exponential(10, 300), rng.integers(0, 3, 300)
    ours = aalen_johansen(t, e, 1).set_index("time")
    ref = AalenJohansenFitter(calculate_variance=True).fit(t, e, event_of_interest=1)
    np.testing.assert_allclose(ours["cif"], ref.cumulative_density_.iloc[:, 0].reindex(ours.index), atol=1e-12)
    ci = ref.confidence_interval_.reindex(ours.index)
    np.testing.assert_allclose(ours["lower"], np.fmin(ci.iloc[:, 0], ci.iloc[:, 1]), atol=1e-10)


def test_design_matrix_reference_is_commonest_level():
    df = pd.DataFrame({"a": [1, 0, 1], "sex": ["F", "M", "M"], "const": [1, 1, 1]})
    X, ref = design.design_matrix(df, ["a", "const"], ["sex"])
    assert ref == {"sex": "M"} and list(X.columns) == ["a", "sex[F]"]


def test_recurrent_rows_by_hand():
    df = pd.DataFrame({
        "child_id": ["c", "c", "d"],
        "origin_date": pd.to_datetime(["2020-01-01", "2020-03-01", "2020-01-10"]),
        "time_days": [40, 100, 30], "event": [1, 0, 0]})
    d, overlapping = survival.recurrent_data(df)
    # c: (0, 40], then a gap (open case), then (60, 160]; d: (0, 30]
    assert d[["start", "stop"]].values.tolist() == [[0, 40], [60, 160], [0, 30]]
    assert d["episode_stratum"].tolist() == ["1", "2", "1"] and overlapping == 0


def test_ph_advice_names_the_violation():
    table = pd.DataFrame({"chisq": [9.0, 0.1, 9.1], "df": [1, 1, 2], "p": [0.002, 0.75, 0.01]},
                         index=pd.Index(["age", "sex", "GLOBAL"], name="covariate"))
    out = survival.ph_advice(table, 0.05)
    assert out.loc["age", "violated"] and "changes over follow-up" in out.loc["age", "advice"]
    assert not out.loc["sex", "violated"]
    # Holm by hand: sorted p 0.002, 0.75 -> 0.002 x 2 = 0.004; max(0.75 x 1, 0.004) = 0.75
    assert out.loc["age", "p_holm"] == pytest.approx(0.004) and out.loc["sex", "p_holm"] == pytest.approx(0.75)


def test_ph_advice_global_test_first_and_holm():
    # Global test does not reject: no covariate flagged, even one with p = 0.01 on its own.
    quiet = pd.DataFrame({"chisq": [6.6, 0.1, 0.2, 6.9], "df": [1, 1, 1, 3], "p": [0.01, 0.75, 0.65, 0.075]},
                         index=pd.Index(["a", "b", "c", "GLOBAL"], name="covariate"))
    out = survival.ph_advice(quiet, 0.05)
    assert not out["violated"].any() and "global test does not reject" in out.loc["a", "advice"]
    # Global rejects. Holm by hand, 3 tests: sorted 0.001 x 3 = 0.003 (d); 0.03 x 2 = 0.06 (a);
    # max(0.75 x 1, 0.06) = 0.75 (b). a (0.03 on its own) is not flagged; d is.
    loud = pd.DataFrame({"chisq": [4.7, 0.1, 11.0, 16.0], "df": [1, 1, 1, 3], "p": [0.03, 0.75, 0.001, 0.001]},
                        index=pd.Index(["a", "b", "d", "GLOBAL"], name="covariate"))
    out = survival.ph_advice(loud, 0.05)
    assert out["violated"].to_dict() == {"a": False, "b": False, "d": True, "GLOBAL": True}
    assert out.loc["a", "p_holm"] == pytest.approx(0.06) and out.loc["d", "p_holm"] == pytest.approx(0.003)
    assert out.loc["b", "p_holm"] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def stage_output(params):
    extract = simulate.simulate(params)
    df, _ = derive_rereport(extract.children, extract.referrals, extract.plans,
                            extract_date=config.extract_date(params))
    return survival.run(df, params["survival"], params["disclosure"]["min_cell_count"], extract.truth)


def test_truth_recovered_on_the_synthetic_default(stage_output):
    """20 covariates carry a known truth (10 simulated effects, 10 categorical indicators with
    no simulated effect). With correct 95% intervals the number covering is Binomial(20,
    0.95): P(>= 17) = 0.984. We require 17."""
    tables, metrics, _ = stage_output
    hr = tables["hazard_ratios"]
    known = hr[hr["true_in_ci"].notna()]
    assert len(known) == 20
    assert known["true_in_ci"].astype(bool).sum() >= 17, hr[["covariate", "hr", "hr_lower", "hr_upper", "true_hr"]]
    # The strong effects are each estimated within 10% of their true hazard ratio.
    strong = hr.set_index("covariate").loc[["financial_problems", "no_service", "low_social_support"]]
    np.testing.assert_allclose(strong["hr"], strong["true_hr"], rtol=0.1)


def test_stage_outputs_are_complete(stage_output, params):
    tables, metrics, model = stage_output
    for name in ("km_overall", "km_by_group", "cumulative_rereport", "logrank", "hazard_ratios", "ph_tests",
                 "parametric_models", "parametric_predictions", "recurrent_models", "competing_cif",
                 "cause_specific_hazard_ratios", "plot_curves"):
        assert name in tables and len(tables[name]), name
    cum = tables["cumulative_rereport"]
    assert set(cum["horizon_months"]) == set(params["survival"]["horizons_months"])
    overall = cum[cum["variable"] == "all"]["cumulative_rereport"].to_numpy()
    assert np.all(np.diff(overall) > 0)                      # cumulative: increasing
    assert set(tables["parametric_models"]["model"]) == {"weibull", "lognormal", "loglogistic"}
    # The simulated baseline is Weibull (and a Weibull PH model is a Weibull AFT model), so
    # AIC must prefer the Weibull fit.
    assert metrics["parametric_best_by_aic"] == "weibull"
    assert set(tables["recurrent_models"]["model"]) == {"andersen_gill", "pwp_gap_time"}
    assert set(tables["competing_cif"]["cause"]) == {"re_referral", "entered_care", "age_18"}
    assert 0.5 < metrics["cox"]["concordance"] < 1
    # Small groups are suppressed: no count below the threshold anywhere.
    for name in ("cumulative_rereport",):
        counts = tables[name][["n", "events"]].to_numpy(dtype=float)
        assert np.all(np.isnan(counts) | (counts >= params["disclosure"]["min_cell_count"]))
    # The cause-specific model for re-referral is the main model (competitors censored).
    cs = tables["cause_specific_hazard_ratios"]
    main = tables["hazard_ratios"].set_index("covariate")["coef"]
    np.testing.assert_allclose(cs[cs["cause"] == "re_referral"].set_index("covariate")["coef"], main)


def test_nelson_aalen_standard_error_equals_r_survfit():
    """R 4.2.2, survival 3.4-0:
      t <- c(1,2,2,3,4,4,4,5,6,7,8,8,9,10,12); e <- c(1,1,0,1,1,1,0,1,0,1,1,1,0,1,0)
      f <- survfit(Surv(t, e) ~ 1); f$cumhaz; f$std.chaz
    (std.chaz = sqrt(sum d / n^2); lifelines' Nelson-Aalen variance differs in the tail)."""
    from pipeline.nonparametric import nelson_aalen

    t = [1, 2, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 9, 10, 12]
    e = [1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0]
    na = nelson_aalen(t, e)
    assert na["time_days"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert na["at_risk"].tolist() == [15, 14, 12, 11, 8, 7, 6, 5, 3, 2, 1]
    np.testing.assert_allclose(na["cumulative_hazard"], [
        0.0666666666667, 0.1380952380952, 0.2214285714286, 0.4032467532468, 0.5282467532468, 0.5282467532468,
        0.6949134199134, 1.0949134199134, 1.0949134199134, 1.5949134199134, 1.5949134199134], atol=1e-12)
    np.testing.assert_allclose(na["cumhaz_se"], [
        0.0666666666667, 0.0977061168033, 0.1284170148587, 0.1817136630115, 0.2205557873307, 0.2205557873307,
        0.2764464380361, 0.3955030127607, 0.3955030127607, 0.6375128493629, 0.6375128493629], atol=1e-12)
    # the interval is log-symmetric: H exp(+-1.96 se / H)
    np.testing.assert_allclose(np.log(na["cumhaz_upper"]) - np.log(na["cumulative_hazard"]),
                               1.959963984540054 * na["cumhaz_se"] / na["cumulative_hazard"], rtol=1e-12)


def test_lone_withheld_number_at_risk_gets_secondary_suppression():
    """At 12 months (365.25 days), worked by hand: group a (12 rows) has one event at day 30,
    8 rows followed 400 days and 3 censored at 100: 8 at risk, withheld (below 10). b (30 rows):
    one event at 30, 29 followed 500 days: 29 at risk. c (30 rows): one event at 30, 19
    followed 500 days, 10 censored at 100: 19 at risk. All: 56 at risk. All minus b minus c
    would give a's 8 back, so c (the smaller published one) is withheld too. Found by the
    output-checking stage (ACRO-style differencing) on the default's 16-17 age band."""
    rows = [("a", 400 if i < 9 else 100, 0) for i in range(12)] + \
        [("b", 500, 0) for _ in range(30)] + [("c", 500 if i < 20 else 100, 0) for i in range(30)]
    df = pd.DataFrame(rows, columns=["g", "time_days", "event"])
    df.loc[[0, 12, 42], ["time_days", "event"]] = [30, 1]     # the first row of each group: an event at day 30
    out = survival.describe(df, ["g"], [12], 10)["cumulative_rereport"].set_index("level")
    assert out.loc["all", "at_risk"] == 8 + 29 + 19
    assert np.isnan(out.loc["a", "at_risk"]) and out.loc["b", "at_risk"] == 29
    assert np.isnan(out.loc["c", "at_risk"])     # would be all - a - b otherwise
