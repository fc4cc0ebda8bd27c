"""Cox input checks, convergence warnings and the scaled-Schoenfeld plot (issue 11, parts 6 and 2).

Reference behaviour and numbers: R 4.2.2, survival 3.5-3. The R calls are quoted beside each
number; the Schoenfeld references are written by ``tests/data/ref_schoenfeld.R`` (run on
lifelines' copy of the Rossi data, ``lifelines/datasets/rossi.csv``, and on
``tests/data/cox_small.csv``). R is not needed to run these tests.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from pipeline import survival
from pipeline.cli import InputError
from pipeline.cox import CoxConvergenceWarning, CoxInputError, CoxPH
from pipeline.report import _schoenfeld, ph_section
from pipeline.schoenfeld import COLUMNS, binned_means, schoenfeld_table, spline_smooth

DATA = Path(__file__).parent / "data"
PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

# Twelve rows; every event has x = 1 and every censored row x = 0: x separates events from
# non-events at every event time, so its partial likelihood rises forever as beta grows.
T = np.arange(1, 13, dtype=float)
E = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0])
Z = np.array([0.5, 1.2, 0.3, 0.8, 1.9, 0.1, 1.1, 0.7, 0.2, 1.5, 0.9, 0.4])
SEPARATING = pd.DataFrame({"x": E.astype(float)})


def fit_quietly(*args, **kw) -> CoxPH:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoxConvergenceWarning)   # the tests read warnings_ instead
        return CoxPH(**kw.pop("init", {})).fit(*args, **kw)


# -- convergence -----------------------------------------------------------------------------
def test_separating_covariate_warns_as_r():
    # R: coxph(Surv(t, e) ~ x) on these 12 rows
    #   Warning message: In coxph.fit(X, Y, istrat, offset, init, control, weights = weights,  :
    #     Loglik converged before variable  1 ; coefficient may be infinite.
    #   coef 21.6978888744 (exp(coef) 2.6e9), 20 iterations, loglik -12.0498397995 (null), -6.57925121545
    with pytest.warns(CoxConvergenceWarning, match=r"^Loglik converged before variable  1 \(x\); "
                                                   r"coefficient may be infinite\.$"):
        m = CoxPH().fit(SEPARATING, T, E)
    assert m.warnings_ == ["Loglik converged before variable  1 (x); coefficient may be infinite."]
    assert not m.converged_
    # The log-likelihood has reached its supremum (R stopped a little earlier: 1e-9 against our 1e-10)
    assert m.loglik_null_ == pytest.approx(-12.0498397995, rel=1e-10)
    assert m.loglik_ == pytest.approx(-6.57925121545, abs=1e-8)
    assert 20 < m.coef_[0] < 30    # stopped where R's test fires, not grown until the information underflows


def test_separation_names_only_the_infinite_covariate():
    # R: coxph(Surv(t, e) ~ x + z): "Ran out of iterations and did not converge" (its 20 iterations
    # end before the log-likelihood converges); coef x 23.3457465993, z -1.91929965326.
    # Ours reaches the converged log-likelihood and applies R's infinite-coefficient test there:
    # only x is named, and z's (finite) estimate is R's.
    m = fit_quietly(SEPARATING.assign(z=Z), T, E)
    assert m.warnings_ == ["Loglik converged before variable  1 (x); coefficient may be infinite."]
    assert m.coef_[1] == pytest.approx(-1.91929965326, abs=1e-7)


def test_ran_out_of_iterations():
    # R: coxph(..., iter.max = k) warns "Ran out of iterations and did not converge"
    m = fit_quietly(pd.DataFrame({"z": Z}), T, E, init={"max_iter": 2})
    assert m.warnings_ == ["Ran out of iterations and did not converge (max_iter = 2)."]
    assert not m.converged_


def test_a_normal_fit_gives_no_warning():
    # R: coxph(Surv(t, e) ~ z): coef 1.14464530394, loglik -10.9327894194, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # any warning fails the test
        m = CoxPH().fit(pd.DataFrame({"z": Z}), T, E)
    assert m.warnings_ == [] and m.converged_
    assert m.coef_[0] == pytest.approx(1.14464530394, rel=1e-8)


# -- input checks ----------------------------------------------------------------------------
GOOD = pd.DataFrame({"t": [0.0, 2, 3, 4, 5, 0], "e": [1, 1, 0, 1, 0, 0], "x": [0.3, 1, 0, 1, 0.2, 0.5]})


def test_zero_time_is_accepted_as_r_does():
    # R: coxph(Surv(t, e) ~ x, data = d0), t = c(0,2,3,4,5,0): no error, coef 1.3740649837,
    # loglik -3.87120101091 (null), -3.44412820262
    m = CoxPH().fit(GOOD[["x"]], GOOD["t"], GOOD["e"])
    assert m.coef_[0] == pytest.approx(1.3740649837, rel=1e-8)
    assert m.loglik_ == pytest.approx(-3.44412820262, rel=1e-9)


@pytest.mark.parametrize("column, values, message", [
    # R drops the row through na.action: "(1 observation deleted due to missingness)"
    ("x", [0.3, np.nan, 0, 1, 0.2, np.nan], "covariate 'x': a missing or infinite value (NaN or Inf) in 2 rows"),
    # R: "Error in coxph(...): data contains an infinite predictor"
    ("x", [0.3, np.inf, 0, 1, 0.2, 0.5], "covariate 'x': a missing or infinite value (NaN or Inf) in 1 row"),
    # R accepts a negative time (only the order of times enters the partial likelihood); here a
    # time is a duration since an origin, and a negative one is a dating error
    ("t", [0.0, -1, 3, 4, 5, 0], "duration: a negative time in 1 row"),
    ("t", [0.0, np.nan, 3, np.inf, 5, 0], "duration: a missing or infinite time in 2 rows"),
    # R: "Warning message: In Surv(t, e) : Invalid status value, converted to NA" (row dropped)
    ("e", [1, 2, 0, 1, 0, 0], "event: a value other than 0 or 1 in 1 row"),
])
def test_invalid_values_are_one_line_errors(column, values, message):
    d = GOOD.assign(**{column: values})
    with pytest.raises(CoxInputError) as err:
        CoxPH().fit(d[["x"]], d["t"], d["e"])
    assert str(err.value) == message
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    assert err.value.reason == re.sub(r" in [\d,]+ rows?$", " in some rows", message)   # count-free, for metrics


def test_counting_process_entry_must_precede_stop():
    # R: Surv(c(0, 1, 2), c(1, 1, 3), c(1, 0, 1)) -> "Stop time must be > start time, NA created"
    # (the row becomes NA and coxph drops it); here it is an error, nothing is dropped silently
    with pytest.raises(CoxInputError, match=r"^entry: an entry time not before the stop time in 1 row$"):
        CoxPH().fit(pd.DataFrame({"x": [1.0, 2, 3, 1]}), [1, 1, 3, 2], [1, 0, 1, 1], entry=[0, 1, 2, 0])


def test_missing_stratum_label_is_an_error_not_a_dropped_row():
    # pd.factorize codes a missing label -1, which no stratum held: the row left the fit unseen
    with pytest.raises(CoxInputError, match=r"^strata: a missing label in 1 row$"):
        CoxPH().fit(GOOD[["x"]], GOOD["t"], GOOD["e"], strata=["a", "a", None, "b", "b", "b"])


# -- the stage -------------------------------------------------------------------------------
def settings(**kw) -> dict:
    return {"ties": "efron", "covariates": ["x", "z"], "categorical": [], "km_groups": [],
            "horizons_months": [3, 6], "strata": None, "cluster": None, "parametric": [], **kw}


def separated_table(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    x = rng.integers(0, 2, n)
    return pd.DataFrame({"time_days": rng.integers(1, 400, n).astype(float), "event": x.astype("int8"),
                         "x": x.astype(float), "z": rng.normal(size=n)})


def test_separation_warning_reaches_the_metrics_and_the_report():
    tables, metrics, model = survival.run(separated_table(), settings(), min_count=10, truth=None)
    assert metrics["warnings"] == [{"model": "cox", "message": "Loglik converged before variable  1 (x); "
                                                               "coefficient may be infinite."}]
    assert model.warnings_ == [metrics["warnings"][0]["message"]]
    html = ph_section(metrics, tables["ph_tests"], {})
    assert "Model warnings" in html and "cox: Loglik converged before variable  1 (x)" in html


def test_a_normal_stage_run_has_an_empty_warning_list():
    d = separated_table().assign(event=lambda f: (f["z"] > 0).astype("int8") | (f.index % 3 == 0))
    d["event"] = d["event"].astype("int8")
    _, metrics, _ = survival.run(d, settings(), min_count=10, truth=None)
    assert metrics["warnings"] == []


def test_stage_stops_with_one_line_on_invalid_values():
    d = separated_table()
    d.loc[[3, 7, 9], "z"] = np.nan
    with pytest.raises(InputError) as err:
        survival.run(d, settings(), min_count=10, truth=None)
    assert str(err.value) == ("data/analysis/rereport.parquet: covariate 'z': a missing or infinite value "
                              "(NaN or Inf) in 3 rows")


def test_no_blanket_warning_filter_in_the_pipeline():
    """No filter silences every warning: each names its category."""
    blanket = re.compile(r"simplefilter\(\s*[\"']ignore[\"']\s*\)|filterwarnings\(\s*[\"']ignore[\"']\s*\)")
    for path in PIPELINE.rglob("*.py"):
        text = path.read_text()
        for match in blanket.finditer(text):
            line = text[:match.start()].count("\n")
            source_line = text.splitlines()[line].strip()
            assert False, f"{path.name}:{line + 1}: {source_line}"


# -- scaled Schoenfeld residuals -------------------------------------------------------------
ROSSI_TERMS = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]


@pytest.fixture(scope="module")
def rossi_zph():
    rossi = load_rossi()
    return CoxPH().fit(rossi[ROSSI_TERMS], rossi["week"], rossi["arrest"]).scaled_schoenfeld("km")


def test_scaled_schoenfeld_matches_r_on_rossi(rossi_zph):
    # fit <- coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = rossi)
    # z <- cox.zph(fit); z$y, z$x, z$time (tests/data/rossi_zph_r.csv; rows in cox.zph's order)
    ref = pd.read_csv(DATA / "rossi_zph_r.csv")
    np.testing.assert_array_equal(rossi_zph.row, ref["row"])
    np.testing.assert_allclose(rossi_zph.time, ref["time"])
    np.testing.assert_allclose(rossi_zph.x, ref["x"], atol=1e-12)
    np.testing.assert_allclose(rossi_zph.y[ROSSI_TERMS].to_numpy(), ref[ROSSI_TERMS].to_numpy(), atol=1e-6)
    # diag(z$var): 4.17537604275 0.055173344565 10.8139887469 5.13446331868 16.6238463353 4.36855690394 0.0935642932882
    np.testing.assert_allclose(np.diag(rossi_zph.var), [4.17537604275, 0.055173344565, 10.8139887469, 5.13446331868,
                                                        16.6238463353, 4.36855690394, 0.0935642932882], rtol=1e-6)


def test_scaled_schoenfeld_matches_r_with_strata():
    # zs <- cox.zph(coxph(Surv(time, status) ~ x1 + x2 + strata(stratum), data = d))  (cox_small.csv)
    # zs$y (tests/data/cox_small_zph_strata_r.csv); zs$var 4.92588660568 0.136729637141 / 0.136729637141 1.10381789279
    d = pd.read_csv(DATA / "cox_small.csv")
    res = CoxPH().fit(d[["x1", "x2"]], d["time"], d["status"], strata=d["stratum"]).scaled_schoenfeld()
    ref = pd.read_csv(DATA / "cox_small_zph_strata_r.csv")
    ours = res.y.assign(row=res.row, x=res.x).set_index("row").loc[ref["row"]]
    np.testing.assert_allclose(ours[["x1", "x2"]].to_numpy(), ref[["x1", "x2"]].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(ours["x"].to_numpy(), ref["x"].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(res.var, [[4.92588660568, 0.136729637141], [0.136729637141, 1.10381789279]], rtol=1e-6)


@pytest.mark.parametrize("term", ["age", "prio"])
def test_smooth_and_band_match_r_plot(rossi_zph, term):
    # plot(z, var = term): the three lines() it draws (smooth, smooth +- 2 SE), read with
    # trace("lines.default") in tests/data/ref_schoenfeld.R -> rossi_zph_plot_r.csv
    ref = pd.read_csv(DATA / "rossi_zph_plot_r.csv").query("term == @term")
    j = ROSSI_TERMS.index(term)
    ours = spline_smooth(rossi_zph.x, rossi_zph.y[term].to_numpy(), rossi_zph.var[j, j])
    for column in ("x", "smooth", "upper", "lower"):
        np.testing.assert_allclose(ours[column].to_numpy(), ref[column].to_numpy(), atol=1e-6)


def test_binned_means_by_hand():
    # 7 points, min_count 3: 7 // 3 = 2 bins of the x-ordered points, np.array_split -> 4 and 3.
    # bin 1: x 1,2,3,4 -> mean x 2.5, y (10 + 20 + 30 + 40) / 4 = 25; bin 2: x 5,6,7 -> 6, y (1 + 2 + 3) / 3 = 2
    x = np.array([7, 1, 5, 3, 2, 6, 4], dtype=float)
    y = np.array([3, 10, 1, 30, 20, 2, 40], dtype=float)
    got = binned_means(x, y, 3)
    assert got.to_dict("list") == {"x": [2.5, 6.0], "mean": [25.0, 2.0], "events": [4, 3]}
    assert binned_means(x, y, 8).empty                     # fewer points than the threshold: no bin


def test_published_table_has_no_individual_residual(rossi_zph):
    min_count = 10
    table = schoenfeld_table(rossi_zph, ["age"], min_count)
    assert list(table.columns) == COLUMNS
    curve, bins = table[table["part"] == "curve"], table[table["part"] == "bin"]
    assert len(curve) <= 40 and len(bins) == 10           # 114 events: 10 bins (the most) of 11 or 12
    assert bins["events"].min() >= min_count and bins["events"].sum() == 114
    used = np.sort(rossi_zph.x)
    assert curve["time_km"].min() >= used[min_count - 1] and curve["time_km"].max() <= used[-min_count]
    assert curve["scaled_residual"].isna().all() and bins["smooth"].isna().all()
    assert (curve["lower"] < curve["smooth"]).all() and (curve["smooth"] < curve["upper"]).all()
    assert schoenfeld_table(rossi_zph, ["age"], 58).empty  # 114 < 2 x 58 events: nothing published


def time_varying_table(n: int = 1500) -> pd.DataFrame:
    """x's hazard ratio is e^1.5 for the first 60 days and e^-1.5 after; z's is e^0.3 throughout."""
    rng = np.random.default_rng(5)
    x, z = rng.integers(0, 2, n), rng.normal(size=n)
    base = 0.004 * np.exp(0.3 * z)
    early = rng.exponential(1 / (base * np.exp(1.5 * x)))
    late = 60 + rng.exponential(1 / (base * np.exp(-1.5 * x)))
    t = np.where(early < 60, early, late)
    censor = rng.uniform(100, 500, n)
    return pd.DataFrame({"time_days": np.ceil(np.minimum(t, censor)), "event": (t <= censor).astype("int8"),
                         "x": x.astype(float), "z": z})


def test_flagged_term_gets_its_plot_and_others_do_not():
    tables, metrics, model = survival.run(time_varying_table(), settings(), min_count=10, truth=None)
    assert metrics["cox"]["ph_violations"] == ["x"]
    sch = tables["schoenfeld"]
    assert set(sch["term"]) == {"x"}
    curve = sch[sch["part"] == "curve"]
    assert curve["smooth"].iloc[0] > 0.5 and curve["smooth"].iloc[-1] < -0.5   # beta(t) falls from +1.5 to -1.5
    hr = tables["hazard_ratios"]
    figs = _figures_for(sch, hr)
    assert list(figs) == ["schoenfeld:x"] and figs["schoenfeld:x"].startswith("data:image/png;base64,")
    html = ph_section(metrics, tables["ph_tests"], figs)
    assert html.count("<img") == 1 and "No term flagged" not in html


def test_no_term_flagged_is_one_sentence():
    d = time_varying_table().assign(x=lambda f: np.random.default_rng(2).integers(0, 2, len(f)).astype(float))
    tables, metrics, _ = survival.run(d, settings(), min_count=10, truth=None)
    assert metrics["cox"]["ph_violations"] == [] and tables["schoenfeld"].empty
    html = ph_section(metrics, tables["ph_tests"], {})
    assert "No term flagged" in html and "<img" not in html


def _figures_for(table: pd.DataFrame, hr: pd.DataFrame) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return _schoenfeld(table, hr, plt)
