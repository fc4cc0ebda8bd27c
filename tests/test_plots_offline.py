"""Plots that draw only what is there, and that render offline (issue 13).

* Every plot table dvc.yaml names is in long form with no empty cell (Vega draws an empty
  cell as 0): on the committed ``reports/`` files, and on small runs of the plot-table
  functions where values are withheld or curves stop, worked out by hand.
* ``plots/offline.html`` (``.dvc/config``: ``plots.html_template``) is built from the
  vendored Vega files, and ``dvc plots show`` / ``dvc plots diff`` pages drawn with it in
  headless Chromium with every network request blocked (``tests/browser.py``) have every
  chart, with one line per series and revision. DVC's own page, on the same plots, draws
  nothing there: that is what these tests catch.

The browser tests are skipped, not failed, where Chromium is not installed
(``apt-get install chromium``), as tests/test_browser_helper.py.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import durations, errors, survival
from pipeline.nonparametric import DAYS_PER_MONTH
from pipeline.plot_tables import long_form, wide_form
from tests.browser import find_chromium, inspect_report
from tests.conftest import ROOT

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium")
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def plot_definitions(dvc_yaml: Path = ROOT / "dvc.yaml") -> list[tuple[str, dict]]:
    return [next(iter(entry.items())) for entry in yaml.safe_load(dvc_yaml.read_text())["plots"]]


def plot_files() -> list[tuple[str, str, str]]:
    """(file, x, y) of every plot in dvc.yaml."""
    return [(file, spec["x"], y) for _, spec in plot_definitions() for file, y in spec["y"].items()]


# -- the tables --------------------------------------------------------------------------

@pytest.mark.parametrize("file, x, y", plot_files())
def test_committed_plot_tables_have_no_empty_cell(file, x, y):
    with open(ROOT / file, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, f"{file}: no rows"
    assert {x, y} <= set(rows[0]), f"{file}: needs columns {x} and {y}"
    empty = [(i + 2, column) for i, row in enumerate(rows) for column, cell in row.items() if cell == ""]
    assert not empty, f"{file}: empty cells at (line, column) {empty[:5]}"
    assert all(np.isfinite(float(row[x])) and np.isfinite(float(row[y])) for row in rows)
    if "series" in rows[0]:   # long form: one row per x and series
        keys = [(row[x], row["series"]) for row in rows]
        assert len(keys) == len(set(keys)), f"{file}: an (x, series) pair twice"


def test_committed_kaplan_meier_tables_carry_numbers_at_risk():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    min_count = params["disclosure"]["min_cell_count"]
    for file in ("reports/survival/plot_curves.csv", "reports/survival/plot_cif.csv",
                 "reports/durations/plot_open_share.csv"):
        at_risk = pd.read_csv(ROOT / file, dtype={"at_risk": str})["at_risk"]
        published = pd.to_numeric(at_risk[at_risk != "withheld"])
        assert len(published) and published.min() >= min_count, file


def test_long_form_leaves_out_what_is_not_there():
    wide = pd.DataFrame({"t": [0.1, 0.2, 0.3], "a": [1.0, np.nan, 3.0], "b": [np.nan, np.nan, 0.0]})
    long = long_form(wide, "t", ["a", "b"], "v", at_risk=[50, np.nan, 12.0])
    # a: rows at 0.1 and 0.3 (0.2 withheld); b: only 0.3, where its value is a real zero.
    assert long.to_dict("list") == {"t": [0.1, 0.3, 0.3], "series": ["a", "a", "b"], "v": [1.0, 3.0, 0.0],
                                    "at_risk": [50, 12, 12]}
    assert long_form(wide, "t", ["a"], "v", at_risk=[50, np.nan, np.nan])["at_risk"].tolist() == [50, "withheld"]
    pd.testing.assert_frame_equal(wide_form(long, "t", "v"), wide[wide[["a", "b"]].notna().any(axis=1)]
                                  .reset_index(drop=True))
    assert list(wide_form(long.iloc[:0], "t", "v", ["a", "b"]).columns) == ["t", "a", "b"]


def test_survival_plot_curves_end_where_the_curve_was_cut():
    """A hand-made Kaplan-Meier table cut after day 40 (fewer than the threshold at risk
    after it), the upper limit undefined at day 20, read every half month for 2 months."""
    km = pd.DataFrame({"time_days": [10.0, 20.0, 40.0], "at_risk": [50, 30, 12],
                       "cumulative_rereport": [0.1, 0.3, 0.5], "cumulative_lower": [0.05, 0.2, 0.4],
                       "cumulative_upper": [0.2, np.nan, 0.6]})
    cif = pd.DataFrame({"cause": ["re_referral", "re_referral", "entered_care"], "time_days": [10.0, 20.0, 10.0],
                        "at_risk": [50, 30, 50], "cif": [0.1, 0.25, 0.02]})
    out = survival.plot_curves({"km_overall": km, "competing_cif": cif}, months=2)
    assert DAYS_PER_MONTH == pytest.approx(30.4375)
    # Grid days 0, 15.2, 30.4, 45.7, 60.9. KM: 0 before day 10; 0.1 from day 10; 0.3 from day
    # 20; nothing past day 40 (cut). At risk: that of the first time at or after the grid day:
    # day 0 -> day 10's 50; 15.2 -> day 20's 30; 30.4 -> day 40's 12.
    km_rows = out["plot_curves"][out["plot_curves"]["series"] == "cumulative_rereport"]
    assert km_rows["time_months"].tolist() == [0, 0.5, 1]
    assert km_rows["share"].tolist() == [0, 0.1, 0.3]
    assert km_rows["at_risk"].tolist() == [50, 30, 12]
    upper = out["plot_curves"][out["plot_curves"]["series"] == "cumulative_upper"]
    assert upper["time_months"].tolist() == [0, 0.5]           # undefined from day 20 on: no row, not 0
    # CIF: re-referral to day 20 (grid 0, 0.5); entered care to day 10 (grid 0 only); age 18
    # has no published row: no series at all (it was a line at 0 before).
    cif_rows = out["plot_cif"]
    assert cif_rows[["time_months", "series", "cumulative_incidence"]].values.tolist() == [
        [0, "cif_re_referral", 0], [0.5, "cif_re_referral", 0.1], [0, "cif_entered_care", 0]]
    for table in out.values():
        assert table.notna().all().all()


def test_errors_plot_tables_leave_withheld_thresholds_out():
    """The 40-referral extract of test_error_rates: every threshold's table has a cell below
    10, so no FP/FN point and no model net benefit is published; the reference lines stay."""
    from tests.test_error_rates import _predictions

    s = {"thresholds": [0.2, 0.5], "top_percents": [10, 20], "default_top_percent": 20, "bootstrap_replicates": 10,
         "decision_curve": {"from": 0.1, "to": 0.3, "step": 0.1}, "survival_horizon_months": 12}
    tables, _ = errors.run(_predictions(40, seed=5), None, s, 365, min_count=10, seed=1)
    assert tables["plot_fp_fn"].empty and list(tables["plot_fp_fn"].columns) == ["threshold", "series", "per_1000"]
    dca = tables["plot_decision_curve"]
    assert set(dca["series"]) == {"net_benefit_flag_all", "net_benefit_flag_none"} and dca.notna().all().all()
    assert len(dca) == 2 * 3                                 # thresholds 0.1, 0.2, 0.3
    tables, _ = errors.run(_predictions(40, seed=5), None, s, 365, min_count=0, seed=1)
    assert len(tables["plot_fp_fn"]) == 2 * 2 and len(tables["plot_decision_curve"]) == 3 * 3


def test_durations_open_share_drops_a_curve_not_shown():
    """The 10 plans of test_durations with threshold 5: the 2 repeat plans are too few for a
    curve, so the plot has no repeat-plan rows (it had a flat line at 1 before); all plans
    (10) stop after 300 days, when 4 remain at risk (400, 500, 800, 900)."""
    from tests.test_durations import _plans

    plot = durations.planner_tables(_plans(), [12], min_count=5)["plot_open_share"]
    assert set(plot["series"]) == {"all_plans", "first_plans"} and plot.notna().all().all()
    every = plot[plot["series"] == "all_plans"]
    # Lengths 30 91 100 200 273 300 (ended) 400 500 (open) 800 (ended) 900 (open): at risk at
    # day 300 is 5, then 4. Last published time 300 days = 9.86 months: grid to 9.5 months.
    assert every["time_months"].max() == 9.5 and every["at_risk"].min() >= 5
    assert every["open_share"].iloc[0] == 1 and (every["open_share"] > 0).all()
    # With no repeat-plan curve, all plans minus first plans would give the repeat plans at
    # risk: the first plans' counts are withheld throughout (disclosure.complementary_at_risk).
    assert (plot.loc[plot["series"] == "first_plans", "at_risk"] == "withheld").all()


# -- the offline page --------------------------------------------------------------------

def _build_module():
    spec = importlib.util.spec_from_file_location("build_template", ROOT / "plots/build_template.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_template_is_built_from_the_vendored_files():
    import configparser

    assert (ROOT / "plots/offline.html").read_text(encoding="utf-8") == _build_module().build(), \
        "plots/offline.html is out of date: run python plots/build_template.py"
    readme = (ROOT / "plots/README.md").read_text()
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        digest = hashlib.sha256((ROOT / "plots/vendor" / name).read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(name)}` \| [^|]+ \| [^|]+ \| `{digest}`", readme), name
    for name in ("vega", "vega-lite", "vega-embed"):
        assert "Redistribution and use" in (ROOT / f"plots/vendor/LICENSE.{name}").read_text()
    config = configparser.ConfigParser(inline_comment_prefixes=("#",))   # DVC's config is INI (configobj)
    config.read(ROOT / ".dvc/config")
    setting = config["plots"]["html_template"]
    assert (ROOT / ".dvc" / setting).resolve() == (ROOT / "plots/offline.html").resolve()


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _plots_repo(tmp_path: Path, plots: list[tuple[str, dict]], offline: bool = True, git: bool = False) -> Path:
    """A scratch DVC project with these plot definitions, the project's templates, its plot
    files and (``offline``) its .dvc/config with the HTML template."""
    repo = tmp_path / "repo"
    repo.mkdir()
    if git:
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(["init", "-q"] if git else ["init", "-q", "--no-scm"], repo)
    (repo / ".dvc/plots").mkdir(exist_ok=True)
    for template in (ROOT / ".dvc/plots").glob("*.json"):
        shutil.copy(template, repo / ".dvc/plots" / template.name)
    if offline:
        shutil.copy(ROOT / ".dvc/config", repo / ".dvc/config")
        (repo / "plots").mkdir()
        shutil.copy(ROOT / "plots/offline.html", repo / "plots/offline.html")
    for _, spec in plots:
        for file in spec["y"]:
            (repo / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / file, repo / file)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": [{title: spec} for title, spec in plots]},
                                                  sort_keys=False))
    return repo


#: Each chart vega-embed drew: its title, and the paths of its marks by layer and kind.
CHARTS_JS = r"""
(async () => {
  const charts = () => Array.from(document.querySelectorAll('.vega-embed'));
  for (let i = 0; i < 50 && !charts().every((c) => c.querySelector('svg.marks')); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return charts().map((chart) => {
    const marks = {};
    chart.querySelectorAll('svg.marks g.role-mark').forEach((g) => {
      const key = Array.from(g.classList).filter((c) => c.startsWith('mark-') || c.endsWith('_marks')).join(' ');
      const drawn = Array.from(g.querySelectorAll(':scope > path'))
        .filter((p) => (p.getAttribute('d') || '').length > 20).length;
      marks[key] = (marks[key] || 0) + drawn;
    });
    const title = chart.querySelector('.role-title-text');
    return {title: title ? title.textContent : null, marks};
  });
})()
"""


def _render(page: Path) -> dict:
    result = inspect_report(page, width=1400, height=1000, script=CHARTS_JS, timeout=40)
    result["charts"] = {chart["title"]: chart["marks"] for chart in result["script"]}
    return result


@needs_chromium
def test_dvc_plots_show_draws_every_chart_offline(tmp_path):
    plots = plot_definitions()
    repo = _plots_repo(tmp_path, plots)
    _dvc(["plots", "show"], repo)
    page = repo / "dvc_plots/index.html"
    assert "cdn.jsdelivr" not in page.read_text(encoding="utf-8")
    result = _render(page)
    assert result["requests"] == [], result["requests"]
    assert result["console_errors"] == [], result["console_errors"]
    assert set(result["charts"]) == {title for title, _ in plots}
    for title, spec in plots:
        marks = result["charts"][title]
        lines = marks.get("mark-line layer_0_marks", 0)
        if spec["template"] == "series":             # one line per series (one revision)
            (file, _), = spec["y"].items()
            assert lines == pd.read_csv(ROOT / file)["series"].nunique(), (title, marks)
        else:                                         # calibration: band, curve, diagonal
            assert marks == {"mark-area layer_0_marks": 1, "mark-line layer_1_marks": 1,
                             "mark-line layer_2_marks": 1}, marks


@needs_chromium
def test_dvc_default_page_needs_the_network(tmp_path):
    """Without the project's HTML template, DVC's page asks the CDN for Vega and, blocked,
    draws no chart: the check above fails on it."""
    plots = [d for d in plot_definitions() if "plot_fp_fn" in json.dumps(d)]
    repo = _plots_repo(tmp_path, plots, offline=False)
    _dvc(["plots", "show"], repo)
    result = _render(repo / "dvc_plots/index.html")
    assert any(url.startswith("https://cdn.jsdelivr.net/npm/vega") for url in result["blocked"]), result["requests"]
    assert result["charts"] == {}


@needs_chromium
def test_dvc_plots_diff_draws_one_curve_per_revision(tmp_path):
    """Two revisions of the calibration curve and of a long-form table: one curve each (the
    calibration template had no revision encoding: both revisions made one zig-zag line)."""
    plots = [d for d in plot_definitions() if d[1]["template"] == "calibration" or "plot_fp_fn" in json.dumps(d)]
    repo = _plots_repo(tmp_path, plots, git=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "one"], cwd=repo, check=True)
    curve = repo / "reports/calibration/curve.csv"
    table = pd.read_csv(curve)
    table[["observed", "lower", "upper"]] *= 0.8
    table.to_csv(curve, index=False)
    fp_fn = repo / "reports/errors/plot_fp_fn.csv"
    table = pd.read_csv(fp_fn)
    table["per_1000"] += 25
    table.to_csv(fp_fn, index=False)
    _dvc(["plots", "diff", "HEAD"], repo)
    charts = _render(repo / "dvc_plots/index.html")["charts"]
    calibration = next(marks for title, marks in charts.items() if title.startswith("Calibration"))
    assert calibration == {"mark-area layer_0_marks": 2, "mark-line layer_1_marks": 2, "mark-line layer_2_marks": 2}
    fp_fn_marks = next(marks for title, marks in charts.items() if title.startswith("False positives"))
    assert fp_fn_marks["mark-line layer_0_marks"] == 2 * 2      # 2 series x 2 revisions
    # The calibration template without its colour encoding (as it was): one curve for both.
    template = repo / ".dvc/plots/calibration.json"
    spec = json.loads(template.read_text())
    del spec["encoding"]["color"]
    template.write_text(json.dumps(spec))
    _dvc(["plots", "diff", "HEAD"], repo)
    charts = _render(repo / "dvc_plots/index.html")["charts"]
    calibration = next(marks for title, marks in charts.items() if title.startswith("Calibration"))
    assert calibration["mark-line layer_1_marks"] == 1


def test_open_share_withholds_the_other_part_where_one_part_is_withheld():
    """Found at 10M children: at 42.5 months first plans' number at risk was withheld (from the
    repeat curve's stop on) while repeat plans (10) and all plans (510) were shown, so first
    plans = 510 - 10 = 500 followed by subtraction. By hand: at 42.5 the repeat count goes too;
    at 42.0 (both shown) and 43.0 (repeat has no row) nothing changes; all plans never change."""
    plot = pd.DataFrame({
        "time_months": [42.0, 42.5, 43.0, 42.0, 42.5, 43.0, 42.0, 42.5],
        "series": ["all_plans"] * 3 + ["first_plans"] * 3 + ["repeat_plans"] * 2,
        "open_share": [0.1] * 8,
        "at_risk": [567, 510, 467, 556, "withheld", "withheld", 11, 10]})
    out = durations.complementary_on_grid(plot, ["first_plans", "repeat_plans"])
    assert out["at_risk"].tolist() == [567, 510, 467, 556, "withheld", "withheld", 11, "withheld"]
