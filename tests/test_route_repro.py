"""Each input route through `dvc repro` to reports/report.html, on a scratch copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml
from lifelines.datasets import load_rossi

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
           "PIPELINE_PSEUDONYM_KEY": "route-test-key"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def route_project(work: Path, change: Callable[[dict[str, Any]], None], write_input: Callable[[Path], None]) -> Path:
    """A copy of the tracked project with changed params and its own input, after `dvc repro`."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["calibration"]["bootstrap_replicates"] = 20
    params["errors"]["bootstrap_replicates"] = 20
    change(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_input(work)
    sh(["git", "init", "-q"], work)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], work)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], work)
    sh(["dvc", "repro"], work)
    return work


ROSSI = {"file": "rossi.csv", "id": "id", "cluster": None, "duration": "week", "duration_unit": "weeks",
         "event": "arrest", "index_date": None, "covariates": ["fin", "age", "race", "wexp", "mar", "paro", "prio"],
         "km_groups": ["fin", "race", "wexp"], "strata": None,
         "reference_profiles": {"no_financial_aid": {}, "financial_aid": {"fin": 1}},
         "outcome_label": "re-arrest", "subject_label": "people"}


def rossi_params(params: dict[str, Any]) -> None:
    """The README's settings for Rossi et al.'s recidivism data (52 weeks of follow-up), and
    (a planner's route, independent of the first) DfE's published plan-duration table."""
    params["input"].update({"source": "analysis_table", "dir": "data/raw/rossi", "analysis_table": ROSSI})
    params["logistic"].update({"horizon_days": 364, "split": "grouped_kfold"})
    params["durations"]["banded_counts"] = "dfe_plan_durations_small.csv"


def write_rossi(work: Path) -> None:
    (work / "data/raw/rossi").mkdir(parents=True, exist_ok=True)
    rossi = load_rossi()
    rossi.insert(0, "id", range(1, len(rossi) + 1))
    rossi.to_csv(work / "data/raw/rossi/rossi.csv", index=False)
    shutil.copy(ROOT / "tests/data/dfe_plan_durations_small.csv", work / "data/raw/banded")


def test_prepared_table_route_runs_every_stage_to_the_report(tmp_path):
    work = route_project(tmp_path, rossi_params, write_rossi)
    page = (work / "reports/report.html").read_text()
    assert "re-arrest" in page and "Of 1,000 people" in page
    assert "robust CIs by subject" in page and "treat each subject as independent" in page
    assert "Durations were given in weeks" in page and "a temporal split is impossible" not in page
    # The Cox model equals R's coxph (numbers and call in tests/test_routes.py).
    hr = pd.read_csv(work / "reports/survival/hazard_ratios.csv").set_index("covariate")
    assert hr.loc["prio", "coef"] == pytest.approx(0.0914970809853, abs=1e-8)
    assert set(pd.read_csv(work / "reports/survival/km_by_group.csv")["variable"]) == {"fin", "race", "wexp"}
    assert set(pd.read_csv(work / "reports/survival/parametric_predictions.csv")["profile"]) == {
        "no_financial_aid", "financial_aid"}
    logistic = json.loads((work / "metrics/logistic.json").read_text())
    assert logistic["split"]["method"] == "grouped_kfold" and logistic["validation"]["n"] == 432
    headline = (work / "reports/errors/headline.txt").read_text()
    assert headline.startswith("Of 1,000 people") and "have a re-arrest within 364 days" in headline
    # No plans in a prepared table: the durations stage says so, and deletes nothing git tracks.
    assert json.loads((work / "metrics/durations.json").read_text())["plans"] == 0
    status = sh(["git", "status", "--porcelain"], work).stdout
    assert " D " not in status and "\nD " not in status, status
    # A second repro has nothing to do.
    assert "Running stage" not in sh(["dvc", "repro"], work).stdout
    # DfE's published table: estimates per LA and year and pooled, in the report's planner section.
    banded = pd.read_csv(work / "reports/durations/banded_estimates.csv")
    assert {"year", "pooled"} <= set(banded["basis"]) and len(banded) > 3
    assert "<section id='banded-durations'>" in page and "Synthetic LA A" in page
    # The published file is a DVC dependency: a changed count reruns durations (and only what follows).
    table = work / "data/raw/banded/dfe_plan_durations_small.csv"
    table.write_text(table.read_text().replace("Synthetic LA A,Child Protection Plans ending by length of time,80,16",
                                               "Synthetic LA A,Child Protection Plans ending by length of time,81,17",
                                               1))
    rerun = sh(["dvc", "repro"], work).stdout
    assert "Running stage 'durations'" in rerun and "Running stage 'survival'" not in rerun, rerun
    assert not pd.read_csv(work / "reports/durations/banded_estimates.csv").equals(banded)


def cin_params(params: dict[str, Any]) -> None:
    """The README's CIN census route on the simulated returns (smaller than the default)."""
    params["input"].update({"source": "cin_census", "dir": "data/raw/synthetic/cin_census"})
    params["simulate"]["n_children"] = 8000


def test_cin_census_route_runs_every_stage_to_the_report(tmp_path):
    work = route_project(tmp_path, cin_params, lambda work: None)
    returns = sorted((work / "data/raw/synthetic/cin_census").glob("*.xml"))
    assert len(returns) >= 8 * 6            # one return per LA per census year
    clean = json.loads((work / "metrics/clean.json").read_text())
    assert clean["source"] == "cin_census" and clean["adapter"]["reconciled"]
    assert clean["not_recorded"] == ["financial_problems", "low_social_support", "parent_maltreated_as_child"]
    records = clean["adapter"]["records"]["referrals"]
    assert records["records_in"] == records["kept"] + records["rejected"] + records["merged"] > records["kept"] > 0
    page = (work / "reports/report.html").read_text()
    assert "Children in Need census" in page and "treat each child as independent" in page
    assert "Not recorded in this input" in page and "financial_problems" in page
    hr = pd.read_csv(work / "reports/survival/hazard_ratios.csv")
    assert "financial_problems" not in set(hr["covariate"]) and "substance_misuse" in set(hr["covariate"])
    assert json.loads((work / "metrics/durations.json").read_text())["plans"] > 100
    assert (work / "reports/errors/headline.txt").read_text().startswith("Of 1,000 referrals")
    status = sh(["git", "status", "--porcelain"], work).stdout
    assert not [line for line in status.splitlines() if line.startswith((" D", "D "))], status


def ncands_params(params: dict[str, Any]) -> None:
    """The README's NCANDS route on the simulated Child File (smaller than the default)."""
    params["input"].update({"source": "ncands", "dir": "data/raw/synthetic/ncands", "dayfirst": False})
    params["simulate"]["n_children"] = 8000


def test_ncands_route_runs_every_stage_to_the_report(tmp_path):
    work = route_project(tmp_path, ncands_params, lambda work: None)
    assert len(sorted((work / "data/raw/synthetic/ncands").glob("child_file_*.csv"))) >= 6   # one per fiscal year
    clean = json.loads((work / "metrics/clean.json").read_text())
    assert clean["source"] == "ncands" and clean["adapter"]["reconciled"]
    assert clean["not_recorded"] == ["low_social_support", "parent_maltreated_as_child"]
    page = (work / "reports/report.html").read_text()
    assert "NCANDS" in page and "treat each child as independent" in page
    assert "No child protection plans in this input" in page
    assert json.loads((work / "metrics/durations.json").read_text())["plans"] == 0
    hr = pd.read_csv(work / "reports/survival/hazard_ratios.csv")
    assert "financial_problems" in set(hr["covariate"]) and "low_social_support" not in set(hr["covariate"])
    status = sh(["git", "status", "--porcelain"], work).stdout
    assert not [line for line in status.splitlines() if line.startswith((" D", "D "))], status
