"""Plan durations for planners: a small known extract, suppression, and the banded-count route."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import durations
from pipeline.cli import InputError
from pipeline.nonparametric import turnbull
from pipeline.published import CPP_DURATION_BANDS


def _plans() -> pd.DataFrame:
    # LA A: 6 plans; lengths 30, 100, 200, 300 (ended), 400 (open), 800 (ended).
    # LA B: 4 plans; 91 and 273 days (ended), 500 and 900 (open).
    return pd.DataFrame({
        "la_code": ["A"] * 6 + ["B"] * 4,
        "duration_days": [30, 100, 200, 300, 400, 800, 91, 273, 500, 900],
        "ended": [1, 1, 1, 1, 0, 1, 1, 1, 0, 0],
        "category": ["NEGLECT"] * 5 + ["EMOTIONAL"] * 5,
        "age_band_at_start": ["1_4"] * 10,
        "plan_sequence": ["first"] * 8 + ["second_or_subsequent"] * 2,
    })


def test_planner_table_on_a_small_known_extract():
    tables = durations.planner_tables(_plans(), [3, 12, 24], min_count=1)
    s = tables["planner_summary"].set_index(["variable", "level"])
    a = s.loc[("la_code", "A")]
    # A: S = 5/6 after 30, 4/6 after 100, 3/6 after 200, 2/6 after 300, (400 censored), 0 after 800.
    assert a["plans"] == 6 and a["ended"] == 5
    # S is exactly 1/2 from 200 to 300: R's survfit reports the midpoint, 250, with 95% CI
    # (30, NA): survfit(Surv(c(30,100,200,300,400,800), c(1,1,1,1,0,1)) ~ 1, conf.type="log-log").
    assert a["median_days"] == 250 and a["median_lower"] == 30 and np.isnan(a["median_upper"])
    np.testing.assert_allclose(a["open_at_3m"], 5 / 6)               # 91.3 days: only the 30-day plan ended
    np.testing.assert_allclose(a["open_at_12m"], 2 / 6)              # 365.25: after 300
    np.testing.assert_allclose(a["open_at_24m"], 2 / 6)              # 730.5: 800 has not ended yet
    b = s.loc[("la_code", "B")]
    # B: S = 3/4 after 91, 2/4 after 273; 500 and 900 open.
    np.testing.assert_allclose([b["open_at_3m"], b["open_at_12m"], b["lasting_2y_plus"]], [0.75, 0.5, 0.5])
    # survfit(Surv(c(91,273,500,900), c(1,1,0,0)) ~ 1, conf.type="log-log"): median 273, CI (91, NA)
    assert b["median_days"] == 273 and b["median_lower"] == 91 and np.isnan(b["median_upper"])
    la = tables["la_comparison"].set_index("la_code")
    np.testing.assert_allclose(la.loc["B", "repeat_plan_share"], 0.5)
    assert "la_code" in set(tables["logrank"]["variable"])
    assert s.loc[("plan_sequence", "second_or_subsequent"), "plans"] == 2


def test_small_groups_are_suppressed():
    tables = durations.planner_tables(_plans(), [12], min_count=5)
    s = tables["planner_summary"].set_index(["variable", "level"])
    assert np.isnan(s.loc[("la_code", "B"), "plans"]) and np.isnan(s.loc[("la_code", "B"), "median_days"])
    # A alone would give B back as the total (published) minus A: secondary suppression.
    assert np.isnan(s.loc[("la_code", "A"), "plans"]) and s.loc[("all", "all"), "plans"] >= 5
    assert np.isnan(tables["la_comparison"].set_index("la_code").loc["B", "repeat_plan_share"])
    assert tables["km_curves"]["at_risk"].min() >= 5


def test_turnbull_by_hand():
    # (0,1], (1,2], (0,2]: the third observation is uninformative between the two support intervals.
    out = turnbull([0, 1, 0], [1, 2, 2])
    assert out[["left", "right"]].values.tolist() == [[0, 1], [1, 2]]
    np.testing.assert_allclose(out["mass"], [0.5, 0.5], atol=1e-8)
    # Overlapping intervals: (0,2] x2, (1,3] x1 -> support [1,2]: all mass there.
    out = turnbull([0, 1], [2, 3], weights=[2, 1])
    assert out[["left", "right"]].values.tolist() == [[1, 2]]
    np.testing.assert_allclose(out["mass"], [1.0])


def test_banded_counts_recover_a_known_distribution():
    """Durations from Weibull(shape 1.4, scale 320 days), reduced to the DfE bands: the
    interval-censored Weibull fit recovers shape and scale, and the Turnbull estimate at
    the band edges equals the true survival there within sampling error."""
    rng = np.random.default_rng(5)
    shape, scale = 1.4, 320.0
    days = scale * rng.weibull(shape, size=20_000)
    edges = np.array([91, 182, 365, 730])
    band = np.array(CPP_DURATION_BANDS)[np.searchsorted(edges, days, side="left")]
    counts = pd.Series(band).value_counts().reindex(CPP_DURATION_BANDS).rename("plans_ended").reset_index()
    counts = counts.rename(columns={"index": "band"}).assign(la_code="X", year=2025)
    est = durations.banded_estimates(counts, None, [3, 6, 12, 24], min_count=10, published=False)
    est = est.set_index("la_code").loc["all"]
    assert est["weibull_shape"] == pytest.approx(shape, rel=0.03)
    assert est["weibull_scale_days"] == pytest.approx(scale, rel=0.02)
    for months, edge in zip((3, 6, 12, 24), edges):
        true_s = np.exp(-(edge / scale) ** shape)
        assert est[f"turnbull_open_at_{months}m"] == pytest.approx(true_s, abs=0.01)   # SE < 0.004
        assert est[f"turnbull_open_at_{months}m"] == pytest.approx((days > edge).mean(), abs=1e-6)
    assert est["weibull_median_days"] == pytest.approx(scale * np.log(2) ** (1 / shape), rel=0.03)


def test_bands_from_case_level_plans():
    plans = _plans().assign(end_date=pd.Timestamp("2025-01-01"))
    counts = durations.bands_from_plans(plans, pd.Timestamp("2025-03-31"))
    a = counts[counts["la_code"] == "A"].set_index("band")["plans_ended"]
    # A ended: 30, 100, 200, 300, 800 -> <=3m 1, 3-6m 1, 6m-1y 2, 1-2y 0, 2+ 1
    assert a.loc[list(CPP_DURATION_BANDS)].tolist() == [1, 1, 2, 0, 1]
    assert set(counts.columns) == {"la_code", "year", "band", "plans_ended"}


def test_bad_banded_file_gives_one_line(tmp_path):
    f = tmp_path / "bands.csv"
    f.write_text("la_code,year,band,plans_ended\nE1,2025,<=3 months,10\nE1,2025,ages,5\n")
    with pytest.raises(InputError, match=r"bands.csv: row 2 \(line 3\): band: unknown band 'ages'"):
        durations.read_banded(f)
    f.write_text("la_code,year,band,plans_ended\nE1,2025,<=3 months,ten\n")
    with pytest.raises(InputError, match=r"row 1 \(line 2\): plans_ended: 'ten' is neither a count nor a DfE marker"):
        durations.read_banded(f)


def test_banded_estimates_do_not_give_back_a_withheld_band():
    """LA B's "2+ years" band (3 plans) is withheld from banded_counts.csv; B's total,
    Turnbull shares and Weibull fit would each give it back (shares x total; the Weibull
    score equations are linear in the counts), so B gets no estimates, and the overall row
    loses its total and is rounded, so overall minus A cannot be solved for B's band."""
    from pipeline.published import CPP_DURATION_BANDS

    counts = pd.DataFrame([{"la_code": la, "year": 2025, "band": band, "plans_ended": n}
                           for la, ns in (("A", (40, 30, 80, 50, 12)), ("B", (20, 15, 40, 25, 3)))
                           for band, n in zip(CPP_DURATION_BANDS, ns)])
    est = durations.banded_estimates(counts, None, [3, 24], min_count=10, published=False).set_index("la_code")
    assert est.loc["B"].drop(["la_name", "year", "basis", "years", "status", "cells_not_shown"]).isna().all()
    assert est.loc["B", "status"].startswith("withheld")
    assert est.loc["A", "plans_ended"] == 212 and not np.isnan(est.loc["A", "weibull_shape"])
    overall = est.loc["all"]
    assert np.isnan(overall["plans_ended"])
    assert overall["turnbull_open_at_24m"] == round(overall["turnbull_open_at_24m"], 2)
    assert overall["weibull_scale_days"] == round(overall["weibull_scale_days"])
    # without the small band nothing is withheld or rounded
    full = durations.banded_estimates(counts.assign(plans_ended=counts["plans_ended"].clip(lower=10)), None,
                                      [3, 24], 10, published=False)
    assert full.set_index("la_code").loc["all", "plans_ended"] == 212 + 110
