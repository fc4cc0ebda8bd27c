"""Cleaning in blocks (``clean.clean_streamed``, ``io.iter_table``) gives what cleaning whole gives.

A national extract does not fit in memory as a frame of strings, so files above
``clean.in_memory_max_mb`` are read and normalised in blocks, and the rules that look across
rows (duplicates, children across tables, overlapping plans) run on a few whole columns.
These tests hold the two paths to the same kept rows, rejects (reason, field, raw value,
row), metrics and errors, with blocks small enough that every table is cut many times, and
check the rules across rows by hand where their rows fall in different blocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import clean, config
from pipeline.cli import InputError
from pipeline.io import iter_table, read_table, write_csv_fast

EXTRACT_DATE = pd.Timestamp("2025-03-31")


def _both(paths: dict[str, Path], out: Path, block_bytes: int, **options):
    raw = {t: read_table(p, allow_empty=t == "plans") for t, p in paths.items()}
    kept, rejects, metrics = clean.clean_extract(raw, paths, extract_date=EXTRACT_DATE, **options)
    out.mkdir(parents=True, exist_ok=True)
    streamed_rejects, streamed_metrics = clean.clean_streamed(paths, out, extract_date=EXTRACT_DATE,
                                                              block_bytes=block_bytes, **options)
    streamed = {name: pd.read_parquet(out / f"{name}.parquet") for name in kept}
    return (kept, rejects, metrics), (streamed, streamed_rejects, streamed_metrics)


def _assert_same(whole, streamed):
    kept, rejects, metrics = whole
    kept_s, rejects_s, metrics_s = streamed
    pd.testing.assert_frame_equal(rejects.reset_index(drop=True), rejects_s.reset_index(drop=True))
    assert json.dumps(metrics) == json.dumps(metrics_s)   # key order too: metrics/clean.json is diffed
    for name, frame in kept.items():
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), kept_s[name])


@pytest.fixture(scope="module")
def extract_files(tmp_path_factory, faulted_extract):
    raw, _ = faulted_extract
    folder = tmp_path_factory.mktemp("extract")
    for name, frame in raw.items():
        write_csv_fast(frame, folder / f"{name}.csv")
    return {name: folder / f"{name}.csv" for name in raw}


def test_the_default_extract_with_every_fault_class_cleans_the_same_in_blocks(extract_files, tmp_path):
    block = 200_000
    assert all(p.stat().st_size > 2 * block for p in extract_files.values() if p.stem != "plans")
    whole, streamed = _both(extract_files, tmp_path / "clean", block)
    _assert_same(whole, streamed)
    assert whole[2]["tables"]["referrals"]["rows_rejected"] > 100   # the faults are there to be found


def _write(folder: Path, tables: dict[str, str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / f"{name}.csv").write_text(text)
    return {name: folder / f"{name}.csv" for name in tables}


CHILDREN = ("child_id,family_id,la_code,sex,date_of_birth,ethnicity,disability,looked_after_date\n"
            "C1,F1,LA01,M,2015-01-01,WHITE,0,\n"
            "C2,F1,LA01,F,2016-01-01,WHITE,0,\n"
            "C1,F1,LA01,M,2015-01-01,WHITE,0,\n"          # row 3 repeats row 1 exactly
            "C3,F2,LA02,F,2014-06-30,ASIAN,1,\n"
            "C2,F9,LA02,F,2016-01-01,WHITE,0,\n")         # row 5: C2's id again, other values
REFERRAL_HEADER = ("referral_id,child_id,referral_date,referral_source,closure_date,outcome,substance_misuse,"
                   "domestic_violence,mental_health,learning_disability,financial_problems,low_social_support,"
                   "parent_maltreated_as_child,abuse_category\n")


def test_rules_across_rows_find_rows_in_other_blocks(tmp_path):
    """Blocks of 60 bytes hold one row each, so every rule across rows crosses blocks.

    Worked by hand from REJECT_REASONS' order: children row 3 repeats row 1 (duplicate_row,
    "same as row 1"); row 5 has row 2's id with other values (duplicate_id, value "C2").
    Referrals: R1 is C1's (kept); R2 is C9's, in no children row (unknown_child); R1 again in
    row 3 (duplicate_id); R4 predates C3's birth 2014-06-30 (referral_before_birth, value
    "2014-01-02"). Plans: P2 starts before C1's P1 (2020-01-01 to 2021-01-01) has ended
    (overlapping_plan, value "2020-06-01").
    """
    referrals = (REFERRAL_HEADER
                 + "R1,C1,2020-01-01,POLICE,2020-02-01,NFA,0,0,0,0,0,0,0,\n"
                 + "R2,C9,2020-01-01,POLICE,2020-02-01,NFA,0,0,0,0,0,0,0,\n"
                 + "R1,C2,2020-03-01,POLICE,2020-04-01,NFA,0,0,0,0,0,0,0,\n"
                 + "R4,C3,2014-01-02,POLICE,2014-02-01,NFA,0,0,0,0,0,0,0,\n")
    plans = ("plan_id,child_id,start_date,end_date,category,end_reason\n"
             "P1,C1,2020-01-01,2021-01-01,NEGLECT,NO_LONGER_REQUIRED\n"
             "P2,C1,2020-06-01,2020-09-01,NEGLECT,NO_LONGER_REQUIRED\n")
    paths = _write(tmp_path / "in", {"children": CHILDREN, "referrals": referrals, "plans": plans})
    whole, streamed = _both(paths, tmp_path / "clean", 60)
    _assert_same(whole, streamed)
    got = streamed[1][["table", "source_row", "reason", "value"]].values.tolist()
    assert got == [["children", 3, "duplicate_row", "same as row 1"],
                   ["children", 5, "duplicate_id", "C2"],
                   ["referrals", 2, "unknown_child", "C9"],
                   ["referrals", 3, "duplicate_id", "R1"],
                   ["referrals", 4, "referral_before_birth", "2014-01-02"],
                   ["plans", 2, "overlapping_plan", "2020-06-01"]]
    assert [len(streamed[0][t]) for t in ("children", "referrals", "plans")] == [3, 1, 1]


def test_a_column_check_spanning_blocks_stops_with_the_whole_file_error(tmp_path):
    """Day first: "02/03/2020" (row 1) reads either way, "03/13/2020" (row 3, month 13 as the
    second part) only month first; apart they are fine, together the column cannot be read
    safely. The two rows are in different blocks; the error names rows 3 and 1, as whole."""
    referrals = (REFERRAL_HEADER
                 + "R1,C1,02/03/2020,POLICE,,NFA,0,0,0,0,0,0,0,\n"
                 + "R2,C1,2020-01-01,POLICE,,NFA,0,0,0,0,0,0,0,\n"
                 + "R3,C1,03/13/2020,POLICE,,NFA,0,0,0,0,0,0,0,\n")
    paths = _write(tmp_path / "in", {"children": CHILDREN, "referrals": referrals,
                                     "plans": "plan_id,child_id,start_date,end_date,category,end_reason\n"})
    errors = []
    for run in (lambda: clean.clean_extract({t: read_table(p, allow_empty=t == "plans") for t, p in paths.items()},
                                            paths, extract_date=EXTRACT_DATE),
                lambda: clean.clean_streamed(paths, tmp_path / "clean", extract_date=EXTRACT_DATE, block_bytes=60)):
        with pytest.raises(InputError) as err:
            run()
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert "row 3 can only be month first, so row 1 and the like" in errors[1]


def test_wrong_type_is_judged_on_the_whole_column(tmp_path):
    """Disability: 2 of 5 values unreadable ("x" in rows 2 and 4) is 40%, under the 50% limit
    for the file, though one block (rows 2 alone) is 100% unreadable: no error, two rejects.
    With the limit at 30% the error names row 2 and "2 of 5", as the whole-file check does."""
    children = CHILDREN.replace("C2,F1,LA01,F,2016-01-01,WHITE,0,", "C2,F1,LA01,F,2016-01-01,WHITE,x,") \
                       .replace("C3,F2,LA02,F,2014-06-30,ASIAN,1,", "C3,F2,LA02,F,2014-06-30,ASIAN,x,")
    paths = _write(tmp_path / "in", {"children": children, "referrals": REFERRAL_HEADER
                                     + "R1,C1,2020-01-01,POLICE,,NFA,0,0,0,0,0,0,0,\n",
                                     "plans": "plan_id,child_id,start_date,end_date,category,end_reason\n"})
    whole, streamed = _both(paths, tmp_path / "clean", 60)
    _assert_same(whole, streamed)
    assert streamed[2]["tables"]["children"]["rejected_by_reason"]["unknown_code"] == 2
    with pytest.raises(InputError, match=r"disability, row 2: wrong type.*\(2 of 5 values unreadable\)"):
        clean.clean_streamed(paths, tmp_path / "clean2", extract_date=EXTRACT_DATE, block_bytes=60,
                             max_unparseable_share=0.3)


@pytest.mark.parametrize("text", [
    "a,b\n1,2\n3,4\n5,6\n",
    "a,b\r\n1,2\r\n3,4\r\n\r\n5,6",                       # CRLF, a blank line, no final line end
    '\ufeff"a","b"\n"x\ny",2\n3,"4"\n"5","6,7"\n8,9\n',   # BOM; a line break and a comma inside quotes
    "a,b\n1,2\n3\n5,6\n",                                  # a short row
    "a,b\n1,2\n3,4\n5,6,7\n",                              # a long row
    'a,b\n1,2\n3,"4\n5,6\n',                               # a quote never closed
    'a,b\n1,2\n3,x"4\n5,6\n',                              # a stray quote
    "a,b\n1,\x002\n",                                      # a NUL byte
    "a,a\n1,2\n",                                          # a repeated column
    "a,b\n",                                               # a header alone
    "a,b\n1,2\n3,4\n5",                                    # cut short
    "a,b\n1,2\n3,4\n  ",                                   # a last line of spaces: a row (cut short)
    "a\n1\n2\n ",                                          # one column: a row of a space
    "a,b\n\n\n1,2\n3,\x00\n",                              # NUL after blank lines: row named as whole names it
    "a,b\n1,2\n3,4\n5,O\"Brien\n" + "6,7\n" * 40,            # a stray quote, then many lines
])
@pytest.mark.parametrize("block_bytes", [7, 11, 1000])
def test_blocks_read_as_the_whole_file_reads(tmp_path, text, block_bytes):
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("utf-8"))
    try:
        whole, whole_error = read_table(path), None
    except InputError as err:
        whole, whole_error = None, str(err)
    try:
        parts = list(iter_table(path, block_bytes=block_bytes))
        blocks_error = None
    except InputError as err:
        parts, blocks_error = None, str(err)
    assert whole_error == blocks_error       # the same one-line error, rows named in the whole file
    if whole is not None:
        streamed = pd.concat([frame for _, frame in parts], ignore_index=True)
        pd.testing.assert_frame_equal(whole, streamed)
        assert [offset for offset, _ in parts] == list(pd.Series([len(f) for _, f in parts]).cumsum().shift(
            fill_value=0))


def test_a_stray_quote_stops_the_file_without_reading_the_rest(tmp_path, monkeypatch):
    """With a stray quote no later line break is "outside quotes", so no block could be cut:
    the reader names the quote once its buffer passes a block instead of reading on."""
    from pipeline import io as pipeline_io

    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n3,O\"Brien\n" + b"5,6\n" * 10_000)
    reads = []
    real_open = open

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def read(self, n=-1):
            data = self.handle.read(n)
            reads.append(len(data))
            return data

        def seek(self, *a):
            return self.handle.seek(*a)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.handle.close()

    monkeypatch.setattr(pipeline_io, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    with pytest.raises(InputError, match=r"line 3: a quote inside an unquoted value"):
        list(iter_table(path, block_bytes=64))
    assert sum(reads[1:]) < 1_000     # the 40 KB file was not read to its end (the first read is the 1 MB head)


def test_an_unreadable_byte_in_the_header_is_line_1(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\xff\n1,2\n")
    with pytest.raises(InputError) as whole:
        read_table(path)
    with pytest.raises(InputError) as blocks:
        list(iter_table(path, block_bytes=5))
    assert str(whole.value) == str(blocks.value) and "row 0 (line 1)" in str(blocks.value)


def test_an_unreadable_byte_is_named_by_its_line_in_the_whole_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n5,\xff\n")
    with pytest.raises(InputError, match=r"row 3 \(line 4\): unreadable encoding, byte 0xff"):
        list(iter_table(path, block_bytes=8))


def test_clean_main_takes_the_block_route_above_the_size_limit(params, monkeypatch, tmp_path, extract_files):
    """The stage picks the route by file size (``clean.in_memory_max_mb``)."""
    calls = []
    monkeypatch.setattr(clean, "clean_streamed", lambda *a, **k: calls.append(k["block_bytes"]) or (_ for _ in ()).throw(
        SystemExit("streamed")))
    monkeypatch.chdir(tmp_path)
    p = config.load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    p["input"].update(source="extract", dir=str(extract_files["children"].parent))
    p["clean"].update(in_memory_max_mb=0.1, block_mb=1)
    monkeypatch.setattr(config, "load_params", lambda *a, **k: p)
    monkeypatch.setenv(p["input"]["pseudonym_key_env"], "test-key")
    with pytest.raises(SystemExit, match="streamed"):
        clean.main()
    assert calls == [2**20]


def test_parquet_in_blocks_judges_whole_numbers_on_the_whole_column(tmp_path):
    """Excel serial birth dates as Parquet floats: 42370.5 is not whole, so no value of the
    column is written as a whole number ("50000.0", as whole); a block of 2 rows holding only
    whole values must not write "50000". (Review finding; batches of block_bytes // 64 rows.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(pd.io.common.StringIO(CHILDREN), dtype=str)
    frame["date_of_birth"] = [42005.0, 50000.0, 42005.0, 41820.0, 42370.5]
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "children.parquet")
    paths = _write(folder, {"referrals": REFERRAL_HEADER + "R1,C1,2020-01-01,POLICE,,NFA,0,0,0,0,0,0,0,\n",
                            "plans": "plan_id,child_id,start_date,end_date,category,end_reason\n"})
    paths["children"] = folder / "children.parquet"
    whole, streamed = _both(paths, tmp_path / "clean", 128)
    _assert_same(whole, streamed)
    values = streamed[1].loc[streamed[1]["field"] == "date_of_birth", "value"].tolist()
    assert "50000.0" in values      # 50000 days after 1899-12-30 is after the extract date: rejected


def test_missing_spellings_that_trim_to_one_are_counted_together(tmp_path):
    """ "NULL" twice and " NULL" once in ethnicity: read_as_missing says NULL: 3 (both paths;
    before, the trimmed spelling's count overwrote the other's: NULL: 1 or 2)."""
    children = (CHILDREN.replace("C2,F1,LA01,F,2016-01-01,WHITE", "C2,F1,LA01,F,2016-01-01,NULL")
                .replace("C3,F2,LA02,F,2014-06-30,ASIAN", "C3,F2,LA02,F,2014-06-30, NULL")
                .replace("C2,F9,LA02,F,2016-01-01,WHITE", "C2,F9,LA02,F,2016-01-01,NULL"))
    paths = _write(tmp_path / "in", {"children": children, "referrals": REFERRAL_HEADER
                                     + "R1,C1,2020-01-01,POLICE,,NFA,0,0,0,0,0,0,0,\n",
                                     "plans": "plan_id,child_id,start_date,end_date,category,end_reason\n"})
    whole, streamed = _both(paths, tmp_path / "clean", 60)
    _assert_same(whole, streamed)
    assert streamed[2]["tables"]["children"]["normalised"]["read_as_missing"]["ethnicity"] == {"NULL": 3}
