"""Acceptance tests of the NCANDS Child File route (pipeline/formats/ncands.py).

The fixtures in tests/data/ncands/ are built by hand from the Children's Bureau Child File
record layout / codebook and NDACAN's variable names (sources in pipeline/formats/ncands.yaml):

* child_file_2019.csv: comma-delimited, NDACAN spellings (RpDispDt, CEthn, FCViol, ...),
  ISO dates, plus a column the route ignores (RptDisp); 8 report-child records.
* child_file_2020.tab: tab-delimited, the codebook's capitals (RPTDISDT, CHETHN, FCVIOL, ...),
  dates mmddyyyy as in the record layout ("DATE (mmddyyyy)"); 6 records.

Every expected value below is worked out by hand from those rows and the mapping rules in
the module docstring; the arithmetic is in the comments (day counts checked with a calendar).
Most expectations are for ``risk_factor_unknown_as: 0`` (an explicit choice: unknown read as
"not recorded as present"), passed to ``ncands.read`` as an overridden spec; the default
(null: unknown stays unknown) is tested by hand below (``*_DEFAULT``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import clean, derive
from pipeline.cli import InputError
from pipeline.formats import ncands
from pipeline.schema import FACTORS

DATA = Path(__file__).parent / "data" / "ncands"
F19, F20 = "child_file_2019.csv", "child_file_2020.tab"
EXTRACT_DATE = pd.Timestamp("2021-12-31")
FACTOR_COLS = ["substance_misuse", "domestic_violence", "mental_health", "learning_disability",
               "financial_problems"]


def spec_with(**settings) -> dict:
    """ncands.yaml with some settings replaced (the one way a test overrides the spec)."""
    spec = ncands.load_field_map()
    spec.update(settings)
    return spec


@pytest.fixture(scope="module")
def adapted():
    """The fixtures read with unknown risk factors as 0 (an explicit choice)."""
    return ncands.read(DATA, spec=spec_with(risk_factor_unknown_as=0))


@pytest.fixture(scope="module")
def adapted_default():
    """The fixtures read with ncands.yaml as it is (risk_factor_unknown_as: null)."""
    return ncands.read(DATA)


# --------------------------------------------------------------------------------------------
# Canonical tables
# --------------------------------------------------------------------------------------------

# (referral_id, child_id, referral_date, referral_source, closure_date, outcome,
#  substance, dv, mental health, learning disability, financial, abuse_category, source)
EXPECTED_REFERRALS = [
    # 2019 row 1: RptSrc 5 education -> SCHOOL; disposition 2019-02-20 is the closure;
    # PostServ 1 -> CIN; FCAlc 1 -> substance 1; FCEmotnl 9 -> unknown -> 0;
    # FCMoney 2 (FCPublic 1 is public assistance, not financial) -> 0;
    # ChMal 2 neglect + 5 psychological -> two categories -> MULTIPLE.
    ("KY/R100/C1", "KY/C1", "2019-01-10", "SCHOOL", "2019-02-20", "CIN", "1", "0", "0", "0", "0",
     "MULTIPLE", f"{F19}: row 1"),
    # 2019 row 2: same RptID and ChID as row 1 but state OR: another child. RptSrc 4 -> POLICE;
    # disposition 2019-03-01 is before the report 2019-03-05 -> closure = report date;
    # PostServ 2 -> ASSESSED; FCViol 1, FCMoney 1; ChMal1 1 -> PHYSICAL.
    ("OR/R100/C1", "OR/C1", "2019-03-05", "POLICE", "2019-03-05", "ASSESSED", "0", "1", "0", "0", "1",
     "PHYSICAL", f"{F19}: row 2"),
    # 2019 row 3: RptSrc 13 anonymous -> UNKNOWN; PostServ 9 (unknown) -> no outcome (blank:
    # never "no services"); every caregiver factor blank -> unknown -> 0; ChMal1 9 unknown ->
    # no category.
    ("KY/R200/C2", "KY/C2", "2019-05-01", "UNKNOWN", "2019-05-20", "", "0", "0", "0", "0", "0",
     "", f"{F19}: row 3"),
    # 2019 row 4: RptSrc 9 parent -> INDIVIDUAL; FCDrug 1 -> substance; FCEmotnl 1 -> mental
    # health; FCRtrd 1 -> learning disability; ChMal1 4 -> SEXUAL.
    ("KY/R300/C3", "KY/C3", "2019-07-01", "INDIVIDUAL", "2019-07-10", "ASSESSED", "1", "0", "1", "1", "0",
     "SEXUAL", f"{F19}: row 4"),
    # 2019 row 8: RptSrc 42 is not in the code list -> passed on verbatim (clean: unknown_code).
    ("KY/R700/C7", "KY/C7", "2019-09-10", "42", "2019-09-20", "CIN", "0", "0", "0", "0", "0",
     "NEGLECT", f"{F19}: row 8"),
    # 2020 row 1 (dates mmddyyyy): RptSrc 1 -> LA_SERVICES; FCVIOL 1; CHMAL1 2 -> NEGLECT.
    ("KY/R301/C3", "KY/C3", "2020-03-02", "LA_SERVICES", "2020-03-25", "CIN", "0", "1", "0", "0", "0",
     "NEGLECT", f"{F20}: row 1"),
    # 2020 row 2: RptSrc 2 medical -> HEALTH; POSTSERV 2 -> ASSESSED.
    ("KY/R302/C3", "KY/C3", "2020-03-10", "HEALTH", "2020-03-30", "ASSESSED", "0", "0", "0", "0", "0",
     "NEGLECT", f"{F20}: row 2"),
    # KY/R400/C4 is in both years' files: the 2020 copy (row 3) is kept, the 2019 copy (row 5)
    # merged; they disagree on PostServ (2 then 1): one conflict, the later copy wins -> CIN.
    # RptSrc 3 mental health -> HEALTH; ChMal 3 medical neglect + 2 neglect -> one category.
    ("KY/R400/C4", "KY/C4", "2019-08-15", "HEALTH", "2019-09-01", "CIN", "0", "0", "0", "0", "0",
     "NEGLECT", f"{F20}: row 3"),
    # 2020 row 5: RptSrc 10 other relative -> INDIVIDUAL.
    ("OR/R110/C1", "OR/C1", "2020-02-01", "INDIVIDUAL", "2020-02-15", "CIN", "0", "0", "0", "0", "0",
     "PHYSICAL", f"{F20}: row 5"),
    # 2020 row 6: RptSrc 6 child daycare -> OTHER; FCALC and FCDRUG blank -> substance unknown
    # -> 0; FCVIOL 9 -> 0; CHMAL1 5 -> EMOTIONAL.
    ("KY/R800/C8", "KY/C8", "2020-06-01", "OTHER", "2020-06-15", "CIN", "0", "0", "0", "0", "0",
     "EMOTIONAL", f"{F20}: row 6"),
]

# (child_id, la_code, sex, date_of_birth, ethnicity, disability, looked_after_date, source)
EXPECTED_CHILDREN = [
    # Age 6 on 2019-01-10: birth in (2012-01-10, 2013-01-10], 366 feasible days (29 Feb 2012);
    # midpoint = 2012-01-10 + (366 + 1) // 2 = + 183 days = 2012-07-11. White only -> WHITE.
    ("KY/C1", "KY", "M", "2012-07-11", "WHITE", "0", "", f"{F19}: row 1"),
    # Age 0 on 2019-03-05: (2018-03-05, 2019-03-05]; age 1 on 2020-02-01: (2018-02-01, 2019-02-01].
    # Intersection (2018-03-05, 2019-02-01]: 333 days; + (333 + 1) // 2 = 167 -> 2018-08-19.
    # Black and White -> MIXED; CdPhys 1 -> disability; FosterCr 1 with RmvDate 2019-06-01.
    # Attributes from the latest report (2020 row 5).
    ("OR/C1", "OR", "F", "2018-08-19", "MIXED", "1", "2019-06-01", f"{F20}: row 5"),
    # ChAge 77 (unborn) is its only report: no birth date (clean: missing_value). ChSex 9 -> U;
    # race flags 9 -> no race -> UNKNOWN. Every child risk factor 9 -> disability unknown -> 0.
    ("KY/C2", "KY", "U", "", "UNKNOWN", "0", "", f"{F19}: row 3"),
    # Age 10 on 2019-07-01: (2008-07-01, 2009-07-01]; age 10 on 2020-03-02: (2009-03-02,
    # 2010-03-02]; age 11 on 2020-03-10: (2008-03-10, 2009-03-10]. Intersection: lo = latest
    # lower bound 2009-03-02, hi = earliest upper bound 2009-03-10: 8 days 03-03..03-10;
    # + (8 + 1) // 2 = 4 -> 2009-03-06. Hispanic (CEthn 1) White -> OTHER.
    ("KY/C3", "KY", "M", "2009-03-06", "OTHER", "0", "", f"{F20}: row 2"),
    # Age 3 on 2019-08-15: (2015-08-15, 2016-08-15], 366 days (29 Feb 2016): + 183 -> 2016-02-14.
    ("KY/C4", "KY", "F", "2016-02-14", "ASIAN", "0", "", f"{F20}: row 3"),
    # Age 12 on 2019-09-10: (2006-09-10, 2007-09-10], 365 days: + 183 -> 2007-03-12. CdBehav 1.
    ("KY/C7", "KY", "M", "2007-03-12", "BLACK", "1", "", f"{F19}: row 8"),
    # Age 2 on 2020-06-01: (2017-06-01, 2018-06-01], 365 days: + 183 -> 2017-12-01.
    # CHETHN 3 (unable to determine) is not Hispanic: White -> WHITE.
    ("KY/C8", "KY", "M", "2017-12-01", "WHITE", "0", "", f"{F20}: row 6"),
]


# The default (risk_factor_unknown_as: null): an unknown caregiver factor stays blank, as does
# the disability of a child whose child risk factors are all unknown. No factor is unknown in
# every kept record (each has a 1 or 2 somewhere), so every factor column is there.
BLANK_DEFAULT = {
    "KY/R100/C1": ["mental_health"],                        # 2019 row 1: FCEmotnl 9
    "KY/R200/C2": FACTOR_COLS,                              # 2019 row 3: every caregiver field blank
    "KY/R800/C8": ["substance_misuse", "domestic_violence"],  # 2020 row 6: FCALC, FCDRUG blank; FCVIOL 9
}
_COLS = ["referral_id", "child_id", "referral_date", "referral_source", "closure_date", "outcome",
         *FACTOR_COLS, "abuse_category", "source_location"]
EXPECTED_REFERRALS_DEFAULT = [
    tuple("" if _COLS[i] in BLANK_DEFAULT.get(row[0], []) else v for i, v in enumerate(row))
    for row in EXPECTED_REFERRALS
]
# KY/C2: every child risk factor 9 in its only report -> disability blank.
EXPECTED_CHILDREN_DEFAULT = [row[:5] + ("",) + row[6:] if row[0] == "KY/C2" else row for row in EXPECTED_CHILDREN]


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple("" if pd.isna(v) else str(v) for v in row) for row in frame[columns].itertuples(index=False)]


def test_referrals_table(adapted):
    cols = ["referral_id", "child_id", "referral_date", "referral_source", "closure_date", "outcome",
            *FACTOR_COLS, "abuse_category", "source_location"]
    assert sorted(_rows(adapted.tables["referrals"], cols)) == sorted(EXPECTED_REFERRALS)


def test_children_table(adapted):
    cols = ["child_id", "la_code", "sex", "date_of_birth", "ethnicity", "disability",
            "looked_after_date", "source_location"]
    assert sorted(_rows(adapted.tables["children"], cols)) == sorted(EXPECTED_CHILDREN)


def test_default_leaves_unknown_blank(adapted_default):
    assert sorted(_rows(adapted_default.tables["referrals"], _COLS)) == sorted(EXPECTED_REFERRALS_DEFAULT)
    cols = ["child_id", "la_code", "sex", "date_of_birth", "ethnicity", "disability",
            "looked_after_date", "source_location"]
    assert sorted(_rows(adapted_default.tables["children"], cols)) == sorted(EXPECTED_CHILDREN_DEFAULT)
    # The same unknowns as under 0 (test_metrics_reconcile), left blank instead.
    rf = adapted_default.metrics["risk_factors"]
    assert rf["unknown_as"] is None and rf["not_recorded_in_input"] == []
    assert {k: v["unknown"] for k, v in rf["caregiver"].items()} == {
        "substance_misuse": 2, "domestic_violence": 2, "mental_health": 2, "learning_disability": 1,
        "financial_problems": 1}
    assert {v["result"] for v in rf["caregiver"].values()} == {"blank (clean: missing_value)"}
    assert (rf["disability"]["children_all_unknown"], rf["disability"]["children_0_with_some_unknown"]) == (1, 0)
    assert sorted(adapted_default.not_recorded) == ["low_social_support", "parent_maltreated_as_child"]


def test_absent_columns_and_empty_plans(adapted):
    # NCANDS has no family identifier, no plans, and no low social support / parent maltreated
    # as a child: the columns are absent (never invented), plans is empty with its columns.
    assert "family_id" not in adapted.tables["children"].columns
    for name in ("low_social_support", "parent_maltreated_as_child"):
        assert name not in adapted.tables["referrals"].columns
    assert sorted(adapted.not_recorded) == ["low_social_support", "parent_maltreated_as_child"]
    plans = adapted.tables["plans"]
    assert len(plans) == 0
    assert {"plan_id", "child_id", "start_date", "end_date", "category", "end_reason"} <= set(plans.columns)


def test_rejects(adapted):
    rej = _rows(adapted.rejects, ["table", "source_row", "field", "reason"])
    assert sorted(rej) == sorted([
        # 2019 row 7: no report date -> no referral date, no age interval.
        ("referrals", f"{F19}: row 7", "RptDt", "missing_value"),
        # OR/C5: age 4 on 2019-02-01 -> birth in (2014-02-01, 2015-02-01]; age 7 on 2020-01-15
        # -> (2012-01-15, 2013-01-15]: no common day. The child is rejected (at its latest
        # report's row) and both its reports with it.
        ("children", f"{F20}: row 4", "ChAge", "invalid_value"),
        ("referrals", f"{F19}: row 6", "child_id", "child_rejected"),
        ("referrals", f"{F20}: row 4", "child_id", "child_rejected"),
    ])


def test_metrics_reconcile(adapted):
    m = adapted.metrics
    rec = m["records"]["referrals"]
    # 8 + 6 records in; kept 10 (= the referral rows above); rejected 3 (row 7; OR/C5 twice);
    # merged 1 (the 2019 copy of KY/R400/C4), with 1 conflict (PostServ).
    assert (rec["records_in"], rec["kept"], rec["rejected"], rec["merged"]) == (14, 10, 3, 1)
    assert rec["records_in"] == rec["kept"] + rec["rejected"] + rec["merged"]
    assert rec["conflicts"] == 1
    assert rec["rejected_by_reason"] == {"missing_value": 1, "child_rejected": 2}
    ch = m["records"]["children"]
    # 8 distinct (state, ChID) among valid records: KY/C1 OR/C1 KY/C2 KY/C3 KY/C4 OR/C5 KY/C7 KY/C8.
    assert (ch["records_in"], ch["kept"], ch["rejected"], ch["rejected_inconsistent_ages"]) == (8, 7, 1, 1)
    assert m["reconciled"]
    assert ch["no_birth_date"] == 1                       # KY/C2 (unborn)
    assert ch["looked_after_dates"] == 1                  # OR/C1
    # Unknown (9 or blank) caregiver factors among the 10 kept records, set to 0:
    # substance: 2019 row 3 (blank), 2020 row 6 (FCALC, FCDRUG blank) = 2;
    # domestic violence: 2019 row 3, 2020 row 6 (FCVIOL 9) = 2;
    # mental health: 2019 row 1 (FCEmotnl 9), row 3 = 2; learning disability: row 3 = 1;
    # financial problems: row 3 = 1.
    rf = m["risk_factors"]
    assert rf["unknown_as"] == 0 and rf["not_recorded_in_input"] == []
    assert rf["caregiver"] == {f: {"unknown": n, "result": "0"} for f, n in [
        ("substance_misuse", 2), ("domestic_violence", 2), ("mental_health", 2), ("learning_disability", 1),
        ("financial_problems", 1)]}
    # Disability: KY/C2's only report has every child risk factor 9 -> 0, counted; no other
    # kept report has an unknown child risk factor.
    assert rf["disability"] == {"children_all_unknown": 1, "children_0_with_some_unknown": 0, "result": "0"}
    # PostServ 9: 2019 row 3 only.
    assert m["outcome_unknown"] == 1
    assert m["closure"]["disposition_before_report"] == 1  # OR/R100/C1
    assert [f["file"] for f in m["files"]] == [F19, F20]
    assert [f["delimiter"] for f in m["files"]] == [",", "\t"]
    assert [f["records"] for f in m["files"]] == [8, 6]


# --------------------------------------------------------------------------------------------
# Through clean and episodes (what the pipeline stages will do with the canonical tables)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cleaned(adapted):
    raw = adapted.tables      # clean takes the adapter's tables as they are
    paths = {name: Path(name) for name in raw}
    return clean.clean_extract(raw, paths, extract_date=EXTRACT_DATE, dayfirst=False)


def _clean_rejects(rejects: pd.DataFrame) -> list[tuple]:
    return sorted(_rows(rejects, ["table", "source_row", "field", "value", "reason"]))


def test_clean_quarantines(cleaned):
    _, rejects, metrics = cleaned
    assert _clean_rejects(rejects) == sorted([
        # KY/C2 has no birth date (unborn): missing_value (date_of_birth is checked before the
        # disability, which is 0 here).
        ("children", f"{F19}: row 3", "date_of_birth", "", "missing_value"),
        # Its referral has no outcome (PostServ 9): missing_value, found before child_rejected.
        ("referrals", f"{F19}: row 3", "outcome", "", "missing_value"),
        # KY/R700/C7's source 42 -> unknown_code.
        ("referrals", f"{F19}: row 8", "referral_source", "42", "unknown_code"),
    ])
    assert metrics["tables"]["children"]["rows_kept"] == 6      # 7 - KY/C2
    assert metrics["tables"]["referrals"]["rows_kept"] == 8     # 10 - R200 - R700


@pytest.fixture(scope="module")
def cleaned_default(adapted_default):
    paths = {name: Path(name) for name in adapted_default.tables}
    return clean.clean_extract(adapted_default.tables, paths, extract_date=EXTRACT_DATE, dayfirst=False)


def test_clean_quarantines_unknown_by_default(cleaned_default):
    _, rejects, metrics = cleaned_default
    # Each row's first failing rule, in clean's order (missing_value before unknown_code; within
    # a rule, fields in schema order: outcome, then the factors in FACTORS order).
    assert _clean_rejects(rejects) == sorted([
        ("children", f"{F19}: row 3", "date_of_birth", "", "missing_value"),      # KY/C2 (also disability)
        ("referrals", f"{F19}: row 1", "mental_health", "", "missing_value"),     # FCEmotnl 9
        ("referrals", f"{F19}: row 3", "outcome", "", "missing_value"),           # PostServ 9 (factors too)
        ("referrals", f"{F20}: row 6", "substance_misuse", "", "missing_value"),  # FCALC, FCDRUG blank
        ("referrals", f"{F19}: row 8", "referral_source", "42", "unknown_code"),
    ])
    assert metrics["tables"]["children"]["rows_kept"] == 6      # 7 - KY/C2
    assert metrics["tables"]["referrals"]["rows_kept"] == 6     # 10 - R100, R200, R800, R700


EXPECTED_REREPORT = {
    # origin = max(closure, referral + 14 days); follow-up to the extract date 2021-12-31.
    # KY/C1: origin max(2019-02-20, 2019-01-24) = 2019-02-20; 2019-02-20 -> 2021-12-31 = 1045.
    # Age at 2019-01-10 with birth 2012-07-11: 6.5 -> 5_9.
    "KY/R100/C1": ("2019-02-20", 1045, 0, "extract_date", 0, "5_9"),
    # OR/C1: closure 2019-03-05 (= report date), origin 2019-03-19; enters care 2019-06-01
    # before the re-report of 2020-02-01: 2019-03-19 -> 2019-06-01 = 74 days, entered_care.
    "OR/R100/C1": ("2019-03-19", 74, 0, "entered_care", 0, "under_1"),
    # OR/R110/C1: origin max(2020-02-15, 2020-02-15); care entry is before it (history);
    # 2020-02-15 -> 2021-12-31 = 685; one earlier episode. Age 1.45 -> 1_4.
    "OR/R110/C1": ("2020-02-15", 685, 0, "extract_date", 1, "1_4"),
    # KY/C3: origin max(2019-07-10, 2019-07-15) = 2019-07-15; re-reported 2020-03-02 (R301,
    # an episode start): 2019-07-15 -> 2020-03-02 = 231 days, event. Age 10.3 -> 10_15.
    "KY/R300/C3": ("2019-07-15", 231, 1, "re_referral", 0, "10_15"),
    # KY/R301/C3: origin max(2020-03-25, 2020-03-16) = 2020-03-25; R302 (2020-03-10) is 8 days
    # after R301, within 14: the same episode, not an event or index.
    # 2020-03-25 -> 2021-12-31 = 646.
    "KY/R301/C3": ("2020-03-25", 646, 0, "extract_date", 1, "10_15"),
    # KY/C4: origin max(2019-09-01, 2019-08-29) = 2019-09-01 -> 2021-12-31 = 852. Age 3.5.
    "KY/R400/C4": ("2019-09-01", 852, 0, "extract_date", 0, "1_4"),
    # KY/C8: origin max(2020-06-15, 2020-06-15) -> 2021-12-31 = 564. Age 2.5.
    "KY/R800/C8": ("2020-06-15", 564, 0, "extract_date", 0, "1_4"),
}


# The default: KY/R100/C1 and KY/R800/C8 are quarantined (an unknown factor); they are their
# children's only referrals, so every other index referral is as above.
EXPECTED_REREPORT_DEFAULT = {k: v for k, v in EXPECTED_REREPORT.items() if k not in ("KY/R100/C1", "KY/R800/C8")}


def test_rereport_table(cleaned):
    kept, _, _ = cleaned
    table, counts = derive.derive_rereport(kept["children"], kept["referrals"], kept["plans"],
                                             extract_date=EXTRACT_DATE)
    ids = clean.pseudonymise(pd.Series([r[0] for r in EXPECTED_REFERRALS]), clean.SYNTHETIC_KEY)
    name_of = dict(zip(ids, (r[0] for r in EXPECTED_REFERRALS)))
    got = {name_of[r.index_referral_id]: (r.origin_date.date().isoformat(), r.time_days, r.event, r.event_type,
                                          r.prior_referrals, r.age_band)
           for r in table.itertuples()}
    assert got == EXPECTED_REREPORT
    assert counts["same_episode_reports"] == 1
    assert counts["events"] == 1
    assert counts["censored_entered_care"] == 1
    # Factors and no_service at index, e.g. OR/R100/C1: ASSESSED -> no_service 1, DV 1, financial 1.
    row = table.loc[table["index_referral_id"] == ids[1]].iloc[0]
    assert (row["no_service"], row["domestic_violence"], row["financial_problems"], row["disability"]) == (1, 1, 1, 1)
    row = table.loc[table["index_referral_id"] == ids[0]].iloc[0]
    assert (row["no_service"], row["substance_misuse"], row["mental_health"]) == (0, 1, 0)
    # Factors NCANDS does not record are absent (never invented as 0); the others are there.
    assert set(FACTORS) - set(table.columns) == {"low_social_support", "parent_maltreated_as_child"}


# --------------------------------------------------------------------------------------------
# Settings, formats and bad input
# --------------------------------------------------------------------------------------------

def test_default_setting_is_null():
    # ncands.yaml ships with unknown kept unknown; 0 is an explicit choice.
    assert ncands.load_field_map()["risk_factor_unknown_as"] is None


def test_bad_unknown_setting(tmp_path):
    shutil.copy(DATA / F19, tmp_path / F19)
    with pytest.raises(InputError, match="risk_factor_unknown_as"):
        ncands.read(tmp_path, spec=spec_with(risk_factor_unknown_as=2))


def _stat_frame() -> pd.DataFrame:
    """The 2019 fixture as a statistics package holds it: codes as numbers (blank = missing),
    dates as dates, identifiers and state as text."""
    text = pd.read_csv(DATA / F19, dtype=str, keep_default_na=False)
    out = pd.DataFrame(index=text.index)
    for col in text.columns:
        if col in ("StaTerr", "RptID", "ChID"):
            out[col] = text[col]
        elif col in ("RptDt", "RpDispDt", "RmvDate"):
            out[col] = pd.to_datetime(text[col].replace("", None))
        else:
            out[col] = pd.to_numeric(text[col].replace("", None)).astype(float)
    return out


def _without_file(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["source_location"] = out["source_location"].str.replace(r"^[^:]+:", "", regex=True)
    return out.sort_values("child_id").reset_index(drop=True)


@pytest.mark.parametrize("ext", ["dta", "sav", "xpt", "pipe"])
def test_stat_files_and_pipe_read_equal_to_csv(tmp_path, ext):
    pyreadstat = pytest.importorskip("pyreadstat")
    csv_dir, other = tmp_path / "csv", tmp_path / ext
    csv_dir.mkdir()
    other.mkdir()
    shutil.copy(DATA / F19, csv_dir / F19)
    frame = _stat_frame()
    if ext == "dta":
        frame.to_stata(other / "child_file_2019.dta", write_index=False,
                       convert_dates={c: "td" for c in ("RptDt", "RpDispDt", "RmvDate")})
    elif ext == "sav":
        pyreadstat.write_sav(frame, str(other / "child_file_2019.sav"))
    elif ext == "xpt":
        pyreadstat.write_xport(frame, str(other / "child_file_2019.xpt"), file_format_version=5)
    else:
        (other / "child_file_2019.txt").write_text((DATA / F19).read_text().replace(",", "|"))
    expected, got = ncands.read(csv_dir), ncands.read(other)
    for name in ("children", "referrals"):
        pd.testing.assert_frame_equal(_without_file(got.tables[name]), _without_file(expected.tables[name]))
    assert got.metrics["records"] == expected.metrics["records"]


def _one_line_error(path: Path) -> str:
    with pytest.raises(InputError) as err:
        ncands.read(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_required_column(tmp_path):
    text = (DATA / F19).read_text().splitlines()
    header = text[0].split(",")
    drop = header.index("ChAge")
    rows = [",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in text]
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    message = _one_line_error(tmp_path)
    assert "bad.csv" in message and "header (line 1)" in message and "ChAge" in message


def test_unknown_delimiter(tmp_path):
    (tmp_path / "semi.csv").write_text((DATA / F19).read_text().replace(",", ";"))
    message = _one_line_error(tmp_path)
    assert "semi.csv" in message and "line 1" in message and "delimiter" in message


def test_ragged_row(tmp_path):
    lines = (DATA / F19).read_text().splitlines()
    lines[3] += ",extra"                                  # data row 3 (line 4) has one field too many
    (tmp_path / "ragged.csv").write_text("\n".join(lines) + "\n")
    message = _one_line_error(tmp_path)
    assert "ragged.csv" in message and "row 3" in message


def test_unreadable_stat_file(tmp_path):
    (tmp_path / "broken.sav").write_bytes(b"this is not an SPSS file")
    message = _one_line_error(tmp_path)
    assert "broken.sav" in message and "unreadable" in message


def test_no_child_file(tmp_path):
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    message = _one_line_error(tmp_path)
    assert str(tmp_path) in message and "no Child File" in message


def test_unknown_codes_pass_verbatim(tmp_path):
    text = (DATA / F19).read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("ChSex")] = "5"                      # not in the sex code list
    row[header.index("PostServ")] = "7"                   # not 1/2/9/blank
    row[header.index("ChMal1")] = "12"                    # not a maltreatment type
    row[header.index("FCViol")] = "4"                     # not 1/2/9/blank
    (tmp_path / "codes.csv").write_text("\n".join([text[0], ",".join(row)]) + "\n")
    out = ncands.read(tmp_path)
    child = out.tables["children"].iloc[0]
    ref = out.tables["referrals"].iloc[0]
    # Fields mapped from one column carry the value; derived fields name the column.
    assert child["sex"] == "5"
    assert (ref["outcome"], ref["abuse_category"], ref["domestic_violence"]) == ("7", "ChMal1=12", "FCViol=4")


def test_unknown_codes_in_clean_rejects(tmp_path):
    # One bad code per record, each its own child; FCEmotnl 2 so that no factor is unknown.
    rows = [
        _row(RptID="R1", ChID="C1", FCEmotnl="2", ChMal1="12"),    # not a maltreatment type
        _row(RptID="R2", ChID="C2", FCEmotnl="2", FCViol="4"),     # not 1/2/9/blank
        _row(RptID="R3", ChID="C3", FCEmotnl="2", CdPhys="5"),     # not 1/2/9/blank
        _row(RptID="R4", ChID="C4", FCEmotnl="2", ChSex="5"),      # not a sex code
        _row(RptID="R5", ChID="C5", FCEmotnl="2"),
    ]
    (tmp_path / "codes.csv").write_text("\n".join([_header(), *rows]) + "\n")
    adapted = ncands.read(tmp_path)
    _, rejects, _ = clean.clean_extract(adapted.tables, {k: Path(k) for k in adapted.tables},
                                        extract_date=EXTRACT_DATE, dayfirst=False)
    # What rejects.csv shows: derived fields name the column the code came from.
    assert _clean_rejects(rejects) == sorted([
        ("referrals", "codes.csv: row 1", "abuse_category", "ChMal1=12", "unknown_code"),
        ("referrals", "codes.csv: row 2", "domestic_violence", "FCViol=4", "unknown_code"),
        ("children", "codes.csv: row 3", "disability", "CdPhys=5", "unknown_code"),
        ("referrals", "codes.csv: row 3", "child_id", "KY/C3", "child_rejected"),
        ("children", "codes.csv: row 4", "sex", "5", "unknown_code"),
        ("referrals", "codes.csv: row 4", "child_id", "KY/C4", "child_rejected"),
    ])


def test_through_the_clean_and_episodes_stages(tmp_path):
    """The route as a user runs it: params.yaml with input.source ncands, then the stages."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["input"].update({"source": "ncands", "dir": str(DATA), "dayfirst": False, "extract_date": "2021-12-31"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(root), "PIPELINE_PSEUDONYM_KEY": "cli-key"}
    for stage in ("clean", "episodes"):
        proc = subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "data/analysis/rereport.parquet")
    key = clean.hashlib.blake2b(b"cli-key", digest_size=32).digest()
    name_of = dict(zip(clean.pseudonymise(pd.Series(list(EXPECTED_REREPORT)), key), EXPECTED_REREPORT))
    got = {name_of[r.index_referral_id]: (r.origin_date.date().isoformat(), r.time_days, r.event, r.event_type,
                                          r.prior_referrals, r.age_band) for r in table.itertuples()}
    assert got == EXPECTED_REREPORT_DEFAULT        # ncands.yaml as shipped: unknown stays unknown
    metrics = json.loads((tmp_path / "metrics/clean.json").read_text())
    assert metrics["source"] == "ncands" and metrics["cluster"].startswith("child")
    assert metrics["not_recorded"] == ["low_social_support", "parent_maltreated_as_child"]
    rejects = pd.read_csv(tmp_path / "data/clean/rejects.csv", dtype=str)
    assert rejects["source_row"].str.match(r"child_file_20(19|20)\.(csv|tab): row \d+$").all(), rejects


# --------------------------------------------------------------------------------------------
# The writer (ncands.write): a simulated extract written as a Child File and read back
# --------------------------------------------------------------------------------------------

NCANDS_FACTORS = ["substance_misuse", "domestic_violence", "mental_health", "learning_disability",
                  "financial_problems"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from pipeline import config, simulate

    params = config.load_params()
    params["simulate"]["n_children"] = 2000
    params["simulate"]["fault_rate"] = 0.0
    extract = simulate.simulate(params)
    folder = tmp_path_factory.mktemp("child_file")
    extract_date = config.extract_date(params)
    states = ncands.write(extract.children, extract.referrals, extract.plans, folder, extract_date=extract_date)
    return extract, folder, states, extract_date


def test_written_files_one_per_fiscal_year(written):
    extract, folder, states, _ = written
    # Referrals from 2019-03-31 (6-year window before the extract date 2025-03-31) closed by
    # 2025-03-31: dispositions from FFY 2019 (2018-10-01..2019-09-30) to FFY 2025 (2024-10-01..
    # 2025-09-30, partial): seven files.
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"child_file_{y}.csv" for y in range(2019, 2026)]
    # 8 LAs LA01..LA08 -> two-letter states AA..AH in la_code order.
    assert states == {f"LA0{i + 1}": "A" + "ABCDEFGH"[i] for i in range(8)}
    total = 0
    for path in sorted(folder.iterdir()):
        year = int(path.stem.split("_")[-1])
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
        disposition = pd.to_datetime(rows["RpDispDt"])
        assert (disposition >= pd.Timestamp(f"{year - 1}-10-01")).all()
        assert (disposition <= pd.Timestamp(f"{year}-09-30")).all()
        assert (rows["SubYr"] == str(year)).all() and (rows["RpDispDt"] != "").all()
        assert not path.read_text().count('"')                  # unquoted, as NDACAN's files
        total += len(rows)
    # One record per referral closed by the extract date; open ones are not yet in a Child File.
    closed = extract.referrals["closure_date"].notna()
    assert total == int(closed.sum()) and 0 < int((~closed).sum()) < total


def test_written_file_reads_without_rejects(written):
    extract, folder, _, _ = written
    adapted = ncands.read(folder)
    rec = adapted.metrics["records"]["referrals"]
    closed = int(extract.referrals["closure_date"].notna().sum())
    assert (rec["records_in"], rec["kept"], rec["rejected"], rec["merged"]) == (closed, closed, 0, 0)
    assert rec["records_in"] == rec["kept"] + rec["rejected"] + rec["merged"]
    assert len(adapted.rejects) == 0
    ch = adapted.metrics["records"]["children"]
    assert ch["rejected_inconsistent_ages"] == 0 and ch["no_birth_date"] == 0
    assert ch["attribute_conflicts"] == {"sex": 0, "ethnicity": 0}
    # Every factor, child risk factor and PostServ written as 1 or 2: none unknown.
    rf = adapted.metrics["risk_factors"]
    assert {c["unknown"] for c in rf["caregiver"].values()} == {0} and rf["not_recorded_in_input"] == []
    assert rf["disability"]["children_all_unknown"] == rf["disability"]["children_0_with_some_unknown"] == 0
    assert adapted.metrics["outcome_unknown"] == 0


def _three_table_as_ncands(extract, states):
    """The three-table route given what the Child File holds: referrals closed by the extract
    date, their children, ids keyed as the reader keys them, each child its own family, no
    plans, outcomes collapsed to CIN (a service) / ASSESSED (none), the two factors NCANDS does
    not record absent. The true birth date is kept."""
    r = extract.referrals.loc[extract.referrals["closure_date"].notna()].copy()
    c = extract.children.loc[extract.children["child_id"].isin(r["child_id"])].copy()
    state = c["la_code"].map(states)
    new_id = dict(zip(c["child_id"], state + "/" + c["child_id"]))
    c = c.assign(la_code=state, child_id=c["child_id"].map(new_id))
    c["family_id"] = c["child_id"]
    r["referral_id"] = r["child_id"].map(new_id).str.split("/").str[0] + "/" + r["referral_id"] + "/" + r["child_id"]
    r["child_id"] = r["child_id"].map(new_id)
    r["outcome"] = r["outcome"].where(r["outcome"].isin(["NFA", "ASSESSED"]), "CIN").replace("NFA", "ASSESSED")
    r = r.drop(columns=["low_social_support", "parent_maltreated_as_child"])
    p = extract.plans.iloc[:0]
    return {"children": c, "referrals": r, "plans": p}


def test_round_trip_matches_three_table_route(written):
    extract, folder, states, extract_date = written
    adapted = ncands.read(folder)
    paths = {k: Path(k) for k in ("children", "referrals", "plans")}
    kept_n, rejects_n, m_n = clean.clean_extract(adapted.tables, paths, extract_date=extract_date, dayfirst=False)
    kept_3, rejects_3, m_3 = clean.clean_extract(_three_table_as_ncands(extract, states), paths,
                                                 extract_date=extract_date)
    assert len(rejects_n) == len(rejects_3) == 0
    for name in ("children", "referrals"):
        assert m_n["tables"][name]["rows_kept"] == m_3["tables"][name]["rows_kept"] > 1000

    # Children: everything but the birth date agrees exactly; the birth date read back is the
    # middle of the interval the reported ages allow, so within half a year (<= 183 days) of
    # the true one.
    cn = kept_n["children"].set_index("child_id").sort_index()
    c3 = kept_3["children"].set_index("child_id").sort_index()
    same = ["la_code", "sex", "ethnicity", "disability", "looked_after_date"]
    pd.testing.assert_frame_equal(cn[same], c3[same])
    assert c3["looked_after_date"].notna().sum() > 20                   # entering care is carried
    shift = (cn["date_of_birth"] - c3["date_of_birth"]).dt.days
    assert shift.abs().max() <= 183 and (shift != 0).mean() > 0.9
    # Referrals agree exactly (outcome as NCANDS records it: service or not).
    rn = kept_n["referrals"].set_index("referral_id").sort_index()
    r3 = kept_3["referrals"].set_index("referral_id").sort_index()
    pd.testing.assert_frame_equal(rn, r3[rn.columns])

    a, a_counts = derive.derive_rereport(kept_n["children"], kept_n["referrals"], kept_n["plans"],
                                           extract_date=extract_date)
    b, _ = derive.derive_rereport(kept_3["children"], kept_3["referrals"], kept_3["plans"],
                                    extract_date=extract_date)
    assert a_counts["index_referrals"] > 1000 and a_counts["events"] > 100    # not a vacuous comparison
    a, b = a.set_index("index_referral_id"), b.set_index("index_referral_id")
    # Index referrals: the same, except where the episode ends (origin) between the true and
    # the estimated 18th birthday: on the side whose birthday comes first it has no follow-up.
    # (Seen: 8 of about 2,700, each ending at 17 and a few months.)
    only = a.index.symmetric_difference(b.index)
    assert len(only) < 0.01 * len(a)
    ref = kept_n["referrals"].set_index("referral_id").loc[only]
    origin = derive.to_days(ref["closure_date"]).clip(min=derive.to_days(ref["referral_date"]) + 14)
    day18 = [derive.eighteenth_birthday_days(k.set_index("child_id").loc[ref["child_id"], "date_of_birth"])
             for k in (kept_n["children"], kept_3["children"])]
    assert ((np.minimum(*day18) <= origin) & (origin < np.maximum(*day18))).all()
    common = a.index.intersection(b.index)
    a, b = a.loc[common].sort_index(), b.loc[common].sort_index()
    exact = ["child_id", "la_code", "index_date", "origin_date", "event", *NCANDS_FACTORS, "disability",
             "no_service", "outcome", "referral_source", "prior_referrals", "prior_plan", "sex", "ethnicity"]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    assert a["event"].sum() == b["event"].sum() > 100
    # event_type and time_days differ only where either side ends at the 18th birthday (the
    # estimated one or the true one), by no more than the birth date moved (<= 183 days, +1 for
    # a 29 February birthday); re-referrals never move (every report's age bounds the estimated
    # birth date, so each report is before the estimated 18th birthday). Seen: 159 of 2,720
    # rows, |time_days difference| at most 183.
    moved = (a["event_type"] != b["event_type"]) | (a["time_days"] != b["time_days"])
    at18 = (a["event_type"] == "age_18") | (b["event_type"] == "age_18")
    assert not (moved & ~at18).any()
    assert (a["time_days"] - b["time_days"]).abs().max() <= 184
    assert not (moved & ((a["event_type"] == "re_referral") | (b["event_type"] == "re_referral"))).any()
    assert 0 < moved.sum() < 0.1 * len(a)
    # The estimated birth date gives the same whole-year age at every report, so the age band
    # at index (exact age in days / 365.25) moves only within a day of a birthday (seen: never).
    assert (a["age_band"] != b["age_band"]).mean() < 0.01
    assert (a["age_years"] - b["age_years"]).abs().max() <= 184 / 365.25 + 0.001
    # By construction: the NCANDS route has no plans, no family (each child its own cluster)
    # and no low social support / parent maltreated as a child.
    assert (a["prior_plan"] == 0).all() and (a["family_id"] == a["child_id"]).all()
    assert not {"low_social_support", "parent_maltreated_as_child"} & set(a.columns)


def test_writer_by_hand(tmp_path):
    """A hand-made canonical extract; every written code worked out from ncands.yaml's maps
    (read backwards) and the writer rules in the module docstring."""
    ts = pd.Timestamp
    children = pd.DataFrame({
        "child_id": ["C1", "C2"], "family_id": ["F1", "F2"], "la_code": ["LA9", "KY"], "sex": ["F", "M"],
        "date_of_birth": [ts("2012-02-29"), ts("2010-06-15")], "ethnicity": ["MIXED", "OTHER"],
        "disability": pd.array([1, 0], dtype="int8"), "looked_after_date": [ts("2021-03-01"), pd.NaT]})
    referrals = pd.DataFrame({
        "referral_id": ["R1", "R2", "R3", "R4"], "child_id": ["C1", "C1", "C1", "C2"],
        "referral_date": [ts("2019-02-28"), ts("2020-09-30"), ts("2021-02-01"), ts("2024-10-01")],
        "referral_source": ["UNKNOWN", "POLICE", "SCHOOL", "HEALTH"],
        "closure_date": [ts("2019-10-01"), ts("2020-09-30"), pd.NaT, ts("2025-03-31")],
        "outcome": ["CPP", "NFA", "CIN", "ASSESSED"],
        "substance_misuse": [1, 0, 0, 0], "domestic_violence": [0, 1, 0, 0], "mental_health": [0, 0, 0, 0],
        "learning_disability": [0, 1, 0, 0], "financial_problems": [0, 0, 0, 1],
        "low_social_support": [1, 1, 1, 1], "parent_maltreated_as_child": [1, 1, 1, 1],
        "abuse_category": ["MULTIPLE", None, "NEGLECT", "PHYSICAL"]})
    states = ncands.write(children, referrals, referrals.iloc[:0], tmp_path, extract_date=pd.Timestamp("2025-03-31"))
    # KY is already two capital letters; LA9 takes the first free code, AA.
    assert states == {"KY": "KY", "LA9": "AA"}
    # R1 closed 2019-10-01 and R2 2020-09-30: both FFY 2020 (2019-10-01..2020-09-30); R4 closed
    # 2025-03-31: FFY 2025; R3 is open at the extract date: not written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child_file_2020.csv", "child_file_2025.csv"]
    header = ("SubYr,StaTerr,RptID,ChID,RptDt,RptSrc,RpDispDt,ChAge,ChSex,ChRacAI,ChRacAs,ChRacBl,ChRacNH,"
              "ChRacWh,ChRacUd,CEthn,ChMal1,ChMal2,ChMal3,ChMal4,CdRtrd,CdEmotnl,CdVisual,CdLearn,CdPhys,"
              "CdBehav,CdMedicl,FCAlc,FCDrug,FCRtrd,FCEmotnl,FCLearn,FCViol,FCMoney,PostServ,FosterCr,RmvDate")
    # Fields in header order: SubYr .. ChSex | 5 race flags, ChRacUd, CEthn | ChMal1-4 |
    # 7 child risk factors | FCAlc FCDrug FCRtrd FCEmotnl FCLearn FCViol FCMoney | PostServ FosterCr RmvDate.
    expected_2020 = [
        # R1: source UNKNOWN -> 99 (writer.prefer); age on 2019-02-28: 2019-02-28 - 7 years =
        # 2012-02-28 is before the birth 2012-02-29, so 6. F -> 2. MIXED -> White and Black yes,
        # the other races no, unable to determine no; Hispanic no. MULTIPLE -> NEGLECT (first
        # code 2) and EMOTIONAL (5). disability 1 -> CdRtrd (first child risk factor) yes.
        # substance 1 -> FCAlc (first of its fields) yes, FCDrug no. CPP is a service: PostServ 1.
        # Not C1's latest written report: FosterCr 2, no RmvDate.
        "2020,AA,R1,C1,2019-02-28,99,2019-10-01,6,2," "2,2,1,2,1,2,2," "2,5,,," "1,2,2,2,2,2,2,"
        "1,2,2,2,2,2,2," "1,2,",
        # R2: POLICE -> 4 (first code); age on 2020-09-30: 2012-09-30 >= birth: 8. No category ->
        # 9 (writer.prefer). learning disability -> FCRtrd yes, FCLearn no; DV -> FCViol yes.
        # NFA: no service, PostServ 2. C1's latest written report (R3 is not written): FosterCr 1,
        # RmvDate 2021-03-01 (in FFY 2021, carried on this FFY 2020 report).
        "2020,AA,R2,C1,2020-09-30,4,2020-09-30,8,2," "2,2,1,2,1,2,2," "9,,,," "1,2,2,2,2,2,2,"
        "2,2,1,2,2,1,2," "2,1,2021-03-01",
    ]
    expected_2025 = [
        # R4: HEALTH -> 2 (medical, first code); age on 2024-10-01: 2010-10-01 >= 2010-06-15: 14.
        # M -> 1. OTHER -> ChRacAI (the first race group mapped to OTHER). PHYSICAL -> 1.
        # disability 0 -> all no. financial -> FCMoney yes. ASSESSED: PostServ 2. FosterCr 2.
        "2025,KY,R4,C2,2024-10-01,2,2025-03-31,14,1," "1,2,2,2,2,2,2," "1,,,," "2,2,2,2,2,2,2,"
        "2,2,2,2,2,2,1," "2,2,",
    ]
    assert (tmp_path / "child_file_2020.csv").read_text().splitlines() == [header, *expected_2020]
    assert (tmp_path / "child_file_2025.csv").read_text().splitlines() == [header, *expected_2025]

    # Read back: C1's reported ages give birth in (2012-02-28, 2013-02-28] (6 on 2019-02-28)
    # and (2011-09-30, 2012-09-30] (8 on 2020-09-30): together (2012-02-28, 2012-09-30], 215
    # days (29 Feb + 31 + 30 + 31 + 30 + 31 + 31 + 30); middle 2012-02-28 + (215 + 1) // 2 = + 108
    # days = 2012-06-15. C2: (2009-10-01, 2010-10-01], 365 days: + 183 -> 2010-04-02.
    out = ncands.read(tmp_path)
    kids = out.tables["children"].set_index("child_id")
    assert kids.loc["AA/C1", ["sex", "date_of_birth", "ethnicity", "disability", "looked_after_date"]].tolist() == \
        ["F", "2012-06-15", "MIXED", "1", "2021-03-01"]
    assert kids.loc["KY/C2", ["sex", "date_of_birth", "ethnicity", "disability", "looked_after_date"]].tolist() == \
        ["M", "2010-04-02", "OTHER", "0", ""]
    refs = out.tables["referrals"].set_index("referral_id")
    cols = ["referral_source", "closure_date", "outcome", "abuse_category", *NCANDS_FACTORS]
    assert refs.loc["AA/R1/C1", cols].tolist() == ["UNKNOWN", "2019-10-01", "CIN", "MULTIPLE", "1", "0", "0", "0", "0"]
    assert refs.loc["AA/R2/C1", cols].tolist() == ["POLICE", "2020-09-30", "ASSESSED", "", "0", "1", "0", "1", "0"]
    assert refs.loc["KY/R4/C2", cols].tolist() == ["HEALTH", "2025-03-31", "ASSESSED", "PHYSICAL", "0", "0", "0", "0", "1"]


# --------------------------------------------------------------------------------------------
# Review fixes: no usable record, quoted ragged rows, month-first dates, a UTF-8 BOM
# --------------------------------------------------------------------------------------------

def _header() -> str:
    return (DATA / F19).read_text().splitlines()[0]


def _row(**values: str) -> str:
    """2019 fixture row 1 (KY/R100/C1) with some fields replaced (NDACAN names)."""
    text = (DATA / F19).read_text().splitlines()
    header, row = text[0].split(","), text[1].split(",")
    for name, value in values.items():
        row[header.index(name)] = value
    return ",".join(row)


def test_header_only_file_stops_with_one_line(tmp_path):
    (tmp_path / "cf.csv").write_text(_header() + "\n")
    message = _one_line_error(tmp_path)
    # The project's one reader stops on a header without rows, naming the file.
    assert "cf.csv" in message and "empty table (a header but no rows)" in message


def test_no_record_with_an_id_stops_with_one_line(tmp_path):
    # One record without ChID: read 1, rejected 1 (missing_id 1), nothing left.
    (tmp_path / "cf.csv").write_text("\n".join([_header(), _row(ChID="")]) + "\n")
    message = _one_line_error(tmp_path)
    assert str(tmp_path) in message and "1 record read" in message and "1 rejected" in message
    assert "missing_id 1" in message


def test_every_child_with_inconsistent_ages_stops_with_one_line(tmp_path):
    # C1 aged 6 on 2019-01-10 -> birth in (2012-01-10, 2013-01-10]; aged 9 on 2019-02-10 ->
    # (2009-02-10, 2010-02-10]: no common day, so both records are rejected (child_rejected).
    rows = [_row(), _row(RptID="R101", RptDt="2019-02-10", RpDispDt="2019-02-20", ChAge="9")]
    (tmp_path / "cf.csv").write_text("\n".join([_header(), *rows]) + "\n")
    message = _one_line_error(tmp_path)
    assert "2 records read" in message and "2 rejected" in message and "child_rejected 2" in message


@pytest.mark.parametrize("where", ["short", "long"])
def test_ragged_quoted_row(tmp_path, where):
    # Data row 2 (line 3) quotes its report date; it has one field too few (the last, RmvDate,
    # dropped) or one too many: 38 or 40 fields against the header's 39.
    header = _header()
    row = _row(RptID="R101", RptDt='"2019-02-10"')
    row = row[:row.rindex(",")] if where == "short" else row + ",extra"
    (tmp_path / "cf.csv").write_text("\n".join([header, _row(), row, _row(RptID="R102")]) + "\n")
    message = _one_line_error(tmp_path)
    n_fields = 38 if where == "short" else 40
    assert header.count(",") + 1 == 39
    assert "cf.csv" in message and "row 2" in message and f"{n_fields} fields" in message and "39" in message


def test_quoted_field_holding_the_delimiter_is_one_field(tmp_path):
    # A quoted value with a comma in it is one field: the row has 39 fields and is read.
    rows = [_row(), _row(RptID='"R1,01"')]
    (tmp_path / "cf.csv").write_text("\n".join([_header(), *rows]) + "\n")
    refs = ncands.read(tmp_path).tables["referrals"]
    assert sorted(refs["referral_id"]) == ["KY/R1,01/C1", "KY/R100/C1"]


@pytest.mark.parametrize("dayfirst", [True, False])
def test_slash_dates_are_month_first_whatever_dayfirst(tmp_path, dayfirst):
    # The record layout is month-first (US): 05/06/2019 is 6 May, 05/16/2019 is 16 May, whatever
    # input.dayfirst says (it is accepted and ignored).
    rows = [_row(RptDt="05/06/2019", RpDispDt="05/07/2019"),
            _row(RptID="R101", ChID="C9", RptDt="05/16/2019", RpDispDt="05/17/2019")]
    (tmp_path / "cf.csv").write_text("\n".join([_header(), *rows]) + "\n")
    out = ncands.read(tmp_path, dayfirst=dayfirst)
    refs = out.tables["referrals"].set_index("referral_id")
    assert refs.loc["KY/R100/C1", ["referral_date", "closure_date"]].tolist() == ["2019-05-06", "2019-05-07"]
    assert refs.loc["KY/R101/C9", ["referral_date", "closure_date"]].tolist() == ["2019-05-16", "2019-05-17"]
    assert len(out.rejects) == 0


def test_utf8_bom(tmp_path):
    # Excel's "CSV UTF-8" starts the file with a byte order mark. The 2019 fixture with StaTerr
    # moved to the first column (a required column: without the fix, "missing column 'StaTerr'")
    # reads with the mark as it does without.
    plain, bom = tmp_path / "plain", tmp_path / "bom"
    plain.mkdir()
    bom.mkdir()
    lines = [line.split(",") for line in (DATA / F19).read_text().splitlines()]
    text = "".join(",".join([f[1], f[0], *f[2:]]) + "\n" for f in lines)
    (plain / F19).write_text(text)
    (bom / F19).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    expected, got = ncands.read(plain), ncands.read(bom)
    for name in ("children", "referrals"):
        pd.testing.assert_frame_equal(got.tables[name], expected.tables[name])


# --------------------------------------------------------------------------------------------
# Unknown is never counted as absent: a factor unknown everywhere, disability, PostServ
# --------------------------------------------------------------------------------------------

def _unknown_folder(tmp_path: Path) -> Path:
    """Three records (2019 fixture row 1 otherwise: every caregiver factor known, FCEmotnl set
    to 2): FCMoney 9, blank, 9 -> financial problems unknown in every record. C2: every child
    risk factor 9 and PostServ 9. C3: CdRtrd 9 and CdVisual blank, the other five child risk
    factors 2."""
    child_risk = ["CdRtrd", "CdEmotnl", "CdVisual", "CdLearn", "CdPhys", "CdBehav", "CdMedicl"]
    rows = [
        _row(FCEmotnl="2", FCMoney="9"),
        _row(RptID="R200", ChID="C2", FCEmotnl="2", FCMoney="", PostServ="9", **{c: "9" for c in child_risk}),
        _row(RptID="R300", ChID="C3", FCEmotnl="2", FCMoney="9", CdRtrd="9", CdVisual=""),
    ]
    (tmp_path / "cf.csv").write_text("\n".join([_header(), *rows]) + "\n")
    return tmp_path


@pytest.mark.parametrize("unknown_as", [None, 0])
def test_factor_unknown_in_every_record_is_not_recorded(tmp_path, unknown_as):
    out = ncands.read(_unknown_folder(tmp_path), spec=spec_with(risk_factor_unknown_as=unknown_as))
    refs = out.tables["referrals"].set_index("referral_id")
    # financial_problems unknown in 3 of 3 records: not recorded by this input, column left out
    # (whatever the setting: neither 3 quarantines nor 3 invented zeros).
    assert "financial_problems" not in refs.columns
    assert sorted(out.not_recorded) == ["financial_problems", "low_social_support", "parent_maltreated_as_child"]
    rf = out.metrics["risk_factors"]
    assert rf["not_recorded_in_input"] == ["financial_problems"]
    assert rf["caregiver"]["financial_problems"] == {"unknown": 3, "result": "not recorded (column left out)"}
    assert rf["caregiver"]["mental_health"]["unknown"] == 0
    # The other factors as recorded: FCAlc 1 -> substance 1; FCViol 2, FCEmotnl 2, FCRtrd and
    # FCLearn 2 -> 0.
    assert refs.loc["KY/R100/C1", ["substance_misuse", "domestic_violence", "mental_health",
                                   "learning_disability"]].tolist() == ["1", "0", "0", "0"]
    # PostServ 1 -> CIN; 9 -> no outcome whatever the setting (it is not a risk factor).
    assert refs["outcome"].to_dict() == {"KY/R100/C1": "CIN", "KY/R200/C2": "", "KY/R300/C3": "CIN"}
    assert out.metrics["outcome_unknown"] == 1
    # Disability: C1 all seven 2 -> 0. C2 all seven 9 -> unknown: blank (null) or 0 (0).
    # C3 five 2, two unknown, none yes -> 0, counted as given 0 with some unknown.
    kids = out.tables["children"].set_index("child_id")["disability"].to_dict()
    assert kids == {"KY/C1": "0", "KY/C2": "" if unknown_as is None else "0", "KY/C3": "0"}
    assert (rf["disability"]["children_all_unknown"], rf["disability"]["children_0_with_some_unknown"]) == (1, 1)

    # Through clean: C2 has no disability (null) -> missing_value; its referral has no outcome
    # -> missing_value (found before child_rejected). With 0, only the referral.
    _, rejects, metrics = clean.clean_extract(out.tables, {k: Path(k) for k in out.tables},
                                              extract_date=EXTRACT_DATE, dayfirst=False)
    expected = [("referrals", "cf.csv: row 2", "outcome", "", "missing_value")]
    if unknown_as is None:
        expected.append(("children", "cf.csv: row 2", "disability", "", "missing_value"))
    assert _clean_rejects(rejects) == sorted(expected)
    assert metrics["not_recorded"] == ["financial_problems", "low_social_support", "parent_maltreated_as_child"]


def test_statements(adapted, adapted_default):
    import re

    for out in (adapted, adapted_default):
        statements = out.metrics["statements"]
        assert statements and all(len(s) < 200 for s in statements)
        text = " ".join(statements)
        # No count below 10: every number written is 10 or more ("18th", "10 referrals") or the
        # value 0 ("set to 0"; a count of none is written "none"). No identifiers (state codes,
        # report or child ids).
        numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text)]
        assert all(n == 0 or n >= 10 for n in numbers), text
        assert not re.search(r"\b(KY|OR)\b|R\d00|\bC\d\b", text), text
        assert "NCANDS has no child protection plans" in text and "Screened-out referrals never appear" in text
        assert "middle day" in text and "18th birthday" in text and "within half" in text
        # Index episode: 1 of the 10 kept referrals ends at the report date (OR/R100/C1: the
        # disposition is before the report).
        assert ("disposition date (RpDispDt), or at the report date where that is missing or before the report "
                "(fewer than 10 of 10 referrals)") in text
        # PostServ 9 on one record; KY/C2's child risk factors all unknown.
        assert "Post-investigation services unknown or blank: fewer than 10 referrals" in text
    zero, default = " ".join(adapted.metrics["statements"]), " ".join(adapted_default.metrics["statements"])
    assert "risk_factor_unknown_as: 0" in zero and "set to 0" in zero and "left blank" not in zero
    assert "risk_factor_unknown_as: null" in default and "left blank" in default and "set to 0" not in default
    # Mental health unknown in 2 referrals (2019 rows 1, 3): "fewer than 10".
    assert "Caregiver risk factor mental health unknown: fewer than 10 referrals (left blank)." in default
    assert "Children with every child risk factor unknown in every report: fewer than 10 (disability left blank)." \
        in default


def test_counts_in_statements():
    # disclosure.min_cell_count is 10: a count below it is not written.
    assert [ncands._count(n) for n in (0, 1, 9, 10, 12345)] == ["none", "fewer than 10", "fewer than 10", "10",
                                                                 "12,345"]


@pytest.mark.parametrize("quoted", [False, True])
def test_utf8_header_then_a_latin1_row(tmp_path, quoted):
    # The header and the first 300 rows (over 8 KB, past what the header read decodes) are plain
    # ASCII; the last row has "Café" in latin-1 (byte e9) in a column the route ignores
    # (RptDisp): the project's one reader names the row and asks for input.encoding; declared
    # latin-1, the file is read.
    rows = [_row(RptID=f"R{i}", ChID=f"C{i}") for i in range(300)]
    last = _row(RptID="R300", ChID="C300", RptDisp="Caf\xe9")
    if quoted:
        rows[0] = rows[0].replace(",R0,", ',"R0",')
    text = "\n".join([_header(), *rows]).encode("ascii") + b"\n" + last.encode("latin-1") + b"\n"
    assert len(text) > 3 * 8192
    (tmp_path / F19).write_bytes(text)
    with pytest.raises(InputError, match=r"row 301 \(line 302\): unreadable encoding, byte 0xe9 is not utf-8"):
        ncands.read(tmp_path)
    out = ncands.read(tmp_path, encoding="latin-1")
    assert out.metrics["files"][0]["encoding"] == "latin-1"
    assert out.metrics["records"]["referrals"]["kept"] == 301
