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


# -- dates -----------------------------------------------------------------------------------------
CHILD_HEADER = CHILDREN.splitlines()[0]


def children_file(rows: list[str]) -> str:
    return "\n".join([CHILD_HEADER, *rows]) + "\n"


def rejects(tmp_path: Path) -> list[tuple]:
    r = pd.read_csv(tmp_path / "data/clean/rejects.csv", dtype=str, keep_default_na=False)
    return [tuple(x) for x in r[["table", "source_row", "field", "value", "reason"]].itertuples(index=False)]


@pytest.mark.parametrize("value", ["2006", "2006-05", "05/2006", "2006/5"])
def test_year_or_month_only_dates_are_partial_never_excel_serials(tmp_path, value):
    rows = ["C1,F1,LA01,M,2015-01-01,WHITE,0", f"C2,F2,LA01,F,{value},WHITE,0"]
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows)})
    assert proc.returncode == 0, proc.stderr
    assert rejects(tmp_path) == [("children", "2", "date_of_birth", value, "partial_date")]


def test_excel_serials_are_still_read(tmp_path):
    rows = ["C1,F1,LA01,M,42005,WHITE,0"]                    # Excel serial 42005 = 2015-01-01
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows)})
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "children")["date_of_birth"].iloc[0] == pd.Timestamp("2015-01-01")


def test_day_and_month_orders_mixed_in_one_column_stop(tmp_path):
    # Day first (the UK default): row 2 can only be month first (month 13 impossible), so
    # row 1's 05/06/2015 could be either: stop rather than guess.
    rows = ["C1,F1,LA01,M,05/06/2015,WHITE,0", "C2,F2,LA01,F,05/13/2015,WHITE,0"]
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows)})
    assert_one_line_error(proc, "in/children.csv", "column date_of_birth", "day and month orders are mixed",
                          "row 2", "row 1")


def test_unambiguous_day_first_dates_are_fine(tmp_path):
    rows = ["C1,F1,LA01,M,13/05/2015,WHITE,0", "C2,F2,LA01,F,05/05/2015,WHITE,0"]
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows)})
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "children")["date_of_birth"].tolist() == [pd.Timestamp("2015-05-13"),
                                                                    pd.Timestamp("2015-05-05")]


def test_sentinel_dates_are_missing(tmp_path):
    # 9999-12-31 as a plan's end: no end (open); 1900-01-01 as a birth date: unknown (quarantined).
    rows = ["C1,F1,LA01,M,2015-01-01,WHITE,0", "C2,F2,LA01,F,1900-01-01,WHITE,0"]
    plans = PLANS.replace("2020-04-01", "9999-12-31")
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows), "plans.csv": plans})
    assert proc.returncode == 0, proc.stderr
    assert rejects(tmp_path) == [("children", "2", "date_of_birth", "1900-01-01", "missing_value")]
    assert kept(tmp_path, "plans")["end_date"].isna().all()
    read_as_missing = metrics(tmp_path)["tables"]["plans"]["normalised"]["read_as_missing"]
    assert read_as_missing == {"end_date": {"9999-12-31": 1}}


def test_zoned_timestamps(tmp_path):
    # CSV: the date as written (the record's own zone); Parquet: the date in the column's zone.
    rows = ["C1,F1,LA01,M,2015-01-01T23:30:00+01:00,WHITE,0"]
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows)})
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "children")["date_of_birth"].iloc[0] == pd.Timestamp("2015-01-01")
    utc_late = pd.Timestamp("2015-01-02 04:30", tz="UTC")          # 23:30 on 1 January in New York
    table = pa.table({"child_id": ["C1"], "family_id": ["F1"], "la_code": ["LA01"], "sex": ["M"],
                      "date_of_birth": pa.array([utc_late], type=pa.timestamp("us", tz="America/New_York")),
                      "ethnicity": ["WHITE"], "disability": ["0"]})
    out = io.BytesIO()
    pq.write_table(table, out)
    proc = run_clean(tmp_path, {**GOOD, "children.parquet": out.getvalue()}, children="children.parquet")
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "children")["date_of_birth"].iloc[0] == pd.Timestamp("2015-01-01")


def test_parquet_end_date_9999_is_no_end(tmp_path):
    import datetime as dt

    table = pa.table({"plan_id": ["P1"], "child_id": ["C1"], "start_date": pa.array([dt.date(2020, 1, 10)]),
                      "end_date": pa.array([dt.date(9999, 12, 31)]), "category": ["NEGLECT"], "end_reason": [None]},
                     schema=pa.schema([("plan_id", pa.string()), ("child_id", pa.string()),
                                       ("start_date", pa.date32()), ("end_date", pa.date32()),
                                       ("category", pa.string()), ("end_reason", pa.string())]))
    out = io.BytesIO()
    pq.write_table(table, out)
    proc = run_clean(tmp_path, {**GOOD, "plans.parquet": out.getvalue()}, plans="plans.parquet")
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "plans")["end_date"].isna().all()


# -- missing-value spellings ------------------------------------------------------------------------
def test_missing_value_spellings_are_missing_in_every_field(tmp_path):
    # Five children whose family id is a spelling of "missing": never five real families.
    rows = [f"C{i},{v},LA01,M,2015-01-01,WHITE,0" for i, v in enumerate(["NULL", "N/A", "NaN", "#N/A", "null"], 1)]
    rows.append("C9,F9,LA01,M,2015-01-01,WHITE,0")
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows),
                                "referrals.csv": REFERRALS.replace(",C1,", ",C9,"),
                                "plans.csv": PLANS.replace(",C1,", ",C9,")})
    assert proc.returncode == 0, proc.stderr
    assert [r[2:] for r in rejects(tmp_path)] == [("family_id", v, "missing_id")
                                                  for v in ["NULL", "N/A", "NaN", "#N/A", "null"]]
    assert metrics(tmp_path)["tables"]["children"]["normalised"]["read_as_missing"] == {
        "family_id": {"NULL": 1, "N/A": 1, "NaN": 1, "#N/A": 1, "null": 1}}


def test_missing_value_spellings_are_configurable(tmp_path):
    rows = ["C1,F1,LA01,M,2015-01-01,WHITE,0", "C2,unknown,LA01,M,2015-01-01,WHITE,0"]
    files = {**GOOD, "children.csv": children_file(rows)}
    proc = run_clean(tmp_path, files)
    assert proc.returncode == 0 and rejects(tmp_path) == []          # "unknown" is a family id by default
    proc = run_clean(tmp_path, files, _clean={"missing_values": ["unknown"]})
    assert proc.returncode == 0, proc.stderr
    assert rejects(tmp_path) == [("children", "2", "family_id", "unknown", "missing_id")]


# -- real data never meet the public key --------------------------------------------------------------
def _clean_without_key(tmp_path: Path, files: dict[str, str], marker: dict | None):
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["input"]["source"] == "synthetic"
    folder = tmp_path / params["input"]["dir"]
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    if marker is not None:
        (folder / "simulated.json").write_text(json.dumps(marker))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != params["input"]["pseudonym_key_env"]}
    return subprocess.run([sys.executable, "-m", "pipeline.clean"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_real_extract_in_the_synthetic_folder_needs_the_secret_key(tmp_path):
    proc = _clean_without_key(tmp_path, GOOD, marker=None)
    assert_one_line_error(proc, "children.csv", "input.source is synthetic, but this is not the file simulate wrote",
                          "set input.source: extract and a secret key in PIPELINE_PSEUDONYM_KEY")
    assert not (tmp_path / "data/clean").exists()


def test_the_simulated_files_are_recognised_and_a_changed_one_is_not(tmp_path):
    from pipeline.io import file_sha256

    sums = {}
    for name, text in GOOD.items():
        (tmp_path / name).write_text(text)
        sums[name] = file_sha256(tmp_path / name)
    ok = _clean_without_key(tmp_path / "a", GOOD, marker=sums)
    assert ok.returncode == 0, ok.stderr
    changed = {**GOOD, "referrals.csv": REFERRALS.replace("POLICE", "SCHOOL")}
    proc = _clean_without_key(tmp_path / "b", changed, marker=sums)
    assert_one_line_error(proc, "referrals.csv", "its SHA-256 differs from")


def test_a_quote_inside_an_unquoted_value_stops(tmp_path):
    rows = [REF_ROW.replace("R1,", f"R{i},").replace(",POLICE,", ',"POLICE",') for i in range(1, 4)]
    rows[1] = rows[1].replace("R2,", 'R"2,')
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": referrals_file(rows)})
    assert_one_line_error(proc, "in/referrals.csv", "line 3", "a quote inside an unquoted value")


def test_quoted_values_with_commas_and_doubled_quotes_are_read(tmp_path):
    rows = [REF_ROW.replace("R1,", '"R1, the ""first""",')]
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": referrals_file(rows)})
    assert proc.returncode == 0, proc.stderr
    assert kept(tmp_path, "referrals")["referral_id"].tolist() == [pseudonym('R1, the "first"')]


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "1e9", "-3"])
def test_impossible_durations_are_rejected(value):
    """A prepared table's durations: infinite, negative or longer than clean.max_duration_years
    (120 years; 1e9 days is 2.7 million years) are invalid_value, with the raw value."""
    raw = pd.DataFrame({"id": ["a", "b", "c"], "t": ["10", value, "20"], "e": ["1", "0", "1"]})
    spec = {"id": "id", "cluster": None, "duration": "t", "event": "e", "covariates": []}
    kept_rows, rejected, m = clean.clean_analysis_table(raw, spec, Path("t.csv"), key=b"k")
    assert rejected[["source_row", "field", "value", "reason"]].values.tolist() == [[2, "t", value, "invalid_value"]]
    assert m["tables"]["analysis_table"]["rows_in"] == 3 == len(kept_rows) + len(rejected)


def test_a_long_but_possible_duration_is_kept():
    raw = pd.DataFrame({"id": ["a", "b"], "t": ["10", "100"], "e": ["1", "0"]})
    spec = {"id": "id", "cluster": None, "duration": "t", "duration_unit": "years", "event": "e", "covariates": []}
    _, rejected, _ = clean.clean_analysis_table(raw, spec, Path("t.csv"), key=b"k")
    assert rejected.empty                                 # 100 years <= 120


@pytest.mark.parametrize("text, stray", [
    (b'a,b\n1,2\n', None), (b'"a","b"\n"1","2"\n', None), (b'a,b\n"x, ""y""",2\n', None),
    (b'a,b\n"",""\n', None), (b'a,b\nx"y,2\n', 5), (b'a,b\n"x"y,2\n', 6), (b'a,b\n""x,2\n', 5),
])
def test_stray_quote_positions(text, stray):
    """RFC 4180 by hand: an opening quote follows a delimiter or a line start, a closing one
    precedes a delimiter or a line end, a doubled quote is one quote inside a quoted value."""
    from pipeline.io import stray_quote

    assert stray_quote(text) == stray


@pytest.mark.parametrize("value", ["31/12/9999", "9999-12-31 00:00:00", "9999-12-31T00:00:00Z"])
def test_sentinels_in_other_spellings(tmp_path, value):
    proc = run_clean(tmp_path, {**GOOD, "plans.csv": PLANS.replace("2020-04-01", value)})
    assert proc.returncode == 0, proc.stderr
    assert rejects(tmp_path) == [] and kept(tmp_path, "plans")["end_date"].isna().all()   # an open plan


def test_a_year_from_a_float_column_is_partial(tmp_path):
    rows = ["C1,F1,LA01,M,2015-01-01,WHITE,0", "C2,F2,LA01,F,2006.0,WHITE,0", "C3,F3,LA01,F,2020-13,WHITE,0",
            *[f"C{i},F{i},LA01,F,2016-01-01,WHITE,0" for i in range(4, 7)]]
    proc = run_clean(tmp_path, {**GOOD, "children.csv": children_file(rows)})
    assert proc.returncode == 0, proc.stderr
    assert rejects(tmp_path) == [("children", "2", "date_of_birth", "2006.0", "partial_date"),
                                 ("children", "3", "date_of_birth", "2020-13", "unparseable_date")]


def test_quoted_values_with_line_breaks_beyond_the_readers_block_size(tmp_path):
    # A free-text column (ignored by clean) holding commas, doubled quotes and line breaks, in a
    # file larger than pyarrow's 1 MiB parse block: every row read, every value intact.
    note = '"a note, with a comma\nand a ""quoted"" second line' + " x" * 200 + '"'
    rows = [REF_ROW.replace("R1,", f"R{i},") + "," + note for i in range(1, 3001)]
    text = REF_HEADER + ",note\n" + "\n".join(rows) + "\n"
    assert len(text) > 1.2 * 2**20
    proc = run_clean(tmp_path, {**GOOD, "referrals.csv": text})
    assert proc.returncode == 0, proc.stderr
    m = metrics(tmp_path)["tables"]["referrals"]
    assert (m["rows_in"], m["rows_kept"], m["rows_rejected"]) == (3000, 3000, 0)
    assert m["ignored_columns"] == ["note"]


def test_classic_mac_line_ends_and_an_empty_plans_table(tmp_path):
    proc = run_clean(tmp_path, {**GOOD, "children.csv": CHILDREN.replace("\n", "\r"),
                                "plans.csv": PLANS.splitlines()[0] + "\n"})
    assert proc.returncode == 0, proc.stderr
    assert metrics(tmp_path)["tables"]["plans"]["rows_in"] == 0 and len(kept(tmp_path, "children")) == 1
