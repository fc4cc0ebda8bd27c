"""Calibration measures against R's rms::val.prob (numbers pinned; R is not needed to run this).

Reference: R 4.2.2, rms 6.5.0, ``tests/data/ref_valprob.R`` on ``tests/data/valprob_small.csv``
(300 predictions, deliberately miscalibrated: true intercept 0.3, slope 0.8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.scoring import lowess_calibration, val_prob

D = pd.read_csv(Path(__file__).parent / "data" / "valprob_small.csv")


def test_val_prob_matches_rms():
    # v <- val.prob(d$p, d$y, pl=FALSE)
    v = val_prob(D["p"], D["y"])
    assert v["intercept"] == pytest.approx(0.256149240596, rel=1e-8)
    assert v["slope"] == pytest.approx(0.820018166999, rel=1e-8)
    assert v["emax"] == pytest.approx(0.104659853286, rel=1e-9)
    assert v["e90"] == pytest.approx(0.0932255789351, rel=1e-9)
    assert v["eavg"] == pytest.approx(0.0716368784293, rel=1e-9)
    assert v["brier"] == pytest.approx(0.203082120658, rel=1e-10)
    assert v["spiegelhalter_z"] == pytest.approx(2.9865512682, rel=1e-9)
    assert v["spiegelhalter_p"] == pytest.approx(0.00282143525425, rel=1e-8)


def test_c_statistic_is_exact():
    """val.prob's 'C (ROC)' (0.736051299) comes from lrm.fit, which rounds predictions
    before ranking; the exact value is Hmisc::somers2(d$p, d$y)["C"] = 0.736027637121."""
    v = val_prob(D["p"], D["y"])
    assert v["c"] == pytest.approx(0.736027637121, rel=1e-10)
    assert v["dxy"] == pytest.approx(0.472055274242, rel=1e-10)


def test_calibration_in_the_large_matches_glm_offset():
    # coef(glm(d$y ~ offset(qlogis(d$p)), family=binomial))
    assert val_prob(D["p"], D["y"])["citl"] == pytest.approx(0.401722185294, rel=1e-8)


def test_lowess_smooth_matches_r():
    # lowess(d$p, d$y, iter=0): first six fitted values at the six smallest p
    order = np.argsort(D["p"].to_numpy(), kind="stable")
    fitted = lowess_calibration(D["p"], D["y"])[order][:6]
    r = [0.1048780529, 0.1064802203, 0.1073418977, 0.1084700089, 0.1086838688, 0.1088620854]
    np.testing.assert_allclose(fitted, r, rtol=1e-8)


def test_a_calibrated_model_looks_calibrated():
    rng = np.random.default_rng(2)
    p = 1 / (1 + np.exp(-rng.normal(-1, 1.2, 20_000)))
    y = (rng.random(len(p)) < p).astype(int)
    v = val_prob(p, y)
    assert v["slope"] == pytest.approx(1, abs=0.05) and abs(v["citl"]) < 0.05
    assert v["eavg"] < 0.01 and abs(v["observed_expected"] - 1) < 0.03


def test_probabilities_must_be_inside_zero_one():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        val_prob([0.0, 0.5], [0, 1])


def test_decile_table_by_hand():
    from pipeline.calibration import decile_table
    p = np.linspace(0.05, 0.95, 100)
    y = (np.arange(100) % 2).astype(float)
    t = decile_table(p, y, min_count=1)
    assert t["n"].tolist() == [10] * 10 and t["observed_events"].sum() == 50
    np.testing.assert_allclose(t["expected_events"].sum(), p.sum())
    assert t["mean_predicted"].is_monotonic_increasing
    # Withheld below the threshold: 5 events per tenth < 6.
    assert decile_table(p, y, min_count=6)["observed_events"].isna().all()


def test_curve_of_a_calibrated_model_follows_the_diagonal():
    from pipeline.calibration import curve
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.6, 20_000)
    y = (rng.random(len(p)) < p).astype(float)
    c = curve(p, y, family=np.arange(len(p)) // 2, replicates=100, seed=1)
    assert np.max(np.abs(c["observed"] - c["ideal"])) < 0.03
    assert (c["lower"] <= c["observed"]).all() and (c["observed"] <= c["upper"]).all()
    # Under perfect calibration the diagonal lies inside the 95% band almost everywhere.
    assert ((c["lower"] <= c["ideal"]) & (c["ideal"] <= c["upper"])).mean() > 0.85


def _predictions(n=20_000, seed=8, shift=0.0):
    rng = np.random.default_rng(seed)
    lp = rng.normal(-1, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    p = 1 / (1 + np.exp(-(shift + 1.6 * lp)))           # miscalibrated: too extreme, shifted
    return pd.DataFrame({"p": p, "y": y, "family": np.arange(n) // 2,
                         "sex": rng.choice(["F", "M"], n), "la_code": rng.choice(["LA01", "LA02", "LA99"], n,
                                                                                  p=[0.5, 0.4999, 0.0001])})


def test_recalibration_repairs_a_miscalibrated_model():
    from pipeline.calibration import recalibration
    out = recalibration(_predictions(shift=0.5), seed=1).set_index("method")
    assert out.loc["original", "slope"] < 0.7 and out.loc["original", "ici"] > 0.05
    for m in ("logistic_recalibration", "isotonic_recalibration"):
        assert out.loc[m, "ici"] < out.loc["original", "ici"] / 3
        assert abs(out.loc[m, "citl"]) < 0.05
    assert out.loc["logistic_recalibration", "slope"] == pytest.approx(1, abs=0.06)
    # Recalibration is monotone: it cannot change discrimination (isotonic ties aside).
    assert out.loc["logistic_recalibration", "c"] == pytest.approx(out.loc["original", "c"], abs=1e-12)


def test_subgroup_calibration_withholds_small_groups():
    from pipeline.calibration import subgroup_calibration
    out = subgroup_calibration(_predictions(), min_count=10).set_index(["variable", "level"])
    assert out.loc[("sex", "F"), "n"] > 1000 and out.loc[("sex", "F"), "slope"] == pytest.approx(1 / 1.6, abs=0.05)
    assert np.isnan(out.loc[("la_code", "LA99"), "n"]) and np.isnan(out.loc[("la_code", "LA99"), "slope"])


def test_rcs_basis_is_linear_beyond_the_outer_knots():
    from pipeline.splines import rcs_basis
    knots = np.array([0.0, 1.0, 3.0])
    x = np.array([4.0, 5.0, 6.0, 7.0])
    b = rcs_basis(x, knots)
    # Second differences vanish past the last knot (restricted: linear tails).
    np.testing.assert_allclose(np.diff(b[:, 1], 2), 0, atol=1e-12)
    assert rcs_basis(np.array([-1.0, 0.0]), knots)[:, 1].tolist() == [0.0, 0.0]


def _weibull_data(n=20_000, seed=9):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    lp = 0.8 * x
    shape, scale = 0.8, 900.0
    t = scale * (rng.exponential(size=n) / np.exp(lp)) ** (1 / shape)
    c = rng.uniform(200, 1500, n)
    time, event = np.minimum(t, c), (t <= c).astype(int)
    true_risk = 1 - np.exp(-((365 / scale) ** shape) * np.exp(lp))
    return true_risk, time, event


def test_survival_calibration_of_true_and_distorted_risks():
    """True risks from a known Weibull PH model are calibrated (ICI < 0.01); risks inflated
    by half are not, and the estimated observed risk tracks the truth."""
    from pipeline.calibration import observed_by_risk_tenth, survival_calibration
    risk, time, event = _weibull_data()
    rows = pd.DataFrame({"time_days": time, "event": event})
    good, curve = survival_calibration(risk, rows, 365)
    assert good["ici"] < 0.01 and abs(good["mean_observed"] - risk.mean()) < 0.01
    assert abs(good["slope"] - 1) < 0.1 and abs(good["observed_expected"] - 1) < 0.03
    bad, _ = survival_calibration(np.minimum(risk * 1.5, 0.99), rows, 365)
    assert bad["ici"] > 0.05 and abs(bad["mean_observed"] - risk.mean()) < 0.015 and bad["observed_expected"] < 0.75
    deciles = observed_by_risk_tenth(risk, rows, 365, 10)
    np.testing.assert_allclose(deciles["observed"], deciles["mean_predicted"], atol=0.04)
    assert (deciles["observed_lower"] <= deciles["observed"]).all()


def test_survival_calibration_counts_competing_ends_as_no():
    """Exponential cause-specific hazards: re-referral l1 exp(x), a competing end l2. The true
    risk by H is the cumulative incidence l1e / (l1e + l2) (1 - exp(-(l1e + l2) H)); the
    cause-specific 1 - exp(-l1e H) (competing ends censored) overstates it. The observed
    risk (Aalen-Johansen, competing ends a "no") finds the first calibrated, the second not;
    and the observed share equals the Aalen-Johansen estimate exactly."""
    from pipeline.calibration import survival_calibration
    from pipeline.nonparametric import aalen_johansen, step_read
    rng = np.random.default_rng(4)
    n, horizon, l1, l2 = 30_000, 365.0, 1 / 700, 1 / 500
    x = rng.normal(size=n)
    l1e = l1 * np.exp(0.7 * x)
    t1, t2, c = rng.exponential(1 / l1e), rng.exponential(1 / l2, n), rng.uniform(100, 1200, n)
    time = np.ceil(np.minimum.reduce([t1, t2, c]))
    kind = np.where(t1 <= np.minimum(t2, c), "re_referral", np.where(t2 <= c, "entered_care", "extract_date"))
    rows = pd.DataFrame({"time_days": time, "event": (kind == "re_referral") * 1, "event_type": kind})
    cif = l1e / (l1e + l2) * (1 - np.exp(-(l1e + l2) * horizon))
    cause_specific = 1 - np.exp(-l1e * horizon)
    good, _ = survival_calibration(cif, rows, horizon)
    bad, _ = survival_calibration(cause_specific, rows, horizon)
    assert abs(good["observed_expected"] - 1) < 0.03 and good["ici"] < 0.015
    assert bad["observed_expected"] < 0.8 and bad["ici"] > 0.05
    aj = aalen_johansen(time, np.where(kind == "re_referral", 1, np.where(kind == "entered_care", 2, 0)), 1)
    np.testing.assert_allclose(good["mean_observed"], step_read(aj["time"], aj["cif"], horizon, 0.0)[0], rtol=1e-12)


def test_delong_ci_matches_proc():
    # r <- roc(d$y, d$p, direction="<"); ci.auc(r, method="delong"); var(r, method="delong")  (pROC 1.18.0)
    from pipeline.scoring import delong_auc
    auc, var, lo, hi = delong_auc(D["p"], D["y"])
    assert auc == pytest.approx(0.736027637121, rel=1e-10)
    assert var == pytest.approx(0.000888071739871, rel=1e-9)
    assert (lo, hi) == (pytest.approx(0.677619666616, rel=1e-9), pytest.approx(0.794435607626, rel=1e-9))
    v = val_prob(D["p"], D["y"])
    assert (v["c_lower"], v["c_upper"]) == (pytest.approx(lo), pytest.approx(hi))
    ybar = D["y"].mean()
    assert v["scaled_brier"] == pytest.approx(1 - 0.203082120658 / (ybar * (1 - ybar)), rel=1e-9)


def test_weighted_measures_equal_measures_on_repeated_rows():
    """Integer weights (a bootstrap replicate's family multiplicities) give exactly the
    measures of the repeated rows: weighted Newton, AUC, type-7 quantiles and smooth."""
    rng = np.random.default_rng(8)
    p = 1 / (1 + np.exp(-rng.normal(-1, 1, 3000)))
    y = (rng.random(3000) < np.clip(p * 1.2, 0, 1)).astype(float)
    w = rng.integers(0, 4, 3000)
    weighted = val_prob(p, y, w, intervals=False)
    repeated = val_prob(np.repeat(p, w), np.repeat(y, w), intervals=False)
    for k in ("observed_expected", "citl", "intercept", "slope", "emax", "e90", "e50", "eavg", "brier",
              "scaled_brier", "c", "dxy"):
        assert weighted[k] == pytest.approx(repeated[k], rel=1e-9, abs=1e-12), k
    assert np.isnan(weighted["spiegelhalter_z"]) and np.isnan(weighted["c_lower"])


def test_weighted_newton_and_auc_match_statsmodels_and_sklearn():
    import statsmodels.api as sm
    from scipy import special
    from sklearn.metrics import roc_auc_score

    from pipeline.scoring import c_statistic, logistic_recalibration

    rng = np.random.default_rng(9)
    p = 1 / (1 + np.exp(-rng.normal(-1, 1, 2000)))
    y = (rng.random(2000) < p).astype(float)
    w = rng.uniform(0.5, 3, 2000)                       # IPCW-like, not integers
    lp = special.logit(p)
    glm = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial(), freq_weights=w).fit()
    np.testing.assert_allclose(logistic_recalibration(lp, w * y, w), glm.params, rtol=1e-9)
    offset = sm.GLM(y, np.ones((2000, 1)), family=sm.families.Binomial(), offset=lp, freq_weights=w).fit()
    assert logistic_recalibration(lp, w * y, w, slope=False)[0] == pytest.approx(offset.params[0], rel=1e-9)
    assert c_statistic(np.round(p, 2), y, w) == pytest.approx(roc_auc_score(y, np.round(p, 2), sample_weight=w),
                                                               rel=1e-12)


def test_ipcw_calibration_recovers_truth_where_dropping_censored_rows_does_not():
    """Known truth: exponential re-report times with risk 1 - exp(-rate H) at horizon H and
    independent censoring before H. Weighted by inverse probability of censoring, the true
    risks look calibrated; scoring only rows with a known status, unweighted, they do not
    (rows censored early are mostly non-events, so dropping them inflates the event rate)."""
    from pipeline.outcome import binary_outcome

    rng = np.random.default_rng(12)
    n, horizon = 40_000, 365.0
    rate = np.exp(rng.normal(np.log(0.5 / horizon), 0.8, n))
    t_event = rng.exponential(1 / rate)
    t_censor = rng.uniform(0, 2.5 * horizon, n)
    df = pd.DataFrame({"time_days": np.minimum(t_event, t_censor), "event": (t_event <= t_censor).astype(int)})
    df["event_type"] = np.where(df["event"] == 1, "re_referral", "extract_date")
    truth = 1 - np.exp(-rate * horizon)
    out, _ = binary_outcome(df, horizon, "ipcw")
    p = truth[out.index.to_numpy()]
    ipcw = val_prob(p, out["y"], out["weight"])
    naive = val_prob(p, out["y"])
    assert ipcw["observed_expected"] == pytest.approx(1, abs=0.03)
    assert ipcw["citl"] == pytest.approx(0, abs=0.06) and ipcw["slope"] == pytest.approx(1, abs=0.08)
    assert ipcw["eavg"] < 0.015
    assert naive["observed_expected"] > 1.1 and naive["eavg"] > 2 * ipcw["eavg"]


def test_recalibration_newton_survives_hard_cases():
    """Badly miscalibrated predictions (true slope 0.2, lp spread 2.5) once broke a plain
    Newton from (0, 1); with step halving it matches statsmodels. Separation and a single
    distinct prediction have no finite maximum: NaN with a warning, not a crash."""
    import statsmodels.api as sm
    from scipy import special

    from pipeline.scoring import logistic_recalibration

    rng = np.random.default_rng(21)
    lp = rng.normal(0, 2.5, 4000)
    y = (rng.random(4000) < special.expit(0.2 * lp)).astype(float)
    w = np.ones(4000)
    glm = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    np.testing.assert_allclose(logistic_recalibration(lp, y, w), glm.params, rtol=1e-8)
    with pytest.warns(RuntimeWarning, match="no finite maximum"):
        assert np.isnan(logistic_recalibration(lp, (lp > 0).astype(float), w)).all()
    with pytest.warns(RuntimeWarning):
        assert np.isnan(logistic_recalibration(np.zeros(50), np.r_[np.ones(20), np.zeros(30)], np.ones(50))).all()


def test_weighted_decile_table_compares_like_with_like():
    """With weights, observed and expected events are on the same footing: true risks give
    totals within a few percent (raw event counts against weighted expectations did not)."""
    from pipeline.calibration import decile_table

    rng = np.random.default_rng(4)
    p = 1 / (1 + np.exp(-rng.normal(-1, 1, 20_000)))
    y = (rng.random(20_000) < p).astype(float)
    w = np.where(y == 1, 1.0, 1.6)            # non-events under-represented, weighted back
    keep = (y == 1) | (rng.random(20_000) < 1 / 1.6)
    table = decile_table(p[keep], y[keep], 10, weights=w[keep])
    assert table["observed_events"].sum() == pytest.approx(table["expected_events"].sum(), rel=0.04)
