"""Intervals of the calibration measures and the noise floor (pipeline/calibration_uncertainty.py).

R references: R 4.2.2, rms 6.5-0, sandwich 3.0-2, ``tests/data/ref_calibration_intervals.R`` on
``tests/data/valprob_small.csv`` (300 predictions, true intercept 0.3 and slope 0.8), with
families of three consecutive rows and weights 0.5, 1, 1.5, 2 repeating (both written out
in the script). R is not needed to run these tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from pipeline import calibration_uncertainty as cu

D = pd.read_csv(Path(__file__).parent / "data" / "valprob_small.csv")
N = len(D)
FAMILY = np.arange(N) // 3                      # R: (seq_len(nrow(d)) - 1) %/% 3
WEIGHT = 0.5 + (np.arange(N) % 4) * 0.5         # R: 0.5 + ((seq_len(nrow(d)) - 1) %% 4) * 0.5
Z = stats.norm.ppf(0.975)


def se(out: dict, name: str) -> float:
    """The standard error behind a Wald interval (O/E: of log O/E)."""
    if name == "observed_expected":
        return float(np.log(out[f"{name}_upper"] / out[name]) / Z)
    return (out[f"{name}_upper"] - out[name]) / Z


def test_model_based_intervals_are_val_prob_ci_2s():
    """val.prob.ci.2 prints confint() of its lrm.fit fits (Wald). lrm evaluates the
    information at the maximum, as we do; glm's vcov is from its last IRLS weights, one
    step behind, so glm agrees to about 1e-5 only."""
    out = cu.wald_intervals(D["p"], D["y"])
    # confint(lrm.fit(lp, d$y))[2, ]
    assert (out["slope_lower"], out["slope_upper"]) == (pytest.approx(0.564957657425, rel=1e-8),
                                                        pytest.approx(1.07507867657, rel=1e-8))
    # confint(lrm.fit(offset = lp, y = d$y))
    assert (out["citl_lower"], out["citl_upper"]) == (pytest.approx(0.139113360508, rel=1e-8),
                                                      pytest.approx(0.664331004116, rel=1e-8))
    # confint.default(glm(d$y ~ lp, binomial))[2, ]; confint.default(glm(d$y ~ offset(lp), binomial))
    assert out["slope"] == pytest.approx(0.820018168499, rel=1e-8)
    assert (out["slope_lower"], out["slope_upper"]) == (pytest.approx(0.564957664973, rel=1e-6),
                                                        pytest.approx(1.07507867202, rel=1e-6))
    assert out["citl"] == pytest.approx(0.401722185294, rel=1e-7)
    assert (out["citl_lower"], out["citl_upper"]) == (pytest.approx(0.139117429306, rel=1e-4),
                                                      pytest.approx(0.664326941282, rel=1e-5))
    # O/E: sum(d$y) / sum(d$p) * exp(c(-1, 1) * qnorm(0.975) / sqrt(sum(d$y)))
    assert out["observed_expected"] == pytest.approx(1.23529093733, rel=1e-9)
    assert (out["observed_expected_lower"], out["observed_expected_upper"]) == (
        pytest.approx(1.0272944686, rel=1e-9), pytest.approx(1.48540048256, rel=1e-9))
    # the same as exp(confint.default(glm(d$y ~ offset(log(d$p)), family = poisson)))
    assert out["observed_expected_lower"] == pytest.approx(1.0272961364, rel=1e-5)


def test_cluster_robust_and_weighted_intervals_match_r_sandwich():
    # sqrt(diag(vcovCL(f, cluster = family))) for the three glm fits of the R script
    out = cu.wald_intervals(D["p"], D["y"], cluster=FAMILY)
    assert se(out, "slope") == pytest.approx(0.13432619805, rel=1e-6)
    assert se(out, "citl") == pytest.approx(0.131673059588, rel=1e-5)
    assert se(out, "observed_expected") == pytest.approx(0.0658157233041, rel=1e-8)
    # weights = w (binomial with non-integer weights: the weighted maximum likelihood)
    weighted = cu.wald_intervals(D["p"], D["y"], WEIGHT)
    assert weighted["slope"] == pytest.approx(0.868883386552, rel=1e-8)
    assert weighted["citl"] == pytest.approx(0.463802162072, rel=1e-8)
    assert weighted["observed_expected"] == pytest.approx(1.27438554202, rel=1e-9)
    assert se(weighted, "slope") == pytest.approx(0.119313600309, rel=1e-6)     # sqrt(diag(vcov(ws)))
    assert se(weighted, "citl") == pytest.approx(0.11895486259, rel=1e-6)
    assert se(weighted, "observed_expected") == pytest.approx(0.0827600589307, rel=1e-4)   # glm one IRLS step behind
    both = cu.wald_intervals(D["p"], D["y"], WEIGHT, cluster=FAMILY)
    assert se(both, "slope") == pytest.approx(0.153767431712, rel=1e-6)
    assert se(both, "citl") == pytest.approx(0.144839132642, rel=1e-6)
    assert se(both, "observed_expected") == pytest.approx(0.0709863100244, rel=1e-6)


def test_intervals_match_statsmodels_glm():
    """Independent implementation: statsmodels GLM (logit with offset; Poisson with log(p)
    as offset), frequency weights, cluster covariance without its (N-1)/(N-K) factor."""
    import statsmodels.api as sm

    lp, y, log_p = special.logit(D["p"].to_numpy()), D["y"].to_numpy(), np.log(D["p"].to_numpy())
    groups = FAMILY.max() + 1
    for weights, cluster in ((None, None), (WEIGHT, None), (None, FAMILY), (WEIGHT, FAMILY)):
        kw = {} if weights is None else {"freq_weights": weights}
        fit = (lambda m: m.fit() if cluster is None else m.fit(cov_type="cluster",
                                                            cov_kwds={"groups": cluster, "use_correction": False}))
        factor = 1.0 if cluster is None else np.sqrt(groups / (groups - 1))
        slope = fit(sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial(), **kw))
        citl = fit(sm.GLM(y, np.ones((N, 1)), family=sm.families.Binomial(), offset=lp, **kw))
        oe = fit(sm.GLM(y, np.ones((N, 1)), family=sm.families.Poisson(), offset=log_p, **kw))
        out = cu.wald_intervals(D["p"], D["y"], weights, cluster)
        assert out["slope"] == pytest.approx(slope.params[1], rel=1e-8)
        assert se(out, "slope") == pytest.approx(slope.bse[1] * factor, rel=1e-6)
        assert out["citl"] == pytest.approx(citl.params[0], rel=1e-8)
        assert se(out, "citl") == pytest.approx(citl.bse[0] * factor, rel=1e-6)
        assert out["observed_expected"] == pytest.approx(np.exp(oe.params[0]), rel=1e-8)
        assert se(out, "observed_expected") == pytest.approx(oe.bse[0] * factor, rel=1e-6)


def test_zero_weight_rows_and_their_families_are_left_out():
    w = WEIGHT.copy()
    w[:30] = 0
    left_out = cu.wald_intervals(D["p"], D["y"], w, FAMILY)
    dropped = cu.wald_intervals(D["p"][30:], D["y"][30:], w[30:], FAMILY[30:])
    for k, v in dropped.items():
        assert left_out[k] == pytest.approx(v, rel=1e-12), k


def _coverage(simulate, replicates: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {}
    for _ in range(replicates):
        p, y, cluster, truth = simulate(rng)
        for variance, c in (("model", None), ("cluster", cluster)):
            if variance == "cluster" and cluster is None:
                continue
            out = cu.wald_intervals(p, y, cluster=c)
            for name, true in truth.items():
                hits.setdefault(f"{name}/{variance}", []).append(out[f"{name}_lower"] <= true <= out[f"{name}_upper"])
    return {k: float(np.mean(v)) for k, v in hits.items()}


def test_intervals_cover_the_true_slope_and_citl():
    """400 validation sets of 250 rows: true risk expit(a + b logit p). Slope: b = 0.8;
    CITL: with b = 1 the offset model is the truth, so CITL = a = 0.3; O/E: the expected
    number of events under the truth over sum p. Binomial standard error of a 95% coverage
    from 400 sets: 0.011. The Poisson-type O/E interval ignores that y is binary: wider by
    1/sqrt(1 - ybar), coverage about P(|Z| < 1.96 / sqrt(0.72)) = 0.979 here."""
    def simulate(b):
        def draw(rng):
            p = special.expit(rng.normal(-1.2, 0.9, 250))
            true = special.expit(0.3 + b * special.logit(p))
            y = (rng.random(250) < true).astype(float)
            truth = {"slope": b} if b != 1 else {"citl": 0.3, "observed_expected": true.sum() / p.sum()}
            return p, y, np.arange(250), truth
        return draw

    slope = _coverage(simulate(0.8), 400, 1)
    citl = _coverage(simulate(1.0), 400, 2)
    print("coverage", slope, citl)
    assert 0.92 <= slope["slope/model"] <= 0.98
    assert 0.92 <= citl["citl/model"] <= 0.98
    assert 0.92 <= citl["observed_expected/cluster"] <= 0.98     # one row per cluster: the sandwich
    assert citl["observed_expected/model"] >= 0.96                # conservative, as said


def test_family_clusters_need_the_robust_variance():
    """100 families of four: risk partly shared (family and row parts of the logit) and a
    shared random effect (sd 1.5) on the truth, so rows are not independent. 300 sets:
    the model-based CITL interval covers the truth (the marginal CITL, from 300 sets pooled)
    in about 84% of sets, the family sandwich in about 93%."""
    def draw(rng):
        families = np.repeat(np.arange(100), 4)
        lp = rng.normal(-1, 0.8, 100)[families] + rng.normal(0, 0.6, 400)
        effect = rng.normal(0, 1.5, 100)[families]
        y = (rng.random(400) < special.expit(lp + effect)).astype(float)
        return special.expit(lp), y, families

    rng = np.random.default_rng(5)
    big = [draw(rng) for _ in range(300)]
    truth = cu.wald_intervals(np.concatenate([b[0] for b in big]), np.concatenate([b[1] for b in big]))
    cover: dict[tuple[str, str], list[bool]] = {}
    for p, y, families in (draw(rng) for _ in range(300)):
        for variance, c in (("model", None), ("cluster", families)):
            out = cu.wald_intervals(p, y, cluster=c)
            for k in ("citl", "slope", "observed_expected"):
                cover.setdefault((k, variance), []).append(out[f"{k}_lower"] <= truth[k] <= out[f"{k}_upper"])
    rate = {k: float(np.mean(v)) for k, v in cover.items()}
    print("coverage with families:", rate)
    assert rate[("citl", "model")] < 0.89 and 0.90 <= rate[("citl", "cluster")] <= 0.98
    assert all(0.90 <= rate[(k, "cluster")] <= 0.98 for k in ("slope", "observed_expected"))


def test_smoothed_errors_are_val_probs():
    from pipeline.calibration import val_prob

    rng = np.random.default_rng(3)
    p = special.expit(rng.normal(-1, 1, 2000))
    y = (rng.random(2000) < p * 1.1).astype(float)
    w = rng.integers(0, 3, 2000).astype(float)
    for weights in (np.ones(2000), w):
        v, s = val_prob(p, y, weights, intervals=False), cu.smoothed_errors(p, y, weights)
        assert (s["ici"], s["e50"], s["e90"]) == (pytest.approx(v["eavg"], rel=1e-12), pytest.approx(v["e50"], rel=1e-12),
                                                  pytest.approx(v["e90"], rel=1e-12))
    # no events at all: still scored (val_prob cannot)
    assert cu.smoothed_errors(p, np.zeros(2000), np.ones(2000))["ici"] == pytest.approx(p.mean())


def test_error_intervals_resample_whole_families():
    """Each family is four copies of one row: resampling families sees 300 independent
    units, resampling rows would see 1200, so the family interval is about twice as wide."""
    rng = np.random.default_rng(4)
    p0 = special.expit(rng.normal(-1, 1, 300))
    y0 = (rng.random(300) < p0).astype(float)
    p, y, family = np.repeat(p0, 4), np.repeat(y0, 4), np.repeat(np.arange(300), 4)
    by_family = cu.error_intervals(p, y, np.ones(1200), family, 100, 1, "test_interval")
    by_row = cu.error_intervals(p, y, np.ones(1200), np.arange(1200), 100, 1, "test_interval")
    width = {k: by_family[f"{k}_upper"] - by_family[f"{k}_lower"] for k in ("ici", "e90")}
    assert all(width[k] > 1.5 * (by_row[f"{k}_upper"] - by_row[f"{k}_lower"]) for k in width)
    again = cu.error_intervals(p, y, np.ones(1200), family, 100, 1, "test_interval")
    assert again == by_family                                   # the named stream is reproducible


def test_noise_floor_reads_a_calibrated_model_within_and_a_miscalibrated_one_beyond():
    """Over 10 seeds (n 1000, 50 floor draws each): outcomes drawn from the predictions
    read "within" in most (expected about 94%: 80 seeds with 100 draws read 0.925 for ICI
    and 0.95 for E90); predictions 1.5 times the true risk read "beyond" in every seed."""
    within, beyond = [], []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        true = special.expit(rng.normal(-1.5, 0.8, 1000))
        y = (rng.random(1000) < true).astype(float)
        w = np.ones(1000)
        for p, store in ((true, within), (np.minimum(true * 1.5, 0.99), beyond)):
            floor = cu.floor_summary(cu.smoothed_errors(p, y, w), cu.noise_floor_draws(p, w, 50, seed, "test_floor"))
            store.append([floor[m]["reading"] == cu.WITHIN for m in cu.FLOOR_MEASURES])
    rate = np.mean(within, axis=0)
    print("calibrated read within (ICI, E90):", rate)
    assert np.all(rate >= 0.8)
    assert not np.any(beyond)


def test_floor_corrections_are_not_sound():
    """Why no floor-corrected ICI is reported (module docstring): with real miscalibration,
    subtracting the floor's median under-reads the true ICI by about the floor, more than
    the raw value errs; subtracting in quadrature is no more accurate than the raw value."""
    rng = np.random.default_rng(6)
    p = special.expit(rng.normal(-1.2, 0.9, 3000))
    w = np.ones(3000)
    floor = cu.noise_floor_draws(p, w, 100, 1, "test_floor")["ici"].median()
    for a, b in ((0.2, 1.0), (0.0, 0.8), (0.1, 0.85)):
        true_risk = special.expit(a + b * special.logit(p))
        true_ici = np.mean(np.abs(p - true_risk))
        raw = np.array([cu.smoothed_errors(p, (rng.random(3000) < true_risk).astype(float), w)["ici"]
                        for _ in range(15)])
        subtracted, quadrature = raw - floor, np.sqrt(np.maximum(raw**2 - floor**2, 0))
        rmse = {k: np.sqrt(np.mean((v - true_ici) ** 2)) for k, v in
                (("raw", raw), ("subtracted", subtracted), ("quadrature", quadrature))}
        print(a, b, round(true_ici, 4), {k: round(v, 4) for k, v in rmse.items()})
        assert np.mean(subtracted) < true_ici - floor / 2
        assert rmse["subtracted"] > rmse["raw"] and rmse["quadrature"] > 0.8 * rmse["raw"]


def test_reading_words():
    assert cu.reading(0.01, 0.02) == cu.WITHIN and cu.reading(0.02, 0.02) == cu.WITHIN
    assert cu.reading(0.03, 0.02) == cu.BEYOND and cu.reading(np.nan, 0.02) == ""


def test_binary_uncertainty_gathers_everything():
    rng = np.random.default_rng(7)
    p = special.expit(rng.normal(-1, 1, 800))
    y = (rng.random(800) < p).astype(float)
    family = np.arange(800) // 2
    out = cu.binary_uncertainty(p, y, np.ones(800), family, 30, 3, "test_stream")
    assert out["slope_lower"] < out["slope"] < out["slope_upper"]
    assert out["noise_floor"]["ici"]["floor_p50"] < out["noise_floor"]["ici"]["floor_p95"]
    assert out["noise_floor"]["ici"]["observed"] == out["ici"]
    flat = cu.flat_floor(out["noise_floor"])
    assert set(flat) == {"ici_floor_p50", "ici_floor_p95", "ici_reading", "e90_floor_p50", "e90_floor_p95",
                         "e90_reading"}


# -- the Cox model at a horizon ------------------------------------------------------------

def _survival_rows(rng, n=3000, distort=1.0):
    """Exponential times (rate by a linear predictor), uniform censoring over 0-1000 days,
    no competing ends; predicted risk by 365 days from the true rates, the linear predictor
    times ``distort`` (1: perfectly calibrated)."""
    lp = rng.normal(0, 0.8, n)
    t, c = rng.exponential(1 / np.exp(-6.5 + lp)), rng.uniform(0, 1000, n)
    rows = pd.DataFrame({"time_days": np.minimum(t, c), "event": (t <= c).astype(int), "family": np.arange(n) // 2})
    return 1 - np.exp(-np.exp(-6.5 + distort * lp) * 365.0), rows


def test_horizon_uncertainty_is_on_the_statuses_survival_calibration_scores():
    from pipeline.calibration import survival_calibration

    rng = np.random.default_rng(10)
    for distort, reading in ((1.0, cu.WITHIN), (1.8, cu.BEYOND)):
        risk, rows = _survival_rows(rng, distort=distort)
        summary, _ = survival_calibration(risk, rows, 365.0)
        found = cu.horizon_uncertainty(risk, rows, 365.0, summary["observed_expected"], 60, 1, "test_cox")
        for k in ("citl", "slope", "ici", "e50", "e90"):       # the same estimates, now with intervals
            assert found[k] == pytest.approx(summary[k], rel=1e-9), k
            assert found[f"{k}_lower"] <= found[f"{k}_upper"]
        assert found["observed_expected"] == summary["observed_expected"]
        assert found["observed_expected_lower"] < summary["observed_expected"] < found["observed_expected_upper"]
        assert found["noise_floor"]["ici"]["reading"] == reading
        if distort == 1.0:
            assert found["slope_lower"] <= 1 <= found["slope_upper"]
            assert found["observed_expected_lower"] <= 1 <= found["observed_expected_upper"]
        else:                                                   # true slope about 1 / 1.8
            assert found["slope_upper"] < 0.75


# -- the stage and the report --------------------------------------------------------------

def test_subgroup_calibration_adds_intervals_and_floor_and_still_withholds_small_groups():
    """Two LAs: LA01 calibrated, LA02 predicted 1.5 times its risk; LA99 with 2 rows is
    withheld (no measures, no floor), and so are the counts of the next smallest, LA01
    (complementary suppression, as before), not its measures."""
    from pipeline.calibration import subgroup_calibration

    rng = np.random.default_rng(11)
    n = 2400
    true = special.expit(rng.normal(-1.5, 0.7, n))
    la = np.where(np.arange(n) < 1199, "LA01", "LA02")
    la[:2] = "LA99"
    pred = pd.DataFrame({"p": np.where(la == "LA02", np.minimum(true * 1.5, 0.99), true),
                         "y": (rng.random(n) < true).astype(int), "weight": 1.0, "family": np.arange(n) // 2,
                         "la_code": la})
    out = subgroup_calibration(pred, min_count=10, replicates=40, seed=1).set_index("level")
    assert out.loc["LA01", "ici_reading"] == cu.WITHIN and out.loc["LA02", "ici_reading"] == cu.BEYOND
    assert out.loc["LA02", "observed_expected_upper"] < 0.8            # truly 1/1.5 = 0.67
    assert out.loc["LA01", "slope_lower"] < 1 < out.loc["LA01", "slope_upper"]
    assert np.isnan(out.loc["LA99", "n"]) and np.isnan(out.loc["LA99", "ici_floor_p95"])
    assert np.isnan(out.loc["LA01", "n"]) and out.loc["LA02", "n"] == 1201
    assert list(out.columns[:6]) == ["variable", "n", "events", "observed_expected", "observed_expected_lower",
                                     "observed_expected_upper"]


def test_report_shows_intervals_and_says_which_groups_are_beyond_their_floor():
    from pipeline.report import floor_sentences, with_intervals

    groups = pd.DataFrame({"variable": ["la_code", "la_code"], "level": ["LA01", "LA02"], "n": [500, np.nan],
                           "ici": [0.02, 0.06], "ici_lower": [0.01, 0.04], "ici_upper": [0.03, 0.08],
                           "ici_floor_p50": [0.015, 0.02], "ici_floor_p95": [0.025, 0.03],
                           "ici_reading": [cu.WITHIN, cu.BEYOND], "e90": [0.03, 0.05],
                           "e90_floor_p50": [0.02, 0.03], "e90_floor_p95": [0.04, 0.06],
                           "e90_reading": [cu.WITHIN, cu.WITHIN]})
    shown = with_intervals(groups, 3)
    assert shown.loc[0, "ici"] == "0.020 (0.010\u20130.030)" and shown.loc[1, "ICI vs floor"] == "beyond"
    assert shown.loc[0, "E90 floor (median / 95th)"] == "0.020 / 0.040" and "ici_lower" not in shown
    validation = {"eavg": 0.008, "e90": 0.019, "noise_floor": {
        "ici": {"floor_p50": 0.0074, "floor_p95": 0.0124, "reading": cu.WITHIN},
        "e90": {"floor_p50": 0.0146, "floor_p95": 0.0275, "reading": cu.WITHIN}}}
    cox = pd.DataFrame({"horizon_months": [12], "ici": [0.003], "ici_reading": [cu.WITHIN], "e90_reading": [cu.WITHIN]})
    first, second = floor_sentences(validation, groups, cox)
    assert "ICI 0.0080 is within what a perfectly calibrated model shows" in first and "95th percentile 0.0124" in first
    assert second == ("Local authority LA02: ICI 0.0600 is beyond what a perfectly calibrated model shows at this size "
                      "(95th percentile 0.0300).")
    assert floor_sentences({"eavg": 0.008}, groups, cox) == []
