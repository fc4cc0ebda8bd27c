"""DfE's published plan-duration table as downloaded: reading, markers, per-year and pooled
estimates, the no-plans input, and the report's banded section.

``tests/data/dfe_plan_durations_small.csv`` is built BY HAND from the published layout of
explore-education-statistics' "D7 Child Protection Plans ending during the year by duration
and local authority" (Children in need; columns time_period, time_identifier,
geographic_level, country_code, country_name, region_code, region_name, old_la_code,
new_la_code, la_name, category, CPP_End, 3_months_or_less, 3_months_or_less_percent,
more_than_3_months_6_months, ..., 2_years_or_more, 2_years_or_more_percent). The National
and Regional rows copy DfE's published 2025 figures (62,300 plans ended in England; North
East 4,880); the "Synthetic LA" rows are invented counts (fictional LA codes E069000xx):

    LA  year  CPP_End  <=3m  3-6m  6m-1y  1-2y  2y+
    A   2025   80      16     8     32    18     6
    A   2024  100      20    12     40    22     6
    B   2025   60      12    10     22    10     6
    B   2024   50      10     c     20    12     c     (two cells hidden; 50 - 42 = 8 between them)
    C   2025   30       6     6     11     7     z     (z: not applicable -> none)
    C   2024    x      10     c     12     8     6     (a hidden cell and no total: not estimable)
    D   2025   25     low     6      9     6     0     (one hidden cell: 25 - 21 = 4)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import durations
from pipeline.cli import InputError
from pipeline.report import banded_section

DATA = Path(__file__).parent / "data" / "dfe_plan_durations_small.csv"
HORIZONS = [3, 6, 12, 24]


@pytest.fixture(scope="module")
def estimates() -> pd.DataFrame:
    cells, totals, tallies = durations.read_banded(DATA)
    assert tallies["rows_in"] == 10 and tallies["rows_local_authority"] == 7
    assert tallies["rows_national_or_regional_skipped"] == 3          # 10 rows = 7 LA + 3 skipped
    return durations.banded_estimates(cells, totals, HORIZONS, min_count=10, published=True)


def row(est: pd.DataFrame, la: str, year: int | None) -> pd.Series:
    basis = "pooled" if year is None else "year"
    sub = est[(est["la_code"] == la) & (est["basis"] == basis)]
    if year is not None:
        sub = sub[sub["year"] == year]
    assert len(sub) == 1, (la, year)
    return sub.iloc[0]


def test_reads_dfe_columns_labels_and_markers():
    cells, totals, _ = durations.read_banded(DATA)
    b24 = cells[(cells["la_code"] == "E06900002") & (cells["year"] == 2024)].set_index("band")
    assert b24.loc["3-6 months", "marker"] == "c" and np.isnan(b24.loc["3-6 months", "plans_ended"])
    assert b24.loc["<=3 months", "plans_ended"] == 10
    c25 = cells[(cells["la_code"] == "E06900003") & (cells["year"] == 2025)].set_index("band")
    assert c25.loc["2+ years", "plans_ended"] == 0 and c25.loc["2+ years", "marker"] == "z"   # z: none
    t = totals.set_index(["la_code", "year"])
    assert np.isnan(t.loc[("E06900003", 2024), "total"]) and t.loc[("E06900003", 2024), "total_marker"] == "x"
    assert set(cells["la_name"]) == {"Synthetic LA A", "Synthetic LA B", "Synthetic LA C", "Synthetic LA D"}


def test_turnbull_shares_are_the_band_shares_by_hand(estimates):
    # With DfE's bands the Turnbull NPMLE puts each band's share on that band, so the share
    # still open at an edge is (plans in later bands) / total:
    a24 = row(estimates, "E06900001", 2024)           # 20, 12, 40, 22, 6 of 100
    np.testing.assert_allclose([a24[f"turnbull_open_at_{m}m"] for m in HORIZONS],
                               [80 / 100, 68 / 100, 28 / 100, 6 / 100])
    np.testing.assert_allclose(a24[[c for c in a24.index if c.startswith("share_")]].astype(float),
                               [0.20, 0.12, 0.40, 0.22, 0.06])
    assert a24["published_plans_ended"] == 100 and a24["status"] == "published"
    a25 = row(estimates, "E06900001", 2025)           # 16, 8, 32, 18, 6 of 80
    np.testing.assert_allclose([a25[f"turnbull_open_at_{m}m"] for m in HORIZONS], [64 / 80, 56 / 80, 24 / 80, 6 / 80])
    pooled = row(estimates, "E06900001", None)        # 36, 20, 72, 40, 12 of 180
    np.testing.assert_allclose([pooled[f"turnbull_open_at_{m}m"] for m in HORIZONS],
                               [144 / 180, 124 / 180, 52 / 180, 12 / 180])
    assert pooled["years"] == "2024, 2025" and pooled["status"].startswith("pooled: counts of the years listed added")
    assert pd.isna(pooled["year"])


def test_weibull_matches_r_survreg(estimates):
    """Pinned from R 4 (survival), run once by hand:

        fit <- survreg(Surv(l, r, type = "interval2") ~ 1, dist = "weibull", weights = n)
        # l = NA, 91, 182, 365, 730; r = 91, 182, 365, 730, NA (bands with n > 0 only)
        # median = exp(mu + s log(log 2)); 95% CI by the delta method on the log median
        # with vcov(fit) (gradient (1, s log(log 2)) in (mu, log s)); shape 1/s, scale exp(mu)

    n = 20,12,40,22,6:  median 243.015270 (201.582920, 292.963420) shape 1.294802 scale 322.527765
    n = 36,20,72,40,12: median 247.331728 (214.829522, 284.751292)
    n = 10,8,20,12,0:   median 222.755501 (178.657650, 277.737972)
    n = 10,0,20,12,8:   median 313.762951 (233.433210, 421.736005)
    n = 38,30,74,41,12: median 237.519429 (207.361736, 272.063111)
    """
    a24 = row(estimates, "E06900001", 2024)
    np.testing.assert_allclose([a24["weibull_median_days"], a24["weibull_median_lower95"], a24["weibull_median_upper95"],
                                a24["weibull_shape"], a24["weibull_scale_days"]],
                               [243.015270, 201.582920, 292.963420, 1.294802, 322.527765], rtol=1e-5)
    pooled = row(estimates, "E06900001", None)
    np.testing.assert_allclose([pooled["weibull_median_days"], pooled["weibull_median_lower95"],
                                pooled["weibull_median_upper95"]], [247.331728, 214.829522, 284.751292], rtol=1e-5)
    # B 2024 hides 8 plans in two bands: the median at both extreme allocations bounds it;
    # the CI reported is the union of the two allocations' CIs.
    b24 = row(estimates, "E06900002", 2024)
    assert np.isnan(b24["weibull_median_days"])
    np.testing.assert_allclose([b24["weibull_median_low"], b24["weibull_median_high"], b24["weibull_median_lower95"],
                                b24["weibull_median_upper95"]], [222.755501, 313.762951, 178.657650, 421.736005],
                               rtol=1e-5)
    all25 = row(estimates, "all", 2025)       # A + B + C + D 2025 (D's low = 4): 38, 30, 74, 41, 12 of 195
    assert all25["published_plans_ended"] == 195
    np.testing.assert_allclose(all25["weibull_median_days"], 237.519429, rtol=1e-5)


def test_hidden_cells_are_bounded_and_other_years_kept(estimates):
    # B 2024: 10, c, 20, 12, c of 50: the c cells hold 50 - 42 = 8 plans between them.
    # earliest allocation 10, 8, 20, 12, 0; latest 10, 0, 20, 12, 8.
    b24 = row(estimates, "E06900002", 2024)
    assert b24["status"] == "2 bands not shown: bounded by the published total" and b24["cells_not_shown"] == 2
    assert b24["turnbull_open_at_3m"] == pytest.approx(40 / 50)           # both c cells lie after 3 months
    assert np.isnan(b24["turnbull_open_at_6m"])
    assert (b24["turnbull_open_at_6m_low"], b24["turnbull_open_at_6m_high"]) == pytest.approx((32 / 50, 40 / 50))
    assert (b24["turnbull_open_at_24m_low"], b24["turnbull_open_at_24m_high"]) == pytest.approx((0, 8 / 50))
    assert np.isnan(b24["share_3m_to_6m"]) and b24["share_6m_to_1y"] == pytest.approx(20 / 50)
    # B's other year is untouched, and its pooled row (110 plans) is bounded and flagged.
    b25 = row(estimates, "E06900002", 2025)                                # 12, 10, 22, 10, 6 of 60
    np.testing.assert_allclose([b25[f"turnbull_open_at_{m}m"] for m in HORIZONS], [48 / 60, 38 / 60, 16 / 60, 6 / 60])
    bp = row(estimates, "E06900002", None)          # early 22, 18, 42, 22, 6; late 22, 10, 42, 22, 14
    assert bp["published_plans_ended"] == 110 and "bounded: cells not shown in 2024" in bp["status"]
    assert bp["turnbull_open_at_3m"] == pytest.approx(88 / 110)
    assert (bp["turnbull_open_at_6m_low"], bp["turnbull_open_at_6m_high"]) == pytest.approx((70 / 110, 78 / 110))
    assert (bp["turnbull_open_at_24m_low"], bp["turnbull_open_at_24m_high"]) == pytest.approx((6 / 110, 14 / 110))


def test_x_z_and_low_markers(estimates):
    c24 = row(estimates, "E06900003", 2024)          # total x and a c cell: nothing to bound it by
    assert c24["status"] == "not estimable: bands not shown and no published total"
    assert np.isnan(c24["published_plans_ended"]) and np.isnan(c24.get("turnbull_open_at_3m", np.nan))
    c25 = row(estimates, "E06900003", 2025)          # 6, 6, 11, 7, z(=0) of 30
    np.testing.assert_allclose([c25[f"turnbull_open_at_{m}m"] for m in HORIZONS], [24 / 30, 18 / 30, 7 / 30, 0])
    cp = row(estimates, "E06900003", None)           # pooled = 2025 only, and it says why
    assert cp["years"] == "2025" and "left out (not estimable): 2024" in cp["status"]
    d25 = row(estimates, "E06900004", 2025)          # low = 25 - (6 + 9 + 6 + 0) = 4
    assert d25["status"] == "one band not shown: the published total minus the other bands"
    # The hidden band's own share is not printed (DfE chose not to); the Turnbull estimate is exact.
    assert np.isnan(d25["share_3m_or_less"]) and d25["turnbull_open_at_3m"] == pytest.approx(21 / 25)
    assert d25["share_3m_to_6m"] == pytest.approx(6 / 25)
    all24 = row(estimates, "all", 2024)              # A + B (C left out): 150 plans, flagged
    assert all24["published_plans_ended"] == 150 and "LAs left out (not estimable): 1 (E06900003)" in all24["status"]
    # LAs with only one year get no pooled row; the all rows come first.
    assert not ((estimates["la_code"] == "E06900004") & (estimates["basis"] == "pooled")).any()
    assert estimates["la_code"].iloc[0] == "all"


def test_published_small_counts_are_not_suppressed_again(estimates):
    # D 2025 has 25 plans and bands of 4 and 0; with min_count 10 a derived table would
    # withhold them, but these are DfE's public figures: shown as published.
    d25 = row(estimates, "E06900004", 2025)
    assert d25["published_plans_ended"] == 25 and not np.isnan(d25["weibull_median_days"])
    assert "plans_ended" not in estimates.columns       # the column says whose count it is


def test_long_layout_with_dfe_labels_and_total(tmp_path):
    f = tmp_path / "long.csv"
    f.write_text("la_code,year,band,plans_ended\n"
                 "E1,2025,3 months or less,10\n"
                 "E1,2025,More than 3 months but less than or equal to 6 months,c\n"
                 "E1,2025,More than 6 months but less than 1 year,20\n"
                 "E1,2025,1 year but less than 2 years,12\n"
                 "E1,2025,2 years or more,0\n"
                 "E1,2025,Total,47\n")
    cells, totals, _ = durations.read_banded(f)
    est = durations.banded_estimates(cells, totals, HORIZONS, 10, published=True)
    e1 = est[est["la_code"] == "E1"].iloc[0]
    # one hidden cell: 47 - 42 = 5 in 3-6 months -> open at 6 months (20 + 12) / 47
    assert e1["turnbull_open_at_6m"] == pytest.approx(32 / 47) and np.isnan(e1["share_3m_to_6m"])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("Synthetic LA A,Child Protection Plans ending by length of time,80,16",
                         "Synthetic LA A,Child Protection Plans ending by length of time,80,sixteen"),
     r"dfe_plan_durations_small.csv: row 3 \(line 4\): 3_months_or_less: 'sixteen' is neither a count nor a DfE marker"),
    (lambda t: t.replace("more_than_6_months_less_than_1_year,", "6_to_12_months,"),
     r"header \(line 1\): no column for band '6 months-1 year'"),
    (lambda t: t.replace("2024,Reporting year,Local authority", "2024,Financial year,Local authority", 1),
     r"row 8 \(line 9\): time_identifier: 'Financial year' is not one of Reporting year"),
    (lambda t: t.replace("Synthetic LA A,Child Protection Plans ending by length of time,100,",
                         "Synthetic LA A,Child Protection Plans ending by length of time,101,"),
     r"row 8 \(line 9\): CPP_End: published total 101 but the bands add to 100"),
])
def test_bad_dfe_file_gives_one_line(tmp_path, edit, message):
    f = tmp_path / DATA.name
    f.write_text(edit(DATA.read_text()))
    with pytest.raises(InputError, match=message) as err:
        durations.read_banded(f)
    assert "\n" not in str(err.value)


def test_banded_file_must_be_in_the_watched_folder():
    assert durations.banded_file("d7.csv") == Path("data/raw/banded/d7.csv")
    assert durations.banded_file("data/raw/banded/d7.csv") == Path("data/raw/banded/d7.csv")
    assert durations.banded_file(None) is None
    with pytest.raises(InputError, match=r"durations.banded_counts: 'elsewhere/d7.csv' is not in data/raw/banded/"):
        durations.banded_file("elsewhere/d7.csv")


def _project(tmp_path: Path, banded: str | None) -> None:
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["durations"]["banded_counts"] = banded
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data/analysis").mkdir(parents=True)
    (tmp_path / "data/raw/banded").mkdir(parents=True)
    (tmp_path / "data/raw/banded" / DATA.name).write_text(DATA.read_text())
    empty = pd.DataFrame({"la_code": pd.Series(dtype=str), "duration_days": pd.Series(dtype=float),
                          "ended": pd.Series(dtype=int)})
    empty.to_parquet(tmp_path / "data/analysis/cpp_durations.parquet")


@pytest.mark.parametrize("banded", [None, DATA.name])
def test_no_plans_writes_headed_empty_tables_and_says_so(tmp_path, monkeypatch, banded):
    _project(tmp_path, banded)
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports/durations"
    reports.mkdir(parents=True)
    (reports / "planner_summary.csv").write_text("variable,level,plans\nall,all,3736\n")   # an earlier input's table
    durations.main()
    metrics = json.loads((tmp_path / "metrics/durations.json").read_text())
    assert metrics["plans"] == 0 and metrics["status"] == "no plans in this input"
    for name in ("planner_summary", "la_comparison", "km_curves", "logrank", "plot_open_share",
                 "banded_counts", "banded_estimates"):
        assert (reports / f"{name}.csv").exists(), name        # every declared output is there
    summary = pd.read_csv(reports / "planner_summary.csv")
    assert len(summary) == 0 and "median_days" in summary.columns   # headed, no rows: nothing stale left
    banded_rows = len(pd.read_csv(reports / "banded_estimates.csv"))
    assert banded_rows == (0 if banded is None else 13)         # published counts still give estimates
    if banded:
        assert metrics["banded"]["la_years_estimated"] == "6 of 7"
        assert "pooled" in metrics["banded"]["all_las"] and "year_2024" in metrics["banded"]["all_las"]
    html = banded_section(tmp_path)
    assert ("No banded counts" in html) == (banded is None)


def test_report_section_shows_bounds_pooled_rows_and_flags(tmp_path, estimates):
    (tmp_path / "reports/durations").mkdir(parents=True)
    estimates.to_csv(tmp_path / "reports/durations/banded_estimates.csv", index=False)
    html = banded_section(tmp_path)
    assert "pooled (2024, 2025)" in html and "Synthetic LA B (E06900002)" in html
    assert "0.64\u20130.80" in html                            # B 2024 open at 6 months: bounds (2 decimals: report.fmt)
    assert "not estimable: bands not shown and no published total" in html
    assert "not suppressed again" in html
