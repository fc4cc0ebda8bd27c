"""Each kind of bad input stops the stage with one line naming file, column and row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT

CHILDREN = "child_id,family_id,la_code,sex,date_of_birth,ethnicity,disability\nC1,F1,LA01,M,2015-01-01,WHITE,0\n"
REFERRALS = ("referral_id,child_id,referral_date,referral_source,closure_date,outcome,substance_misuse,"
             "domestic_violence,mental_health,learning_disability,financial_problems,low_social_support,"
             "parent_maltreated_as_child,abuse_category\n"
             "R1,C1,2020-01-01,POLICE,2020-02-01,NFA,0,0,0,0,0,0,0,\n")
PLANS = "plan_id,child_id,start_date,end_date,category,end_reason\nP1,C1,2020-01-10,2020-04-01,NEGLECT,OTHER\n"


def run_clean(tmp_path: Path, files: dict[str, str | bytes], _clean: dict | None = None,
              **input_changes) -> subprocess.CompletedProcess:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["input"].update({"source": "extract", "dir": "in", **input_changes})
    params["clean"].update(_clean or {})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "in").mkdir(exist_ok=True)
    for name, content in files.items():
        path = tmp_path / "in" / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    env = {**os.environ, params["input"]["pseudonym_key_env"]: "test-key"}
    return subprocess.run([sys.executable, "-m", "pipeline.clean"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


GOOD = {"children.csv": CHILDREN, "referrals.csv": REFERRALS, "plans.csv": PLANS}


def test_good_input_runs(tmp_path):
    proc = run_clean(tmp_path, GOOD)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data/clean/referrals.parquet").exists()


def test_missing_file(tmp_path):
    proc = run_clean(tmp_path, {"children.csv": CHILDREN, "referrals.csv": REFERRALS})
    assert_one_line_error(proc, "in/plans.csv", "file not found")


def test_missing_column(tmp_path):
    proc = run_clean(tmp_path, {**GOOD, "children.csv": CHILDREN.replace(",sex", ",gender")})
    assert_one_line_error(proc, "in/children.csv", "missing column 'sex'", "line 1")


def test_unreadable_encoding(tmp_path):
    latin = (CHILDREN + "C2,F2,LA01,F,2016-01-01,WHITE,0\n").replace("LA01,F", "LA\xe901,F").encode("latin-1")
    proc = run_clean(tmp_path, {**GOOD, "children.csv": latin})
    assert_one_line_error(proc, "in/children.csv", "row 2", "encoding", "0xe9")


def test_other_encoding_when_declared(tmp_path):
    latin = CHILDREN.replace("LA01", "LA\xe901").encode("latin-1")
    proc = run_clean(tmp_path, {**GOOD, "children.csv": latin}, encoding="latin-1")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("content", ["", CHILDREN.splitlines()[0] + "\n"])
def test_empty_table(tmp_path, content):
    proc = run_clean(tmp_path, {**GOOD, "children.csv": content})
    assert_one_line_error(proc, "in/children.csv", "empty")


def test_wrong_type(tmp_path):
    rows = REFERRALS.splitlines()
    bad = [rows[0]] + [rows[1].replace("2020-01-01", "yesterday").replace("R1,", f"R{i},") for i in range(3)]
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": "\n".join(bad) + "\n"})
    assert_one_line_error(proc, "in/referrals.csv", "column referral_date", "row 1", "wrong type", "'yesterday'")


def test_wrong_type_in_parquet(tmp_path):
    table = pa.table({"child_id": ["C1"], "family_id": ["F1"], "la_code": ["LA01"], "sex": ["M"],
                      "date_of_birth": [3.5], "ethnicity": ["WHITE"], "disability": [0]})
    pq.write_table(table, tmp_path / "children.parquet")
    proc = run_clean(tmp_path, {**GOOD, "children.parquet": (tmp_path / "children.parquet").read_bytes()},
                     children="children.parquet")
    assert_one_line_error(proc, "in/children.parquet", "column date_of_birth", "row 1", "wrong type")


def test_parquet_input_accepted(tmp_path):
    table = pa.table({"child_id": ["C1"], "family_id": ["F1"], "la_code": ["LA01"], "sex": ["M"],
                      "date_of_birth": pa.array([pa.scalar(16436, pa.date32()).as_py()]),
                      "ethnicity": ["WHITE"], "disability": [0]})
    pq.write_table(table, tmp_path / "c.parquet")
    proc = run_clean(tmp_path, {**GOOD, "children.parquet": (tmp_path / "c.parquet").read_bytes()},
                     children="children.parquet")
    assert proc.returncode == 0, proc.stderr


def test_bad_params(tmp_path):
    proc = run_clean(tmp_path, GOOD, source="database")
    assert_one_line_error(proc, "params.yaml", "input.source")


def test_missing_key_for_real_extract(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["input"].update({"source": "extract", "dir": "in"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "in").mkdir()
    for name, content in GOOD.items():
        (tmp_path / "in" / name).write_text(content)
    env = {k: v for k, v in os.environ.items() if k != params["input"]["pseudonym_key_env"]}
    proc = subprocess.run([sys.executable, "-m", "pipeline.clean"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "PIPELINE_PSEUDONYM_KEY")
