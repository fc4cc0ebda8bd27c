"""The whole DVC pipeline on a scratch copy of the project: runs, is idempotent and deterministic."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import config, published
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)


def sh(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for folder in ("data", "metrics", "reports") for p in sorted((root / folder).rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A scratch clone of the tracked project files, with the pipeline run once."""
    work = tmp_path_factory.mktemp("project")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
    # Fewer bootstrap replicates than the default (200) keep this suite fast; the bootstrap's
    # statistics are tested in test_bootstrap.py.
    params = (work / "params.yaml").read_text().replace("bootstrap_replicates: 200", "bootstrap_replicates: 20")
    assert params.count("bootstrap_replicates: 20 ") == 2
    (work / "params.yaml").write_text(params)
    sh(["git", "init", "-q"], work)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], work)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], work)
    sh(["dvc", "repro"], work)
    return work


def test_repro_makes_every_output(project):
    for rel in ("data/raw/synthetic/children.csv", "data/raw/synthetic/truth.json", "data/clean/rejects.csv",
                "data/clean/referrals.parquet", "data/analysis/rereport.parquet",
                "data/analysis/cpp_durations.parquet", "metrics/clean.json", "metrics/episodes.json"):
        assert (project / rel).exists(), rel
    truth = json.loads((project / "data/raw/synthetic/truth.json").read_text())
    assert all(truth["achieved_meets_target"].values()), truth["achieved"]
    for rel in ("reports/calibration/optimism.csv", "reports/calibration/deciles.csv", "metrics/calibration.json",
                "metrics/logistic.json", "models/logistic.json", "reports/logistic/odds_ratios.csv",
                "reports/logistic/table1.csv",
                "reports/survival/hazard_ratios.csv", "reports/survival/ph_tests.csv",
                "reports/survival/plot_curves.csv", "reports/durations/planner_summary.csv",
                "reports/durations/banded_estimates.csv", "metrics/survival.json", "metrics/durations.json",
                "models/cox.json", "models/cox_baseline.csv", "reports/errors/rules.csv",
                "reports/errors/by_group.csv", "reports/errors/decision_curve.csv", "reports/errors/survival_ipcw.csv",
                "metrics/errors.json", "reports/report.html", "reports/summary.md",
                "reports/outputs/results.json", "metrics/outputs.json"):
        assert (project / rel).exists(), rel
    # On the default (after cleaning), the truth sits inside the 95% CI for at least 17 of the
    # 20 covariates that have one (P = 0.984 under nominal coverage; see test_survival).
    recovery = json.loads((project / "metrics/survival.json").read_text())["truth_recovery"]
    assert recovery["covariates_with_truth"] == 20 and recovery["true_value_in_95ci"] >= 17


def test_plots_render(project):
    out = json.loads(sh(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    assert {"Cumulative re-report (Kaplan-Meier, 95% CI)", "Child protection plans still open (Kaplan-Meier)",
            "Cumulative incidence of each end of follow-up (Aalen-Johansen)", "Decision curve (net benefit; Vickers and Elkin 2006)",
            "False positives and false negatives per 1,000 referrals, by risk threshold (validation data)",
            "Calibration of the logistic model (validation data; lowess, 95% family-bootstrap band)"} <= set(out)
    text = json.dumps(out)
    assert "cumulative_rereport" in text and "repeat_plans" in text and "cif_entered_care" in text


def test_second_repro_does_nothing(project):
    before = digests(project)
    out = sh(["dvc", "repro"], project).stdout
    assert "Running stage" not in out and "up to date" in out, out
    assert digests(project) == before


def test_forced_rerun_is_byte_identical(project):
    before = digests(project)
    sh(["dvc", "repro", "--force"], project)
    assert digests(project) == before


def test_clean_data_keep_the_calibration(project):
    """After faults are quarantined and ids hashed, the published figures still hold."""
    clean = {t: pd.read_parquet(project / f"data/clean/{t}.parquet") for t in ("children", "referrals", "plans")}
    p = config.load_params(project / "params.yaml")
    achieved = published.achieved_figures(clean["children"], clean["referrals"], clean["plans"],
                                          config.extract_date(p), p["episodes"]["same_episode_days"])
    assert all(published.check_against_targets(achieved).values()), achieved


def test_no_identifier_or_small_count_in_any_output(project):
    """Every file under reports/ and metrics/: no child, family or referral identifier of
    the input (raw or pseudonymised), no unsuppressed count below the threshold."""
    from pipeline.disclosure import scan

    identifiers: set[str] = set()
    raw = project / "data/raw/synthetic"
    for name, columns in (("children", ["child_id", "family_id"]), ("referrals", ["referral_id", "child_id"]),
                          ("plans", ["plan_id", "child_id"])):
        table = pd.read_csv(raw / f"{name}.csv", dtype=str)
        clean = pd.read_parquet(project / f"data/clean/{name}.parquet")
        for column in columns:
            identifiers |= set(table[column].dropna().str.strip())
            if column in clean:
                identifiers |= set(clean[column].dropna().astype(str))
    assert len(identifiers) > 50_000
    min_count = config.load_params(project / "params.yaml")["disclosure"]["min_cell_count"]
    assert scan([project / "reports", project / "metrics"], min_count, identifiers) == []


def test_report_leads_with_how_often_the_model_is_wrong(project):
    page = (project / "reports/report.html").read_text()
    body = page[page.index("<body>"):]
    assert body.index('<section id="how-often-wrong">') < body.index("<nav>")
    first = body[:body.index("</section>")]
    assert "How often this model is wrong" in first and 'id="error-table"' in first
    assert 'id="natural-frequencies"' in first and "Munro 2000" in first and "Synthetic data" in first
    for section in ("data", "cohort", "km", "hazard-ratios", "durations", "odds-ratios", "calibration", "subgroups",
                    "decision-curve", "sample-size", "tripod", "limitations", "reproducibility"):
        assert f"<section id='{section}'>" in page, section
    assert "src='http" not in page and 'src="http' not in page and "Content-Security-Policy" in page
    headline = (project / "reports/errors/headline.txt").read_text().strip()
    assert headline in (project / "reports/summary.md").read_text() and headline.startswith("Of 1,000 referrals")


def test_report_made_by_footers_name_files_the_run_made(project):
    from pipeline.report import MADE_BY

    named = [path for entries in MADE_BY.values() for *_, files in entries for path in files]
    assert "reports/logistic/table1.csv" in named
    assert [path for path in named if not (project / path).is_file()] == []
    page = (project / "reports/report.html").read_text()
    assert page.count("<p class='made-by'>made by: stage") == len(MADE_BY)


def test_report_in_headless_chromium(project):
    from tests.browser import find_chromium, inspect_report

    if find_chromium() is None:
        pytest.skip("chromium not installed: apt-get install chromium (make setup does, when it can)")
    seen = inspect_report(project / "reports/report.html")
    assert seen["requests"] == [], seen["requests"]
    assert seen["first_body_element"] == "section#how-often-wrong"
    assert seen["error_table_in_first_screen"]
    assert "How often this model is wrong" in seen["first_screen_text"]
    assert "Of 1,000 referrals" in seen["first_screen_text"]


def test_headline_rule_experiment(project):
    """dvc exp run -S errors.default_top_percent=10 changes the headline."""
    sh(["dvc", "exp", "run", "-S", "errors.default_top_percent=10"], project)
    changed = json.loads(sh(["dvc", "metrics", "diff", "--json"], project).stdout)["metrics/errors.json"]
    assert changed["headline.flagged"] == {"old": 200, "new": 100, "diff": -100}
    assert "flags 100:" in (project / "reports/summary.md").read_text()
    # Later experiments start from the default parameters; no test after this one needs
    # the default outputs, so they are not rebuilt (the suite's time is budgeted).
    sh(["git", "checkout", "--", "params.yaml"], project)


def test_logistic_experiment_horizon_ipcw_kfold_spline(project):
    """dvc exp run -S logistic.horizon_days=180 (with the options together: IPCW outcome,
    grouped 5-fold validation, a spline for age) reruns the logistic, calibration, errors
    and report stages; dvc metrics diff shows the change."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    covariates = list(params["logistic"]["covariates"] or params["survival"]["covariates"]) + ["age_years"]
    sh(["dvc", "exp", "run", "-S", "logistic.horizon_days=180",
        "-S", "logistic.censoring=ipcw", "-S", "logistic.split=grouped_kfold",
        "-S", "logistic.splines={age_years: 4}", "-S", f"logistic.covariates=[{', '.join(covariates)}]",
        "-S", "logistic.categorical=[sex, ethnicity]"], project)
    logistic_metrics = json.loads((project / "metrics/logistic.json").read_text())
    assert logistic_metrics["split"]["method"] == "grouped_kfold" and logistic_metrics["outcome"]["method"] == "ipcw"
    model = json.loads((project / "models/logistic.json").read_text())
    assert {"age_years", "age_years'", "age_years''"} <= set(model["terms"]) and len(model["spline_knots"]["age_years"]) == 4
    calibration = json.loads((project / "metrics/calibration.json").read_text())
    v = calibration["validation"]
    assert "inverse probability of censoring" in calibration["weighting"]
    assert v["c_lower"] < v["c"] < v["c_upper"] and v["spiegelhalter_z"] is None
    assert 0.9 < v["observed_expected"] < 1.1 and 0.85 < v["slope"] < 1.15
    folds = pd.read_csv(project / "reports/calibration/folds.csv")
    assert folds["fold"].tolist() == [1, 2, 3, 4, 5]
    changed = json.loads(sh(["dvc", "metrics", "diff", "--json"], project).stdout)
    assert changed["metrics/logistic.json"]["horizon_days"]["new"] == 180
    assert "validation.c" in changed["metrics/calibration.json"]
    assert "within 180 days" in (project / "reports/errors/headline.txt").read_text()
    sh(["git", "checkout", "--", "params.yaml"], project)


def test_experiment_changes_the_metrics(project):
    sh(["dvc", "exp", "run", "-S", "episodes.index=first_per_child"], project)
    diff = sh(["dvc", "metrics", "diff", "--json"], project).stdout
    changed = json.loads(diff)["metrics/episodes.json"]
    assert "counts.index_referrals" in changed and changed["counts.index_referrals"]["diff"] < 0


def test_analysis_table_entry_point(tmp_path):
    """A prepared survival table goes through clean and episodes to the model stages' contract."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["input"].update({"source": "analysis_table", "dir": "in"})
    params["input"]["analysis_table"].update({"file": "subjects.csv", "id": "pid", "cluster": "household",
                                              "duration": "days", "event": "died", "covariates": ["age", "arm"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "in").mkdir()
    rows = ["pid,household,days,died,age,arm", "1,h1,10,1,30,a", "2,h1,20,0,40,b", "3,h2,,1,50,a", "4,h3,5,0,60,b"]
    rng = np.random.default_rng(0)
    rows += [f"{i},h{i // 2},{rng.integers(1, 400)},{rng.integers(0, 2)},{rng.integers(20, 70)},{'ab'[i % 2]}"
             for i in range(5, 60)]
    (tmp_path / "in/subjects.csv").write_text("\n".join(rows) + "\n")
    env = {**os.environ, params["input"]["pseudonym_key_env"]: "k"}
    for stage in ("clean", "episodes", "survival", "durations"):
        subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=tmp_path, env=env, check=True,
                       capture_output=True)
    out = pd.read_parquet(tmp_path / "data/analysis/rereport.parquet")
    assert list(out.columns) == ["subject_id", "family_id", "time_days", "event", "age", "arm"]
    assert out["time_days"].tolist()[:3] == [10.0, 20.0, 5.0] and out["event"].tolist()[:3] == [1, 0, 0]
    assert out["age"].tolist()[:3] == [30, 40, 60] and len(out) == 58
    assert out["family_id"].iloc[0] == out["family_id"].iloc[1] != out["family_id"].iloc[2]
    metrics = json.loads((tmp_path / "metrics/clean.json").read_text())["tables"]["analysis_table"]
    assert metrics == {**metrics, "rows_in": 59, "rows_kept": 58, "rows_rejected": 1}
    # The model stages take it as it is: a Cox model on age and arm (categorical), no LA strata.
    hr = pd.read_csv(tmp_path / "reports/survival/hazard_ratios.csv")
    assert len(hr) == 2 and hr["covariate"].iloc[0] == "age" and hr["covariate"].iloc[1] in ("arm[a]", "arm[b]")


def test_error_counts_recount_from_the_saved_predictions(project):
    pred = pd.read_parquet(project / "data/predictions/validation.parquet")
    rules = pd.read_csv(project / "reports/errors/rules.csv")
    p, y = pred["p"].to_numpy(), pred["y"].to_numpy() == 1
    for _, row in rules[rules["kind"] == "threshold"].dropna(subset=["tp"]).iterrows():
        flagged = p >= row["threshold"]
        assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (
            (flagged & y).sum(), (flagged & ~y).sum(), (~flagged & y).sum(), (~flagged & ~y).sum()), row["rule"]
        assert row[["tp_per_1000", "fp_per_1000", "fn_per_1000", "tn_per_1000"]].sum() == 1000
    top = rules[rules["rule"] == "top 20%"].iloc[0]
    assert top["flagged"] == round(0.2 * len(pred)) and top["tp"] == y[np.argsort(-p, kind="stable")[:int(top["flagged"])]].sum()
