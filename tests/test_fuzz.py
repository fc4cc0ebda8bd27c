"""Fuzz: corrupted copies of a synthetic extract through the whole pipeline.

Each corruption is a seeded change to one file of a fault-free simulated extract (so every
row of the uncorrupted source is valid). For each, `clean` either stops with one line or
runs, and then: rows in = kept + rejected for every table; every kept row equals its row in
the uncorrupted source (ids through the same keyed hash, dates, codes); and every later stage
ends without a traceback (exit 0, or exit 2 with one line). Corruptions change structure or
bytes (never a digit into another digit, which no reader could tell from the truth).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import clean, simulate
from tests.conftest import ROOT, with_changes

pytestmark = pytest.mark.slow
KEY = "fuzz-key"
STAGES_AFTER_CLEAN = ("episodes", "survival", "durations", "logistic", "calibration", "errors", "report")


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _data_line_starts(data: bytes) -> list[int]:
    starts = [i + 1 for i, b in enumerate(data) if b == 10][:-1]
    return starts[1:] if len(starts) > 1 else starts   # skip the header's


def corrupt(name: str, data: bytes, rng: np.random.Generator) -> bytes:
    starts = _data_line_starts(data)
    row = int(rng.choice(starts))
    inside = row + int(rng.integers(1, 8))          # a few bytes into a data row
    lines = _lines(data)
    header = lines[0].split(b",")
    if name == "bom":
        return b"\xef\xbb\xbf" + data
    if name == "crlf_and_blank_lines":
        return data.replace(b"\n", b"\r\n").replace(lines[3] + b"\r\n", lines[3] + b"\r\n\r\n")
    if name == "cut_mid_row":
        return data[:inside]
    if name == "cut_at_a_line_end":
        return data[:row]
    if name == "cut_inside_a_quote":
        return data[:row] + b'"' + data[row:inside]
    if name == "unclosed_quote":
        return data[:inside] + b'"' + data[inside:]
    if name == "nul_bytes":
        return data[:inside] + b"\x00\x00" + data[inside:]
    if name == "invalid_byte":
        return data[:inside] + b"\xff" + data[inside + 1:]
    if name == "inserted_comma":
        return data[:inside] + b"," + data[inside:]
    if name == "inserted_newline":
        return data[:inside] + b"\n" + data[inside:]
    i, j = 1, len(header) - 2
    if name in ("swapped_columns", "swapped_columns_data_only"):
        out = []
        for k, line in enumerate(lines):
            cells = line.split(b",")
            if len(cells) == len(header) and (k > 0 or name == "swapped_columns"):
                cells[i], cells[j] = cells[j], cells[i]
            out.append(b",".join(cells))
        return b"\n".join(out)
    if name == "header_repeated_as_a_row":
        k = len(lines) // 2
        return b"\n".join(lines[:k] + [lines[0]] + lines[k:])
    if name == "duplicated_header_name":
        return b",".join([header[0], header[0], *header[2:]]) + data[len(lines[0]):]
    raise ValueError(name)


#: What clean must do with each: stop with one line, or read the file (then every later stage runs).
STOPS = {"cut_mid_row", "cut_inside_a_quote", "unclosed_quote", "nul_bytes", "invalid_byte", "inserted_comma",
         "inserted_newline", "swapped_columns_data_only", "duplicated_header_name"}
CORRUPTIONS = ("bom", "crlf_and_blank_lines", "cut_mid_row", "cut_at_a_line_end", "cut_inside_a_quote",
               "unclosed_quote", "nul_bytes", "invalid_byte", "inserted_comma", "inserted_newline",
               "swapped_columns", "swapped_columns_data_only", "header_repeated_as_a_row", "duplicated_header_name")


@pytest.fixture(scope="module")
def source(tmp_path_factory, params):
    """A small fault-free simulated extract written as CSV, and its typed tables."""
    p = with_changes(params, simulate={**params["simulate"], "n_children": 1500, "fault_rate": 0.0})
    extract = simulate.simulate(p)
    folder = tmp_path_factory.mktemp("fuzz-source")
    tables = {"children": extract.children, "referrals": extract.referrals, "plans": extract.plans}
    for name, frame in tables.items():
        out = frame.copy()
        for column in out.columns:
            if pd.api.types.is_datetime64_any_dtype(out[column]):
                out[column] = out[column].dt.strftime("%Y-%m-%d")
        out.to_csv(folder / f"{name}.csv", index=False)
    return folder, tables


def run(stage: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPELINE_PSEUDONYM_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def assert_clean_exit(proc: subprocess.CompletedProcess, what: str) -> None:
    assert "Traceback" not in proc.stderr, f"{what}: {proc.stderr[-2000:]}"
    if proc.returncode:
        assert proc.returncode == 2, f"{what}: exit {proc.returncode}: {proc.stderr[-2000:]}"
        assert len(proc.stderr.strip().splitlines()) == 1, f"{what}: {proc.stderr}"


def fingerprint(frame: pd.DataFrame, columns: list[str]) -> set[tuple]:
    out = frame[columns].copy()
    for column in columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d")
    return set(map(tuple, out.astype(str).where(out.notna(), "").to_numpy()))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_extract(tmp_path, source, params, corruption):
    folder, truth = source
    rng = np.random.default_rng(CORRUPTIONS.index(corruption))
    target = ("referrals", "children", "plans")[CORRUPTIONS.index(corruption) % 3]
    (tmp_path / "in").mkdir()
    for name in ("children", "referrals", "plans"):
        data = (folder / f"{name}.csv").read_bytes()
        (tmp_path / "in" / f"{name}.csv").write_bytes(corrupt(corruption, data, rng) if name == target else data)
    # Rows each file really holds: the source's, but for a repeated header line (one row more)
    # and a file cut at a line end (its complete lines, header excluded).
    cut = (tmp_path / "in" / f"{target}.csv").read_bytes().count(b"\n") - 1
    rows_expected = {name: len(frame) + (name == target and corruption == "header_repeated_as_a_row")
                     for name, frame in truth.items()}
    if corruption == "cut_at_a_line_end":
        rows_expected[target] = cut
    p = with_changes(params, input={**params["input"], "source": "extract", "dir": "in"},
                     calibration={**params["calibration"], "bootstrap_replicates": 5},
                     errors={**params["errors"], "bootstrap_replicates": 5})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    proc = run("clean", tmp_path)
    assert_clean_exit(proc, f"{corruption} in {target}: clean")
    assert (proc.returncode == 2) == (corruption in STOPS), (corruption, target, proc.stderr)
    if proc.returncode:
        return
    m = json.loads((tmp_path / "metrics/clean.json").read_text())
    key = clean.hashlib.blake2b(KEY.encode(), digest_size=32).digest()
    for name, frame in truth.items():
        t = m["tables"][name]
        assert t["rows_in"] == t["rows_kept"] + t["rows_rejected"], (corruption, name, t)
        assert t["rows_in"] == rows_expected[name], (corruption, name, t)    # no row lost or invented
        kept = pd.read_parquet(tmp_path / f"data/clean/{name}.parquet")
        original = frame.copy()
        for column in [c for c in original.columns if c.endswith("_id")]:
            original[column] = clean.pseudonymise(original[column].astype(str), key)
        columns = [c for c in kept.columns if c in original.columns and not c.endswith(("flag",))]
        assert fingerprint(kept, columns) <= fingerprint(original, columns), (corruption, name)
    for stage in STAGES_AFTER_CLEAN:
        done = run(stage, tmp_path)
        assert_clean_exit(done, f"{corruption} in {target}: {stage}")
        assert done.returncode == 0, (corruption, stage, done.stderr)   # a readable extract runs to the end
    assert (tmp_path / "reports/report.html").exists()
