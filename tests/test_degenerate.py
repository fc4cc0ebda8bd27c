"""Empty and degenerate analysis tables: every stage after ``clean`` ends with a one-line message,
writes every output dvc.yaml declares for it, and says what could not be estimated and why; the
report still builds and names the reason in the affected section. No traceback anywhere.

Inputs are built by hand: a prepared analysis table (``input.source: analysis_table``) or a
tiny three-table extract (``input.source: extract``). The stages run in-process (as
``python -m pipeline.<stage>`` would, through ``stage_entry``) in a temporary project folder;
one test runs them as subprocesses, as DVC does.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml

from pipeline.cli import stage_entry
from tests.conftest import ROOT

STAGES = ("clean", "episodes", "survival", "durations", "logistic", "calibration", "errors", "report", "outputs")
KEY_ENV = "PIPELINE_PSEUDONYM_KEY"


def declared_outputs() -> dict[str, list[str]]:
    """Every out and metrics file dvc.yaml declares, per stage."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        paths = []
        for entry in [*stage.get("outs", []), *stage.get("metrics", [])]:
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
        out[name] = paths
    return out


def project(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["calibration"].update(bootstrap_replicates=5, n_jobs=1)   # small: the cases, not the bootstrap
    params["errors"]["bootstrap_replicates"] = 5
    change(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "in").mkdir()
    return tmp_path


def prepared(tmp_path: Path, rows: list[str], **spec: Any) -> Path:
    """A prepared table ``in/t.csv`` (columns id, time, event, x, g) through the analysis_table route."""
    def change(params: dict[str, Any]) -> None:
        params["input"].update(source="analysis_table", dir="in")
        params["input"]["analysis_table"].update({"file": "t.csv", "id": "id", "cluster": None, "duration": "time",
                                                  "event": "event", "covariates": ["x"], "km_groups": [],
                                                  "strata": None, **spec})
    work = project(tmp_path, change)
    (work / "in/t.csv").write_text("\n".join(["id,time,event,x,g", *rows]) + "\n")
    return work


def table(n: int, time: Callable[[int], Any] = lambda i: 30 + 13 * i, event: Callable[[int], Any] = lambda i: i % 3 == 0,
          x: Callable[[int], Any] = lambda i: i % 2, g: Callable[[int], Any] = lambda i: "ab"[i % 2]) -> list[str]:
    """n rows; by default times 30, 43, ..., events on every third row, x alternating 0/1."""
    return [f"{i},{time(i)},{int(event(i))},{x(i)},{g(i)}" for i in range(n)]


def run_stages(work: Path) -> dict[str, str]:
    """Run every stage in order; each must exit 0 with a one-line message. Returns the messages."""
    messages = {}
    old = os.getcwd()
    os.environ[KEY_ENV] = "degenerate-test-key"
    os.chdir(work)
    try:
        for stage in STAGES:
            module = importlib.import_module(f"pipeline.{stage}")
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    stage_entry(module.main)()
                except SystemExit as exit_:
                    pytest.fail(f"{stage} exited {exit_.code}: {err.getvalue()}")
            lines = out.getvalue().strip().splitlines()
            assert lines and lines[-1].startswith(f"{stage}:"), (stage, out.getvalue())
            messages[stage] = lines[-1]
    finally:
        os.chdir(old)
    for stage, paths in declared_outputs().items():
        if stage != "simulate":
            for path in paths:
                assert (work / path).exists(), f"{stage}: declared output {path} missing"
    return messages


def metrics(work: Path, stage: str) -> dict[str, Any]:
    return json.loads((work / f"metrics/{stage}.json").read_text())


def not_estimated(work: Path, stage: str) -> dict[str, str]:
    return metrics(work, stage).get("not_estimated", {})


def report_says(work: Path, part: str, reason: str) -> None:
    page = (work / "reports/report.html").read_text()
    assert f"{part} could not be estimated:</strong> {reason}" in page, (part, reason)


def csv_rows(work: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(work / rel)


NO_ROWS = "no rows in the analysis table"
NO_KNOWN = "no rows with a known outcome at the horizon"
ONE_ROW_CLUSTERS = "every cluster has one row: a shared frailty needs clusters of two or more rows"


def assert_nothing_estimated(work: Path, messages: dict[str, str]) -> None:
    """Every model stage wrote headed, empty tables and said why (the analysis table has no rows)."""
    assert metrics(work, "episodes")["status"].startswith(NO_ROWS)
    assert not_estimated(work, "survival") == {part: NO_ROWS for part in not_estimated(work, "survival")}
    assert {"survival_curves", "cox"} <= set(not_estimated(work, "survival"))
    assert list(csv_rows(work, "reports/survival/hazard_ratios.csv").columns)[:5] == [
        "covariate", "coef", "robust_se", "model_se", "hr"]
    assert csv_rows(work, "reports/survival/km_overall.csv").empty
    assert json.loads((work / "models/cox.json").read_text())["coef"] == []
    assert not_estimated(work, "logistic") == {"logistic_model": NO_KNOWN}
    assert pd.read_parquet(work / "data/predictions/validation.parquet").empty
    assert not_estimated(work, "calibration") == {"logistic_calibration": NO_KNOWN, "cox_calibration": NO_ROWS}
    assert pd.read_parquet(work / "data/predictions/cox_validation.parquet").empty
    assert not_estimated(work, "errors")["error_rates"] == NO_KNOWN
    assert (work / "reports/errors/headline.txt").read_text() == \
        f"How often the model is wrong could not be estimated: {NO_KNOWN}.\n"
    assert "statement" not in metrics(work, "errors")   # report text, not a metric
    assert csv_rows(work, "reports/errors/rules.csv").empty
    assert "could not be estimated" in messages["survival"] and "could not be estimated" in messages["errors"]
    report_says(work, "Cox", NO_ROWS)
    report_says(work, "Logistic model", NO_KNOWN)
    assert "## Could not be estimated" in (work / "reports/summary.md").read_text()


# -- (a) no rows at all --------------------------------------------------------------------------
def test_a_prepared_table_with_every_row_rejected(tmp_path):
    # A negative duration and an event coded 7: both rows quarantined by clean, 0 kept.
    work = prepared(tmp_path, ["1,-1,1,0,a", "2,5,7,1,b"])
    messages = run_stages(work)
    assert messages["clean"] == "clean: analysis_table: 2 in = 0 kept + 2 rejected"
    assert "every row of the prepared table was rejected by clean" in messages["episodes"]
    assert_nothing_estimated(work, messages)


CHILDREN = "child_id,family_id,la_code,sex,date_of_birth,ethnicity,disability\nC1,F1,LA01,M,2015-01-01,WHITE,0\n" \
           "C2,F2,LA01,F,2016-01-01,WHITE,1\n"
REFERRALS_HEADER = ("referral_id,child_id,referral_date,referral_source,closure_date,outcome,substance_misuse,"
                    "domestic_violence,mental_health,learning_disability,financial_problems,low_social_support,"
                    "parent_maltreated_as_child,abuse_category\n")
PLANS = "plan_id,child_id,start_date,end_date,category,end_reason\nP1,C1,2020-01-10,2020-04-01,NEGLECT,OTHER\n"


def extract(tmp_path: Path, referrals: str, extract_date: str = "2025-03-31") -> Path:
    def change(params: dict[str, Any]) -> None:
        params["input"].update(source="extract", dir="in", extract_date=extract_date)
    work = project(tmp_path, change)
    for name, text in (("children.csv", CHILDREN), ("referrals.csv", REFERRALS_HEADER + referrals),
                       ("plans.csv", PLANS)):
        (work / "in" / name).write_text(text)
    return work


def test_a_extract_whose_referrals_are_all_rejected(tmp_path):
    # R1 has no referral date, R2 names a child not in children.csv, R3 an unknown referral
    # source, R4 a factor flag 7: each quarantined for its own reason (no column is more than
    # half unreadable, so clean does not stop), 4 in = 0 kept + 4 rejected.
    work = extract(tmp_path, "R1,C1,,POLICE,2020-02-01,NFA,0,0,0,0,0,0,0,\n"
                             "R2,C9,2020-03-01,SCHOOL,2020-04-01,CIN,1,0,0,0,0,0,0,\n"
                             "R3,C1,2020-05-01,NOTACODE,2020-06-01,NFA,0,0,0,0,0,0,0,\n"
                             "R4,C2,2020-07-01,POLICE,2020-08-01,NFA,7,0,0,0,0,0,0,\n")
    messages = run_stages(work)
    assert metrics(work, "clean")["tables"]["referrals"]["rows_kept"] == 0
    assert "every referral was rejected by clean" in messages["episodes"]
    assert_nothing_estimated(work, messages)
    # One plan: fewer than disclosure.min_cell_count (10), so no duration estimate is made.
    assert metrics(work, "durations")["plans"] is None
    assert "fewer plans than 10" in metrics(work, "durations")["status"]
    assert "Plan durations could not be estimated: fewer plans than 10" in (work / "reports/report.html").read_text()


def test_a_extract_date_before_every_referral(tmp_path):
    work = extract(tmp_path, "R1,C1,2020-01-01,POLICE,2020-02-01,NFA,0,0,0,0,0,0,0,\n"
                             "R2,C2,2020-03-01,SCHOOL,2020-04-01,CIN,1,0,0,0,0,0,0,\n", extract_date="2019-06-30")
    messages = run_stages(work)
    assert metrics(work, "episodes")["counts"]["index_referrals"] == 0
    assert_nothing_estimated(work, messages)


# -- (b) rows but no events --------------------------------------------------------------------
def test_b_no_events(tmp_path):
    work = prepared(tmp_path, table(60, event=lambda i: False))
    messages = run_stages(work)
    reason = "no events: every row is censored"
    assert not_estimated(work, "survival") == {"cox": reason, "parametric_models": reason, "frailty": reason}
    # The curve is still drawn: flat at 0 (no one has the event), 60 at risk at the first time.
    km = csv_rows(work, "reports/survival/km_overall.csv")
    assert (km["cumulative_rereport"] == 0).all() and km["at_risk"].iloc[0] == 60
    assert csv_rows(work, "reports/survival/hazard_ratios.csv").empty
    assert csv_rows(work, "reports/survival/parametric_models.csv").empty
    assert not_estimated(work, "logistic")["logistic_model"].endswith("all have the same outcome (no events)")
    assert "cox could not be estimated: no events" in messages["survival"]
    report_says(work, "Cox", reason)


# -- (c) every row an event (no censoring) ------------------------------------------------------
def test_c_every_row_an_event(tmp_path):
    # Times 30 + 5i <= 325 days: every row has its event within the 365-day horizon, so the
    # binary outcome is 1 for all 60 rows: no logistic model; the survival models are estimable.
    work = prepared(tmp_path, table(60, time=lambda i: 30 + 5 * i, event=lambda i: True))
    messages = run_stages(work)
    # each subject its own cluster (cluster: null): no shared frailty, said; everything else estimated
    assert not_estimated(work, "survival") == {"frailty": ONE_ROW_CLUSTERS}, messages["survival"]
    km = csv_rows(work, "reports/survival/km_overall.csv")
    # KM curve cut where fewer than 10 are at risk: last shown time has 10 at risk, 1 - 9/60 re-referred.
    assert km["at_risk"].iloc[-1] == 10 and km["cumulative_rereport"].iloc[-1] == pytest.approx(1 - 9 / 60)
    assert len(csv_rows(work, "reports/survival/hazard_ratios.csv")) == 1
    assert len(csv_rows(work, "reports/survival/parametric_models.csv")) == 3
    assert not_estimated(work, "logistic")["logistic_model"].endswith("all have the same outcome (every one an event)")
    assert metrics(work, "calibration")["not_estimated"]["logistic_calibration"] == \
        not_estimated(work, "logistic")["logistic_model"]


# -- (d) one group only -------------------------------------------------------------------------
def test_d_one_group_in_km_group_and_stratum(tmp_path):
    work = prepared(tmp_path, table(60, g=lambda i: "a"), km_groups=["g"], strata="g")
    messages = run_stages(work)
    assert not_estimated(work, "survival") == {"frailty": ONE_ROW_CLUSTERS}, messages["survival"]
    assert csv_rows(work, "reports/survival/logrank.csv").empty        # one level: nothing to compare
    assert set(csv_rows(work, "reports/survival/km_by_group.csv")["level"]) == {"a"}
    assert len(csv_rows(work, "reports/survival/hazard_ratios.csv")) == 1   # x, one stratum


# -- (e) a constant covariate -------------------------------------------------------------------
def test_e_constant_covariate(tmp_path):
    work = prepared(tmp_path, table(60, x=lambda i: 1))
    messages = run_stages(work)
    reason = "no covariate varies in the analysis table"
    assert not_estimated(work, "survival") == {"cox": reason, "frailty": reason}
    assert len(csv_rows(work, "reports/survival/parametric_models.csv")) == 3   # intercept-only fits
    assert not_estimated(work, "logistic") == {"logistic_model": "no covariate varies in the development rows"}
    assert "could not be estimated" in messages["logistic"]
    report_says(work, "Cox", "no covariate varies in the analysis table")


# -- (f) zero durations -------------------------------------------------------------------------
def test_f_some_zero_durations(tmp_path):
    # Rows 0, 7, ..., 56 (9 rows) have duration 0: Cox and KM take them as they are, the
    # parametric fits move them to half a day (stated; 9 < 10 so the count is withheld).
    work = prepared(tmp_path, table(60, time=lambda i: 0 if i % 7 == 0 else 30 + 13 * i))
    run_stages(work)
    m = metrics(work, "survival")
    assert m["not_estimated"] == {"frailty": ONE_ROW_CLUSTERS}
    assert m["parametric_zero_durations"] == {
        "rows": None, "rule": "zero durations moved to 0.5 days for the parametric fits only (they need positive "
                              "times); Kaplan-Meier and Cox use them as they are"}
    assert len(csv_rows(work, "reports/survival/parametric_models.csv")) == 3
    # Events at time 0 are rows 0, 21, 42 (i % 3 == 0 and i % 7 == 0): 3 of the 60 at risk,
    # S(0) = 1 - 3/60 = 0.95. The 9 rows at 0 then leave the risk set: 51 at risk at the first
    # positive time, 43 days (row 1, censored), where the curve still reads 3/60 = 0.05.
    km = csv_rows(work, "reports/survival/km_overall.csv")
    assert km[["time_days", "at_risk"]].iloc[0].tolist() == [43, 51]
    assert km["cumulative_rereport"].iloc[0] == pytest.approx(0.05)


def test_f_every_duration_zero(tmp_path):
    work = prepared(tmp_path, table(60, time=lambda i: 0))
    run_stages(work)
    reason = "every duration is zero: no follow-up time"
    assert not_estimated(work, "survival") == {"survival_curves": reason, "cox": reason, "parametric_models": reason,
                                               "frailty": reason}
    assert not_estimated(work, "calibration")["cox_calibration"] == reason
    report_says(work, "Survival curves", reason)


def test_f_infinite_duration_is_rejected_by_clean(tmp_path):
    work = prepared(tmp_path, table(60, time=lambda i: "inf" if i == 3 else 30 + 13 * i))
    messages = run_stages(work)
    assert messages["clean"] == "clean: analysis_table: 60 in = 59 kept + 1 rejected"
    rejects = pd.read_csv(work / "data/clean/rejects.csv", dtype=str)
    assert rejects[["field", "value", "reason"]].values.tolist() == [["time", "inf", "invalid_value"]]


# -- (g) too few rows for the logistic split ----------------------------------------------------
def test_g_too_few_rows_for_the_split(tmp_path):
    # 6 subjects, all followed past the 365-day horizon but row 0 (event at day 30): 1 event,
    # 5 non-events. The random split validates round(0.3 * 6) = 2 subjects: whichever side
    # holds row 0, the other side has no events.
    work = prepared(tmp_path, table(6, time=lambda i: 30 if i == 0 else 400 + i, event=lambda i: i == 0))
    messages = run_stages(work)
    reason = not_estimated(work, "logistic")["logistic_model"]
    assert reason in ("the development rows all have the same outcome (no events)",
                      "the validation rows all have the same outcome (no events)"), reason
    assert metrics(work, "logistic")["split"]["method"] == "random_clusters"
    assert pd.read_parquet(work / "data/predictions/development.parquet").empty
    assert json.loads((work / "models/logistic.json").read_text())["coef"] == []
    assert not_estimated(work, "errors")["error_rates"] == reason
    assert "could not be estimated" in messages["calibration"]


def test_grouped_kfold_with_too_few_families_says_so(tmp_path):
    work = prepared(tmp_path, table(6, time=lambda i: 30 if i == 0 else 400 + i, event=lambda i: i == 0))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["logistic"]["split"] = "grouped_kfold"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stages(work)
    # All 6 rows develop and validate (both outcomes); 5 folds of 6 families: the fold holding
    # row 0, the only event, leaves the other folds' training rows without events.
    assert re.fullmatch(r"fold [1-5] of 5: the other folds hold only one outcome; use fewer folds",
                        not_estimated(work, "logistic")["logistic_model"])
    assert not_estimated(work, "errors")["error_rates"] == not_estimated(work, "logistic")["logistic_model"]


# -- as DVC runs them: subprocesses, one line each, no traceback ------------------------------
@pytest.mark.slow
def test_stages_as_subprocesses_print_one_line_and_no_traceback(tmp_path):
    work = prepared(tmp_path, ["1,-1,1,0,a", "2,5,7,1,b"])
    env = {**os.environ, KEY_ENV: "k", "PYTHONPATH": str(ROOT)}   # this checkout's pipeline package
    for stage in STAGES:
        proc = subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (stage, proc.stderr)
        assert "Traceback" not in proc.stderr, (stage, proc.stderr)
        assert proc.stdout.strip().splitlines()[-1].startswith(f"{stage}:"), (stage, proc.stdout)
