"""The cleaner catches every injected fault class, reconciles, normalises and pseudonymises."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline import clean, config
from pipeline.cli import InputError
from pipeline.faults import FAULT_CLASSES
from pipeline.schema import CHILDREN, PLANS, REFERRALS

PATHS = {t: Path(f"{t}.csv") for t in ("children", "referrals", "plans")}


@pytest.fixture(scope="module")
def cleaned(params, faulted_extract):
    raw, log = faulted_extract
    kept, rejects, metrics = clean.clean_extract(raw, PATHS, extract_date=config.extract_date(params))
    return raw, log, kept, rejects, metrics


def test_every_injected_fault_class_is_caught(cleaned):
    _, log, _, rejects, metrics = cleaned
    for table, classes in FAULT_CLASSES.items():
        rej = rejects[rejects["table"] == table].set_index("source_row")["reason"]
        for cls, expected in classes.items():
            rows = log["tables"][table]["faults"][cls]["rows"]
            assert rows, f"{table}/{cls}: nothing injected"
            if expected.startswith("reject:"):
                reasons = rej.reindex(rows)
                assert (reasons == expected.split(":")[1]).all(), (table, cls, reasons.value_counts(dropna=False))
            else:
                assert not rej.index.isin(rows).any(), f"{table}/{cls}: a repairable row was rejected"
    # Repairs are counted, each at least as often as injected.
    norm = metrics["tables"]["referrals"]["normalised"]
    assert norm["recoded"]["outcome"] >= len(log["tables"]["referrals"]["faults"]["inconsistent_code"]["rows"])
    assert norm["whitespace_stripped"]["referral_source"] >= len(
        log["tables"]["referrals"]["faults"]["stray_whitespace"]["rows"])
    assert norm["date_formats"]["referral_date"]["excel_serial"] > 0
    assert norm["date_formats"]["referral_date"]["day_month_year"] > 0


def test_rejects_beyond_the_injected_ones_are_cascades_from_rejected_children(cleaned):
    _, log, _, rejects, _ = cleaned
    injected = {(t, r) for t, v in log["tables"].items() for f in v["faults"].values() for r in f["rows"]}
    extra = rejects[[(t, r) not in injected for t, r in zip(rejects["table"], rejects["source_row"])]]
    assert set(extra["reason"]) <= {"unknown_child", "child_rejected"}
    assert set(extra["table"]) <= {"referrals", "plans"}


def test_rows_reconcile(cleaned):
    raw, _, kept, rejects, metrics = cleaned
    for name in ("children", "referrals", "plans"):
        m = metrics["tables"][name]
        assert m["rows_in"] == len(raw[name]) == m["rows_kept"] + m["rows_rejected"]
        assert m["rows_kept"] == len(kept[name])
        assert m["rows_rejected"] == (rejects["table"] == name).sum() == sum(m["rejected_by_reason"].values())
    assert list(rejects.columns) == ["table", "source_row", "field", "value", "reason"]


def test_kept_values_match_the_clean_source(cleaned, default_extract):
    """The cleaner undoes every repairable fault: kept rows equal the simulator's clean rows."""
    _, _, kept, _, _ = cleaned
    truth = default_extract.referrals
    got = kept["referrals"]
    assert len(got) < len(truth) + 1
    # Compare on non-identifier columns, as a multiset of rows.
    cols = [c for c in truth.columns if c not in ("referral_id", "child_id")]
    merged = got[cols].merge(truth[cols].drop_duplicates(), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_identifiers_are_pseudonymised(cleaned):
    raw, _, kept, _, _ = cleaned
    for name, table in (("children", CHILDREN), ("referrals", REFERRALS), ("plans", PLANS)):
        for f in table.fields:
            if f.kind == "id":
                values = kept[name][f.name]
                assert values.str.fullmatch(r"[0-9a-f]{16}").all(), (name, f.name)
                assert not values.isin(raw[name][f.name].dropna()).any()
    # Links between tables survive: every kept referral's child is a kept child.
    assert kept["referrals"]["child_id"].isin(kept["children"]["child_id"]).all()
    assert kept["plans"]["child_id"].isin(kept["children"]["child_id"]).all()


def test_keyed_hash_depends_on_the_key():
    ids = pd.Series(["C1", "C2", "C1"])
    a = clean.pseudonymise(ids, b"key-one")
    assert a[0] == a[2] != a[1]
    assert not clean.pseudonymise(ids, b"key-two").equals(a)


def test_a_real_extract_needs_a_key(params, monkeypatch):
    p = {**params, "input": {**params["input"], "source": "extract"}}
    monkeypatch.delenv(params["input"]["pseudonym_key_env"], raising=False)
    with pytest.raises(InputError, match="PIPELINE_PSEUDONYM_KEY"):
        clean.pseudonym_key(p)
    monkeypatch.setenv(params["input"]["pseudonym_key_env"], "s3cret")
    assert clean.pseudonym_key(p) != clean.SYNTHETIC_KEY


@pytest.mark.parametrize("text, expected", [
    ("2021-03-04", "2021-03-04"),
    ("2021-03-04 00:00:00", "2021-03-04"),
    ("04/03/2021", "2021-03-04"),   # UK day first
    ("44259", "2021-03-04"),        # Excel serial: =DATE(2021,3,4) is 44259 in Excel's 1900 system
    ("4/3/2021", "2021-03-04"),
])
def test_date_formats(text, expected):
    parsed, _ = clean.parse_dates(pd.Series([text], dtype=object), dayfirst=True)
    assert parsed.iloc[0] == pd.Timestamp(expected)


def test_month_first_when_asked():
    parsed, counts = clean.parse_dates(pd.Series(["04/03/2021"], dtype=object), dayfirst=False)
    assert parsed.iloc[0] == pd.Timestamp("2021-04-03") and counts["month_day_year"].sum() == 1


@pytest.mark.parametrize("raw_value, code", [("male", "M"), ("1", "M"), (" M ", "M"), ("Female", "F"),
                                             ("2", "F"), ("u", "U")])
def test_sex_codes_normalise(raw_value, code):
    assert CHILDREN.get("sex").alias_map()[raw_value.strip().lower()] == code


def _tiny(children_rows, referral_rows, plan_rows):
    # Without the optional looked_after_date column: an extract may lack it.
    children = pd.DataFrame(children_rows, columns=[f.name for f in CHILDREN.fields if f.if_absent != "empty"])
    referrals = pd.DataFrame(referral_rows, columns=REFERRALS.columns)
    plans = pd.DataFrame(plan_rows, columns=PLANS.columns)
    return {"children": children, "referrals": referrals, "plans": plans}


CHILD = ["C1", "F1", "LA01", "M", "2015-01-01", "WHITE", "0"]
REF = ["R1", "C1", "2020-01-01", "POLICE", "2020-02-01", "NFA", *["0"] * 7, ""]


def test_overlapping_and_nested_plans_on_a_small_case():
    plans = [
        ["P1", "C1", "2020-01-01", "2020-06-01", "NEGLECT", "OTHER"],
        ["P2", "C1", "2020-03-01", "2020-04-01", "NEGLECT", "OTHER"],   # inside P1: overlaps
        ["P3", "C1", "2020-06-01", "2020-09-01", "NEGLECT", "OTHER"],   # starts the day P1 ends: fine
        ["P4", "C1", "2021-01-01", "", "EMOTIONAL", ""],                  # open
        ["P5", "C1", "2022-01-01", "2022-02-01", "EMOTIONAL", "OTHER"],  # after an open plan: overlaps
    ]
    kept, rejects, _ = clean.clean_extract(_tiny([CHILD], [REF], plans), PATHS,
                                           extract_date=pd.Timestamp("2023-01-01"))
    assert rejects.set_index("source_row")["reason"].to_dict() == {2: "overlapping_plan", 5: "overlapping_plan"}
    assert len(kept["plans"]) == 3


def test_reject_reason_order_and_values():
    refs = [
        REF,
        ["R2", "C1", "2030-01-01", "POLICE", "", "NFA", *["0"] * 7, ""],            # after extract
        ["R3", "C1", "2020-05-01", "POLICE", "2020-04-01", "NFA", *["0"] * 7, ""],  # closed before referral
        ["R4", "C1", "2014-01-01", "POLICE", "2014-02-01", "NFA", *["0"] * 7, ""],  # before birth
        ["R5", "C9", "2020-01-01", "POLICE", "", "NFA", *["0"] * 7, ""],            # unknown child
        ["R6", "C1", "2020-01-01", "POLICE", "", "maybe", *["0"] * 7, ""],          # unknown code
        REF,                                                                        # exact duplicate
        ["R1", "C1", "2020-01-09", "POLICE", "", "NFA", *["0"] * 7, ""],            # duplicate id
    ]
    _, rejects, metrics = clean.clean_extract(_tiny([CHILD], refs, []), PATHS,
                                              extract_date=pd.Timestamp("2023-01-01"))
    got = rejects.set_index("source_row")[["field", "value", "reason"]].to_dict("index")
    assert got == {
        2: {"field": "referral_date", "value": "2030-01-01", "reason": "date_after_extract"},
        3: {"field": "closure_date", "value": "2020-04-01", "reason": "closure_before_referral"},
        4: {"field": "referral_date", "value": "2014-01-01", "reason": "referral_before_birth"},
        5: {"field": "child_id", "value": "C9", "reason": "unknown_child"},
        6: {"field": "outcome", "value": "maybe", "reason": "unknown_code"},
        7: {"field": "(row)", "value": "same as row 1", "reason": "duplicate_row"},
        8: {"field": "referral_id", "value": "R1", "reason": "duplicate_id"},
    }
    assert metrics["tables"]["referrals"]["rows_kept"] == 1


def test_analysis_table_entry_point():
    raw = pd.DataFrame({
        "pid": ["a", "b", "c", "", "e", "e"],
        "fam": ["x", "x", "y", "z", "w", "w"],
        "t": ["10", "20.5", "-1", "5", "7", "8"],
        "d": ["1", "0", "1", "1", "yes", "0"],
        "age": ["3", "4", "5", "6", "7", "8"],
    })
    spec = {"id": "pid", "cluster": "fam", "duration": "t", "event": "d", "covariates": ["age"]}
    kept, rejects, metrics = clean.clean_analysis_table(raw, spec, Path("a.csv"), key=b"k")
    assert rejects.set_index("source_row")["reason"].to_dict() == {3: "invalid_value", 4: "missing_id",
                                                                  6: "duplicate_id"}
    assert kept["t"].tolist() == [10.0, 20.5, 7.0] and kept["d"].tolist() == [1, 0, 1]
    assert kept["age"].tolist() == [3, 4, 7]
    assert kept["fam"].iloc[0] == kept["fam"].iloc[1] != kept["fam"].iloc[2]
    m = metrics["tables"]["analysis_table"]
    assert m["rows_in"] == 6 == m["rows_kept"] + m["rows_rejected"]
