"""Real-world files: nothing lost, nothing invented, one line when a file is broken.

Each case is built by hand from the three-table layout (README: input contract); the run
is `python -m pipeline.clean` in a scratch folder, as a user runs it.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import clean
from tests.test_bad_input import CHILDREN, GOOD, PLANS, REFERRALS, assert_one_line_error, run_clean

KEY = clean.hashlib.blake2b(b"test-key", digest_size=32).digest()   # run_clean's key, as clean derives it


def pseudonym(value: str) -> str:
    return clean.pseudonymise(pd.Series([value]), KEY).iloc[0]


def kept(tmp_path: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / f"data/clean/{table}.parquet")


def metrics(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "metrics/clean.json").read_text())


# -- ids are text from the first byte ---------------------------------------------------------
def test_bom_before_an_all_digit_id_column_keeps_leading_zeros(tmp_path):
    children = "\ufeff" + CHILDREN.replace("C1,", "0000123,")
    referrals = REFERRALS.replace(",C1,", ",0000123,")
    plans = PLANS.replace(",C1,", ",0000123,")
    proc = run_clean(tmp_path, {"children.csv": children.encode("utf-8"), "referrals.csv": referrals,
                                "plans.csv": plans})
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "children")["child_id"].tolist() == [pseudonym("0000123")]
    assert kept(tmp_path, "referrals")["child_id"].tolist() == [pseudonym("0000123")]   # not unknown_child
    assert metrics(tmp_path)["tables"]["referrals"]["rows_rejected"] == 0


# -- a broken file stops with one line naming file, row (line) and what is wrong -------------------
REF_HEADER = REFERRALS.splitlines()[0]
REF_ROW = REFERRALS.splitlines()[1]


def referrals_file(rows: list[str], end: str = "\n") -> str:
    return "\n".join([REF_HEADER, *rows]) + end


def test_quote_opened_and_never_closed(tmp_path):
    # 4 data rows; row 2's quote swallows the rest of the file into one field.
    rows = [REF_ROW.replace("R1,", f"R{i},") for i in range(1, 5)]
    rows[1] = rows[1].replace(",NFA,", ',"NFA,')
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": referrals_file(rows)})
    assert_one_line_error(proc, "in/referrals.csv", "row 2", "line 3", "quote opened and never closed")
    assert "R2" not in proc.stderr and "C1" not in proc.stderr          # no raw ids in the message


def test_file_cut_inside_a_quoted_field(tmp_path):
    rows = [REF_ROW.replace("R1,", f"R{i},").replace(",POLICE,", ',"POLICE",') for i in range(1, 4)]
    text = referrals_file(rows)
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": text[: text.rindex('"POLICE"') + 4]})
    assert_one_line_error(proc, "in/referrals.csv", "row 3", "line 4", "quote opened and never closed")


def test_file_cut_mid_row(tmp_path):
    rows = [REF_ROW.replace("R1,", f"R{i},") for i in range(1, 4)]
    text = referrals_file(rows, end="")
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": text[: text.rindex(",NFA,")]})   # last row: 5 of 14 fields
    assert_one_line_error(proc, "in/referrals.csv", "row 3", "line 4", "5 fields, the header has 14", "cut short")


def test_row_with_an_extra_field(tmp_path):
    rows = [REF_ROW.replace("R1,", f"R{i},") for i in range(1, 4)]
    rows[1] += ",surplus"
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": referrals_file(rows)})
    assert_one_line_error(proc, "in/referrals.csv", "row 2", "line 3", "15 fields, the header has 14")
    assert "R2" not in proc.stderr and "surplus" not in proc.stderr


@pytest.mark.parametrize("quoted", [False, True])
def test_nul_bytes(tmp_path, quoted):
    rows = [REF_ROW.replace("R1,", f"R{i},") for i in range(1, 4)]
    rows[2] = rows[2].replace("R3,", "R3\x00\x00,")          # NUL padding after an id
    if quoted:
        rows[0] = rows[0].replace(",POLICE,", ',"POLICE",')
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": referrals_file(rows)})
    assert_one_line_error(proc, "in/referrals.csv", "row 3", "line 4", "field referral_id", "NUL byte")


def test_duplicated_column_name(tmp_path):
    children = CHILDREN.replace("ethnicity,disability", "ethnicity,sex").replace("WHITE,0", "WHITE,M")
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children})
    assert_one_line_error(proc, "in/children.csv", "column 'sex' appears twice", "columns 4 and 7")


def _xlsx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
    return out.getvalue()


def _parquet() -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"child_id": ["C1"]}), out)
    return out.getvalue()


@pytest.mark.parametrize("content, named", [
    (_xlsx(), "ZIP archive (an Excel .xlsx workbook is one)"),
    (gzip.compress(CHILDREN.encode()), "gzip-compressed"),
    (_parquet(), "a Parquet file: name it .parquet"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 20, "old Excel (.xls)"),
])
def test_binary_files_are_named(tmp_path, content, named):
    proc = run_clean(tmp_path, {**GOOD, "children.csv": content})
    assert_one_line_error(proc, "in/children.csv", "not a CSV text file", named)
    assert "encoding" not in proc.stderr


def test_utf16_without_the_setting_is_named(tmp_path):
    proc = run_clean(tmp_path, {**GOOD, "children.csv": CHILDREN.encode("utf-16")})
    assert_one_line_error(proc, "in/children.csv", "UTF-16", "input.encoding: utf-16")
    proc = run_clean(tmp_path, {name: text.encode("utf-16") for name, text in GOOD.items()}, encoding="utf-16")
    assert proc.returncode == 0, proc.stderr


def test_rows_in_counts_the_rows_of_the_file(tmp_path):
    # CRLF line ends, a quoted value with a newline inside, a blank line: 3 data rows.
    rows = [REF_ROW.replace("R1,", f"R{i},") for i in range(1, 4)]
    rows[1] = rows[1].replace(",POLICE,", ',"POL\nICE",')
    text = (REF_HEADER + "\r\n" + rows[0] + "\r\n\r\n" + rows[1] + "\r\n" + rows[2] + "\r\n")
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": text})
    assert proc.returncode == 0, proc.stderr
    m = metrics(tmp_path)["tables"]["referrals"]
    assert (m["rows_in"], m["rows_kept"], m["rows_rejected"]) == (3, 2, 1)   # "POL\nICE" is no known source
