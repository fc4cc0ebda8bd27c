"""The report reads well (issue 13): numbers formatted for reading, every column labelled from
pipeline/field_labels.yaml, Table 1 and sentences (not raw JSON) in the cohort and
sample-size sections, tables that fit a 1280-px screen (headless Chromium), the plan curves
distinguishable, and a "made by" footer per section whose functions and files exist.

The report is built here from the committed stage outputs (reports/, metrics/): a few seconds.
"""

from __future__ import annotations

import html
import importlib
import re

import numpy as np
import pandas as pd
import pytest

from pipeline import field_labels, report
from pipeline.report import WITHHELD, fmt, fmt_interval
from tests.conftest import ROOT

SNAKE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def built(params):
    return report.build(ROOT, params)


def section(page: str, sid: str) -> str:
    start = page.index(f"<section id='{sid}'>")
    return page[start:page.index("</section>", start)]


@pytest.mark.parametrize("value, kind, shown", [
    (0.0004, "p", "&lt;0.001"), (2.2e-101, "p", "&lt;0.001"), (0.0063, "p", "0.006"), (0.0312, "p", "0.03"),
    (0.65, "p", "0.65"), (0.998, "p", "&gt;0.99"), (0.0, "p", "&lt;0.001"),
    (231.6, None, "232"),              # events per parameter: never "231.600"
    (271.6997123, None, "272"), (23.44, None, "23.4"), (1.495426444, None, "1.50"), (0.3124, None, "0.31"),
    (0.0172, None, "0.017"), (0.00830, None, "0.0083"), (-0.000414, None, "-0.00041"),
    (-1.73e-13, None, "0"),            # floating-point noise
    (5469, None, "5,469"), (5469.0, "count", "5,469"), (12.0, None, "12"), (2025.0, "year", "2025"),
    (float("nan"), None, WITHHELD), (None, "count", WITHHELD), ("a<b", None, "a&lt;b"),
])
def test_fmt(value, kind, shown):
    assert fmt(value, kind=kind) == shown


def test_fmt_with_digits_keeps_its_decimals():
    assert fmt(0.008, 4) == "0.0080" and fmt(0.02, 3) == "0.020" and fmt(-0.0001, 3) == "-0.0001"


def test_intervals():
    assert fmt_interval(0.3124, 0.2701, 0.3512) == "0.31 (0.27\u20130.35)"
    assert fmt_interval(-0.1379, -0.2634, -0.0112) == "-0.14 (-0.26 to -0.01)"   # a negative bound: "to"
    # The interval's width (0.17) needs 2 decimals, so the estimate gets at most 3, not 5:
    assert fmt_interval(0.000367, -0.0926, 0.0721) == "0.000 (-0.093 to 0.072)"
    assert fmt_interval(0.0083, 0.0051, 0.0184) == "0.0083 (0.0051\u20130.0184)"
    assert fmt_interval(0.02, 0.01, 0.03, 3) == "0.020 (0.010\u20130.030)"
    assert fmt_interval(0.5, np.nan, 0.6) == "0.50" and fmt_interval(np.nan, 0.1, 0.2) == WITHHELD


def test_a_column_without_a_label_shows_and_the_check_catches_it():
    page = report.table_html(pd.DataFrame({"no_label_here": [1], "hr": [1.5]}))
    headers = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", page)
    assert headers == ["no_label_here", "hazard ratio"]
    assert SNAKE.search(headers[0]) and field_labels.unlabelled(["no_label_here", "hr", "plain"]) == ["no_label_here"]


def test_labels_units_words_levels_and_terms():
    from pipeline.settings import Labels

    assert field_labels.label("median_days") == "median plan length (days)"
    assert field_labels.label("median_days", note="95% CI") == "median plan length (days; 95% CI)"
    assert field_labels.label("ppv") == "PPV (share of flagged who are re-referred)"
    assert field_labels.label("ppv", Labels(outcome="re-arrest", have_outcome="have a re-arrest")) == (
        "PPV (share of flagged who have a re-arrest)")
    assert field_labels.label("hr") == "hazard ratio" and field_labels.label("time_days") == (
        "time since the episode ended (days)")
    assert field_labels.term("age_band[16_17]") == "age band: 16-17" and field_labels.term("sex[F]") == "sex: female"
    assert field_labels.group("la_code", "LA01") == "local authority: LA01"
    assert field_labels.level("plan_sequence", "second_or_subsequent") == "repeat plan (second or later)"


def test_every_column_the_report_shows_has_a_label(built):
    page, summary = built
    headers = [html.unescape(h) for h in re.findall(r"<th(?: [^>]*)?>(.*?)</th>", page)]
    assert len(headers) > 80
    assert [h for h in headers if SNAKE.search(h)] == []
    lines = summary.splitlines()
    table_heads = [line for line, below in zip(lines, lines[1:]) if below.startswith("|---")]
    assert len(table_heads) >= 4 and [h for h in table_heads if SNAKE.search(h)] == []


def test_numbers_are_written_for_reading(built):
    page, _ = built
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", page)]
    assert not [c for c in cells if re.search(r"\d\.?\d*e[-+]\d", c)]             # no 1.73e-13
    assert not [c for c in cells if re.fullmatch(r"-?[\d,]{3,}\.\d+", c)]           # no 231.600, 271.700
    assert not [c for c in cells if re.fullmatch(r"0\.0+", c)]                      # no p 0.000
    assert "0.99 (0.95\u20131.03)" in section(page, "calibration")                  # O/E with its interval


def test_cohort_has_sentences_and_table_one_and_no_raw_json(built, params):
    page, summary = built
    cohort, size = section(page, "cohort"), section(page, "sample-size")
    assert "{" not in cohort and "{" not in size and '"' not in html.unescape(re.sub(r"<[^>]+>", "", size))
    assert 'id="table-one"' in cohort and "Table 1" in cohort and "Table 1" in summary
    table1 = pd.read_csv(ROOT / "reports/logistic/table1.csv")
    development = int(table1.query("group == 'development' and variable == 'rows'")["n"].iloc[0])
    assert f"development, n = {development:,}" in cohort
    for label in ("sex, n (%)", "local authority, n (%)", "age band, n (%)", "prior referrals, n (%)",
                  "age (years), median (IQR)", "parental substance misuse, n (%)"):
        assert label in cohort, label
    assert "Split in time at" in cohort and "rows needed" in size and "adequate" in size


def test_every_section_says_what_made_it(built):
    page, _ = built
    ids = re.findall(r"<section id=['\"]([^'\"]+)['\"]>", page)
    assert set(ids) == set(report.MADE_BY)
    for sid in ids:
        assert "made by: stage <code>" in section(page, sid) if sid != "how-often-wrong" else \
            "made by: stage <code>errors</code>" in page[:page.index("<nav>")], sid


def test_made_by_names_functions_that_exist_and_files_the_pipeline_writes():
    for sid, entries in report.MADE_BY.items():
        for stage, module, function, files in entries:
            assert module.startswith("pipeline/") and module.endswith(".py"), (sid, module)
            imported = importlib.import_module(module[:-3].replace("/", "."))
            assert hasattr(imported, function), f"{sid}: {module} has no {function}"
            assert (ROOT / "pipeline" / f"{stage}.py").exists(), f"{sid}: no stage {stage}"
            for path in files:
                assert (ROOT / path).is_file(), f"{sid}: {path} (committed outputs of a run) is missing"


def test_plan_curves_are_drawn_differently():
    styles = report.PLAN_SERIES_STYLE
    assert len({(s["ls"], s["lw"], s.get("marker")) for s in styles.values()}) == len(styles)
    assert styles["all_plans"]["lw"] > styles["first_plans"]["lw"]                  # the one beneath is wider
    assert styles["all_plans"]["zorder"] < styles["first_plans"]["zorder"]


def test_rebuilding_gives_the_same_bytes(built, params):
    assert report.build(ROOT, params) == built


def test_tables_fit_a_1280_pixel_screen(built, tmp_path):
    from tests.browser import find_chromium, inspect_report

    if find_chromium() is None:
        pytest.skip("chromium not installed: apt-get install chromium (make setup does, when it can)")
    path = tmp_path / "report.html"
    path.write_text(built[0], encoding="utf-8")
    measure = """(() => ({
      page: document.documentElement.scrollWidth,
      tables: [...document.querySelectorAll('table')].map(t => ({
        where: (t.closest('section') || {}).id, head: t.rows[0].cells[0].textContent,
        width: t.getBoundingClientRect().width, room: t.parentElement.clientWidth,
        scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth}))}))()"""
    seen = inspect_report(path, width=1280, height=800, script=measure)["script"]
    assert seen["page"] <= 1280
    assert len(seen["tables"]) > 15
    too_wide = [t for t in seen["tables"] if t["scrolls"] or t["width"] > t["room"] + 0.5]
    assert too_wide == []
