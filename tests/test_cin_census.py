"""The England CIN census route: XML returns (and liiatools flat CSV) -> canonical tables.

Hand-made returns follow the DfE CIN census schema (vendored: pipeline/formats/
CIN_schema_2024.xsd for census years to 2023-24, CIN_schema_2025.xsd from 2024-25, where
<GenderCurrent> 1/2/0/9 became <Sex> M/F/U; DfE rule 4180 as coded in
data-to-insight/csc-validator-be-cin cin2024_25/rule_4180.py). Expected values are worked
out by hand from the project's CIN mapping rules (pipeline/formats/cin_census.py docstring).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lxml import etree

from pipeline import config, simulate
from pipeline.clean import clean_extract
from pipeline.cli import InputError
from pipeline.derive import derive_cpp_durations, derive_rereport
from pipeline.formats import cin_census

HEADER = ("<Header><CollectionDetails><Collection>CIN</Collection><Year>{y}</Year>"
          "<ReferenceDate>{y}-03-31</ReferenceDate></CollectionDetails>"
          "<Source><SourceLevel>L</SourceLevel><LEA>201</LEA></Source></Header>")
NOT_RECORDED = ["financial_problems", "low_social_support", "parent_maltreated_as_child"]


def child_xml(cid: str, body: str, *, dob="2015-06-01", sex="<GenderCurrent>2</GenderCurrent>",
              chars="<Ethnicity>WBRI</Ethnicity><Disabilities><Disability>NONE</Disability></Disabilities>") -> str:
    ident = f"<LAchildID>{cid}</LAchildID>" if cid else ""
    return (f"<Child><ChildIdentifiers>{ident}<PersonBirthDate>{dob}</PersonBirthDate>{sex}</ChildIdentifiers>"
            f"<ChildCharacteristics>{chars}</ChildCharacteristics>{body}</Child>")


def write_return(folder: Path, name: str, year: int, children: list[str]) -> Path:
    path = folder / name
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<Message>' + HEADER.format(y=year)
                    + "<Children>\n" + "\n".join(children) + "\n</Children></Message>\n", encoding="utf-8")
    return path


# --- (c) merge across two returns, built by hand ----------------------------------------

def two_returns(folder: Path) -> None:
    """Year 1 (to 31 March 2023) and year 2 (to 31 March 2024) of LA 201.

    File names sort year 2 first: order must come from ReferenceDate, not the name.
    """
    year1 = [
        child_xml("A1", (
            # open at 31 March 2023; its assessment (factors 2B, 3A, 6B) only in this return
            "<CINdetails><CINreferralDate>2022-11-10</CINreferralDate><ReferralSource>6</ReferralSource>"
            "<Assessments><AssessmentActualStartDate>2022-11-11</AssessmentActualStartDate>"
            "<FactorsIdentifiedAtAssessment><AssessmentFactors>2B</AssessmentFactors>"
            "<AssessmentFactors>3A</AssessmentFactors><AssessmentFactors>6B</AssessmentFactors>"
            "</FactorsIdentifiedAtAssessment></Assessments>"
            "<CINPlanDates><CINPlanStartDate>2022-12-01</CINPlanStartDate></CINPlanDates>"
            "<ReferralNFA>0</ReferralNFA></CINdetails>"
            # closed within year 1: in this return only
            "<CINdetails><CINreferralDate>2022-05-02</CINreferralDate><ReferralSource>3A</ReferralSource>"
            "<CINclosureDate>2022-05-20</CINclosureDate><ReasonForClosure>RC8</ReasonForClosure>"
            "<ReferralNFA>1</ReferralNFA></CINdetails>")),
        child_xml("B7", (
            "<CINdetails><CINreferralDate>2023-01-05</CINreferralDate><ReferralSource>1A</ReferralSource>"
            "<Assessments><AssessmentActualStartDate>2023-01-06</AssessmentActualStartDate>"
            "<FactorsIdentifiedAtAssessment><AssessmentFactors>4B</AssessmentFactors>"
            "</FactorsIdentifiedAtAssessment></Assessments><ReferralNFA>0</ReferralNFA>"
            "<ChildProtectionPlans><CPPstartDate>2023-02-01</CPPstartDate>"
            "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>"
            "<NumberOfPreviousCPP>1</NumberOfPreviousCPP></ChildProtectionPlans></CINdetails>"),
            dob="2019-01-15", sex="<GenderCurrent>1</GenderCurrent>",
            chars="<Ethnicity>MWBC</Ethnicity><Disabilities><Disability>AUT</Disability>"
                  "<Disability>HEAR</Disability></Disabilities>"),
    ]
    year2 = [
        child_xml("A1", (
            # the closure only here; ReferralSource differs from year 1 (a conflict: 1A wins)
            "<CINdetails><CINreferralDate>2022-11-10</CINreferralDate><ReferralSource>1A</ReferralSource>"
            "<CINclosureDate>2023-08-31</CINclosureDate><ReasonForClosure>RC7</ReasonForClosure>"
            "<CINPlanDates><CINPlanStartDate>2022-12-01</CINPlanStartDate>"
            "<CINPlanEndDate>2023-08-31</CINPlanEndDate></CINPlanDates>"
            "<ReferralNFA>0</ReferralNFA></CINdetails>")),
        child_xml("B7", (
            # the plan's end only here
            "<CINdetails><CINreferralDate>2023-01-05</CINreferralDate><ReferralSource>1A</ReferralSource>"
            "<ReferralNFA>0</ReferralNFA>"
            "<ChildProtectionPlans><CPPstartDate>2023-02-01</CPPstartDate><CPPendDate>2023-10-12</CPPendDate>"
            "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>"
            "<NumberOfPreviousCPP>1</NumberOfPreviousCPP></ChildProtectionPlans></CINdetails>"),
            dob="2019-01-15", sex="<GenderCurrent>1</GenderCurrent>",
            chars="<Ethnicity>MWBC</Ethnicity><Disabilities><Disability>AUT</Disability>"
                  "<Disability>HEAR</Disability></Disabilities>"),
    ]
    write_return(folder, "b_2023.xml", 2023, year1)
    write_return(folder, "a_2024.xml", 2024, year2)


def test_merge_across_two_returns_by_hand(tmp_path):
    two_returns(tmp_path)
    got = cin_census.read(tmp_path)
    children = got.tables["children"].set_index("child_id")
    referrals = got.tables["referrals"].set_index("referral_id")
    plans = got.tables["plans"].set_index("plan_id")

    # Children: A1 = GenderCurrent 2 -> F, only NONE -> disability 0; B7 = 1 -> M, AUT + HEAR -> 1.
    assert sorted(children.index) == ["201/A1", "201/B7"]
    assert children.loc["201/A1", ["la_code", "sex", "date_of_birth", "ethnicity", "disability"]].tolist() == \
        ["201", "F", "2015-06-01", "WBRI", "0"]
    assert children.loc["201/B7", ["sex", "date_of_birth", "ethnicity", "disability"]].tolist() == \
        ["M", "2019-01-15", "MWBC", "1"]
    assert "family_id" not in got.tables["children"]

    # Referrals: three distinct (child, CINreferralDate) keys.
    assert sorted(referrals.index) == ["201/A1/2022-05-02", "201/A1/2022-11-10", "201/B7/2023-01-05"]
    a_open = referrals.loc["201/A1/2022-11-10"]
    # Source 6 (year 1) then 1A (year 2): the later return wins -> INDIVIDUAL.
    assert a_open["referral_source"] == "INDIVIDUAL"
    assert a_open["closure_date"] == "2023-08-31"          # from year 2 only
    assert a_open["outcome"] == "CIN"                       # ReferralNFA 0, no plan, CINPlanDates
    # Factors from year 1 only: 2B -> substance_misuse, 3A -> domestic_violence, 6B -> no flag.
    assert a_open[["substance_misuse", "domestic_violence", "mental_health", "learning_disability"]].tolist() == \
        ["1", "1", "0", "0"]
    assert pd.isna(a_open["abuse_category"])
    a_nfa = referrals.loc["201/A1/2022-05-02"]
    assert [a_nfa["referral_source"], a_nfa["closure_date"], a_nfa["outcome"]] == ["HEALTH", "2022-05-20", "NFA"]
    b = referrals.loc["201/B7/2023-01-05"]
    assert [b["outcome"], b["abuse_category"], b["mental_health"], b["substance_misuse"]] == ["CPP", "NEGLECT", "1", "0"]
    assert pd.isna(b["closure_date"])
    for absent in NOT_RECORDED:
        assert absent not in got.tables["referrals"]
    assert set(got.not_recorded) == set(NOT_RECORDED)

    # Plans: one plan in both returns; CPPendDate only in year 2.
    assert plans.index.tolist() == ["201/B7/2023-02-01"]
    assert plans.loc["201/B7/2023-02-01", ["child_id", "start_date", "end_date", "category"]].tolist() == \
        ["201/B7", "2023-02-01", "2023-10-12", "NEGLECT"]
    assert "end_reason" not in got.tables["plans"]

    # Source locations: the latest return's copy (year 2 is a_2024.xml; A1 is its Child[1]).
    assert a_open["source_location"] == "a_2024.xml:/Message/Children/Child[1]/CINdetails[1]"
    assert a_nfa["source_location"] == "b_2023.xml:/Message/Children/Child[1]/CINdetails[2]"
    assert plans.loc["201/B7/2023-02-01", "source_location"] == \
        "a_2024.xml:/Message/Children/Child[2]/CINdetails[1]/ChildProtectionPlans[1]"

    # Reconciliation. children: 2 + 2 in = 2 kept + 0 rejected + 2 merged;
    # referrals: 3 (year 1) + 2 (year 2) = 5 in = 3 kept + 2 merged, 1 conflict (ReferralSource);
    # plans: 1 + 1 = 2 in = 1 kept + 1 merged.
    rec = got.metrics["records"]
    assert {k: [rec[k][m] for m in ("records_in", "kept", "rejected", "merged", "conflicts")] for k in rec} == {
        "children": [4, 2, 0, 2, 0], "referrals": [5, 3, 0, 2, 1], "plans": [2, 1, 0, 1, 0]}
    assert rec["referrals"]["conflicts_by_field"] == {"source": 1}
    # Per file: year 1 keeps only the referral closed within it (A1 2022-05-02); its other
    # two are merged into year 2's copies, and its ReferralSource 6 lost the conflict.
    f1, f2 = got.metrics["files"]["b_2023.xml"]["referrals"], got.metrics["files"]["a_2024.xml"]["referrals"]
    assert [f1[m] for m in ("records_in", "kept", "rejected", "merged", "conflicts")] == [3, 1, 0, 2, 1]
    assert [f2[m] for m in ("records_in", "kept", "rejected", "merged", "conflicts")] == [2, 2, 0, 0, 0]
    # NumberOfPreviousCPP: the one plan has 1.
    assert got.metrics["number_of_previous_cpp"]["by_value"] == {"0": 0, "1": 1, "2": 0, "3_or_more": 0}
    assert got.rejects.empty


def test_sex_element_from_2024_25(tmp_path):
    # CIN_schema_2025.xsd: <Sex> M/F/U replaces <GenderCurrent>.
    body = ("<CINdetails><CINreferralDate>2024-06-01</CINreferralDate><ReferralSource>10</ReferralSource>"
            "<ReferralNFA>true</ReferralNFA></CINdetails>")
    write_return(tmp_path, "201_2025.xml", 2025, [child_xml("S1", body, sex="<Sex>U</Sex>")])
    got = cin_census.read(tmp_path)
    assert got.tables["children"]["sex"].tolist() == ["U"]
    # ReferralNFA "true" (yesnotype of later schemas) -> NFA; source 10 -> UNKNOWN.
    assert got.tables["referrals"][["outcome", "referral_source"]].values.tolist() == [["NFA", "UNKNOWN"]]


# --- (d) bad input ------------------------------------------------------------------------

def test_malformed_xml_is_one_line_with_file_and_line(tmp_path):
    # The end tag on line 4 does not match the <Child> opened on line 3.
    (tmp_path / "bad.xml").write_text("<Message>\n<Children>\n<Child>\n</Children>\n</Message>\n")
    with pytest.raises(InputError) as err:
        cin_census.read(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.match(r"^bad\.xml: line 4: not well-formed XML \(.+\)$", msg), msg


def test_not_a_cin_return_and_empty_folder(tmp_path):
    (tmp_path / "other.xml").write_text('<?xml version="1.0"?>\n<Children><Child/></Children>\n')
    with pytest.raises(InputError, match=r"^other\.xml: line 2: /Children: not a CIN census return"):
        cin_census.read(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no CIN census returns"):
        cin_census.read(empty)
    with pytest.raises(InputError, match="folder not found"):
        cin_census.read(tmp_path / "missing")


def test_child_without_id_rejected_with_path_and_unknown_codes(tmp_path):
    ok = ("<CINdetails><CINreferralDate>2023-01-05</CINreferralDate><ReferralSource>6</ReferralSource>"
          "<ReferralNFA>0</ReferralNFA><ChildProtectionPlans><CPPstartDate>2023-02-01</CPPstartDate>"
          "<InitialCategoryOfAbuse>XYZ</InitialCategoryOfAbuse><LatestCategoryOfAbuse>XYZ</LatestCategoryOfAbuse>"
          "<NumberOfPreviousCPP>0</NumberOfPreviousCPP></ChildProtectionPlans></CINdetails>")
    no_id = ("<CINdetails><CINreferralDate>2023-02-07</CINreferralDate><ReferralSource>2A</ReferralSource>"
             "<ReferralNFA>1</ReferralNFA></CINdetails>")
    bad_factor = ("<CINdetails><CINreferralDate>2023-03-01</CINreferralDate><ReferralSource>2A</ReferralSource>"
                  "<Assessments><AssessmentActualStartDate>2023-03-01</AssessmentActualStartDate>"
                  "<FactorsIdentifiedAtAssessment><AssessmentFactors>99Z</AssessmentFactors>"
                  "</FactorsIdentifiedAtAssessment></Assessments><ReferralNFA>0</ReferralNFA></CINdetails>")
    no_date = "<CINdetails><ReferralSource>2A</ReferralSource><ReferralNFA>0</ReferralNFA></CINdetails>"
    two_plans = "".join(
        f"<CINdetails><CINreferralDate>{ref}</CINreferralDate><ReferralSource>6</ReferralSource>"
        f"<ReferralNFA>0</ReferralNFA><ChildProtectionPlans><CPPstartDate>{start}</CPPstartDate>{end}"
        "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>"
        f"<NumberOfPreviousCPP>{n}</NumberOfPreviousCPP></ChildProtectionPlans></CINdetails>"
        for ref, start, end, n in (("2022-05-10", "2022-06-01", "<CPPendDate>2022-09-01</CPPendDate>", 0),
                                   ("2022-09-20", "2022-10-01", "", 1)))
    write_return(tmp_path, "201_2023.xml", 2023, [
        child_xml("K1", ok), child_xml("", no_id), child_xml("K3", bad_factor + no_date), child_xml("K4", two_plans)])
    got = cin_census.read(tmp_path)
    rej = got.rejects.set_index("source_row")
    # Child[2] has no LAchildID: rejected (missing_id), its CINdetails with it (child_rejected).
    assert rej.loc["201_2023.xml:/Message/Children/Child[2]", ["table", "field", "reason"]].tolist() == \
        ["children", "LAchildID", "missing_id"]
    assert rej.loc["201_2023.xml:/Message/Children/Child[2]/CINdetails[1]", ["table", "reason"]].tolist() == \
        ["referrals", "child_rejected"]
    # An AssessmentFactors code no schema lists: the referral's flags cannot be known.
    assert rej.loc["201_2023.xml:/Message/Children/Child[3]/CINdetails[1]", ["field", "value", "reason"]].tolist() == \
        ["AssessmentFactors", "99Z", "unknown_code"]
    # A CINdetails without CINreferralDate.
    assert rej.loc["201_2023.xml:/Message/Children/Child[3]/CINdetails[2]", ["field", "reason"]].tolist() == \
        ["CINreferralDate", "missing_value"]
    # children: 4 in = 3 kept + 1 rejected; referrals: 1 + 1 + 2 + 2 = 6 in = 3 kept + 3 rejected.
    rec = got.metrics["records"]
    assert [rec["children"][m] for m in ("records_in", "kept", "rejected", "merged")] == [4, 3, 1, 0]
    assert [rec["referrals"][m] for m in ("records_in", "kept", "rejected", "merged")] == [6, 3, 3, 0]

    # An unknown CategoryOfAbuse is passed on verbatim (K4's two NEG plans keep the unknown
    # share at 1 in 3, under clean's wrong-type threshold) ...
    plans = got.tables["plans"].set_index("plan_id")
    assert plans["category"].to_dict() == {"201/K1/2023-02-01": "XYZ", "201/K4/2022-06-01": "NEGLECT",
                                           "201/K4/2022-10-01": "NEGLECT"}
    assert got.tables["referrals"].set_index("referral_id").loc["201/K1/2023-01-05", "abuse_category"] == "XYZ"
    # ... so clean quarantines it as unknown_code, reported by its source location.
    tables = got.tables
    _, rejects, _ = clean_extract(tables, {k: Path(k) for k in tables}, extract_date=pd.Timestamp("2025-03-31"))
    plan_rej = rejects[rejects["table"] == "plans"]
    assert plan_rej[["field", "value", "reason"]].values.tolist() == [["category", "XYZ", "unknown_code"]]
    ref_rej = rejects[rejects["table"] == "referrals"]
    assert ref_rej[["field", "value", "reason"]].values.tolist() == [["abuse_category", "XYZ", "unknown_code"]]


def test_liiatools_flat_csv(tmp_path):
    # liiatools flat file (liia-tools cin_record.py __EXPORT_HEADERS): one row per event (Date,
    # Type); the CINdetails' fields repeat on each row; Factors and Disabilities comma-joined.
    cols = ["LAchildID", "Date", "Type", "CINreferralDate", "ReferralSource", "CINclosureDate", "ReferralNFA",
            "CINPlanStartDate", "Factors", "CPPstartDate", "CPPendDate", "InitialCategoryOfAbuse",
            "NumberOfPreviousCPP", "PersonBirthDate", "GenderCurrent", "Ethnicity", "Disabilities", "LA", "Year"]
    rows = [
        ["F9", "2023-01-05", "CINreferralDate", "2023-01-05", "6", "", "0", "", "", "", "", "", "",
         "2018-04-01", "2", "BAFR", "NONE", "Barnet", "2023"],
        ["F9", "2023-01-06", "AssessmentActualStartDate", "2023-01-05", "6", "", "0", "", "1C,21", "", "", "", "",
         "2018-04-01", "2", "BAFR", "NONE", "Barnet", "2023"],
        ["F9", "2023-02-01", "CPPstartDate", "2023-01-05", "6", "", "0", "", "", "2023-02-01", "", "EMO", "0",
         "2018-04-01", "2", "BAFR", "NONE", "Barnet", "2023"],
        # next year's return: the plan's end and the closure
        ["F9", "2023-06-30", "CPPendDate", "2023-01-05", "6", "2023-07-10", "0", "", "", "2023-02-01",
         "2023-06-30", "EMO", "0", "2018-04-01", "2", "BAFR", "NONE", "Barnet", "2024"],
    ]
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / "cin_flat.csv", index=False)
    got = cin_census.read(tmp_path)
    r = got.tables["referrals"]
    assert r[["referral_id", "referral_source", "closure_date", "outcome", "substance_misuse",
              "abuse_category"]].values.tolist() == [["Barnet/F9/2023-01-05", "POLICE", "2023-07-10", "CPP", "1",
                                                      "EMOTIONAL"]]
    p = got.tables["plans"]
    assert p[["plan_id", "end_date", "category"]].values.tolist() == [["Barnet/F9/2023-02-01", "2023-06-30", "EMOTIONAL"]]
    assert got.tables["children"][["la_code", "sex", "ethnicity", "disability"]].values.tolist() == \
        [["Barnet", "F", "BAFR", "0"]]
    assert r["source_location"].tolist() == ["cin_flat.csv: row 4"]
    # 4 rows: each a child and a referral record (1 kept + 3 merged); 2 rows carry the plan.
    rec = got.metrics["records"]
    assert [rec["referrals"][m] for m in ("records_in", "kept", "merged")] == [4, 1, 3]
    assert [rec["plans"][m] for m in ("records_in", "kept", "merged")] == [2, 1, 1]


# --- (a) and (b): the writer's returns of a simulated extract ------------------------------

@pytest.fixture(scope="module")
def small_extract(tmp_path_factory):
    params = config.load_params()
    params["simulate"]["n_children"] = 2000
    params["simulate"]["fault_rate"] = 0.0
    extract = simulate.simulate(params)
    folder = tmp_path_factory.mktemp("cin_returns")
    lea = cin_census.write(extract.children, extract.referrals, extract.plans, folder,
                           extract_date=config.extract_date(params))
    return extract, folder, lea, config.extract_date(params)


def test_written_returns_are_valid_against_the_xsd(small_extract):
    extract, folder, lea, _ = small_extract
    files = sorted(folder.glob("*.xml"))
    years = sorted({int(f.stem.split("_")[1]) for f in files})
    # Census years end 31 March: referrals from 2019-03-31 (window 6 years) to the extract
    # date 2025-03-31 span the years ending 2019 (if one falls on 31 March 2019) .. 2025.
    assert years[-1] == 2025 and years[0] in (2019, 2020)
    assert len(files) == len(years) * len(lea)
    schemas = {}
    closures = factor_blocks = 0
    for f in files:
        xsd = cin_census.schema_file(int(f.stem.split("_")[1]))
        schema = schemas.setdefault(xsd, etree.XMLSchema(etree.parse(str(xsd))))
        doc = etree.parse(str(f))
        assert schema.validate(doc), f"{f.name}: {schema.error_log.last_error}"
        closures += len(doc.findall(".//CINclosureDate"))
        factor_blocks += len(doc.findall(".//Assessments"))
    assert {x.name for x in schemas} == {"CIN_schema_2024.xsd", "CIN_schema_2025.xsd"}
    # Finished activity is not repeated: each closure once, each referral's assessment once.
    r = extract.referrals
    assert closures == int(r["closure_date"].notna().sum())
    has_assessment = (r["outcome"] != "NFA") | (r[["substance_misuse", "domestic_violence", "mental_health",
                                                   "learning_disability"]].sum(axis=1) > 0)
    assert factor_blocks == int(has_assessment.sum())


def test_round_trip_matches_three_table_route(small_extract):
    extract, folder, lea, extract_date = small_extract
    adapted = cin_census.read(folder)
    tables = adapted.tables
    paths = {k: Path(k) for k in tables}
    kept_cin, _, m_cin = clean_extract(tables, paths, extract_date=extract_date)

    # The three-table route, given the same information as CIN: ids keyed as CIN keys them,
    # no family (each child its own cluster), no entry to care, no plan end reason.
    c, r, p = extract.children.copy(), extract.referrals.copy(), extract.plans.copy()
    c_lea = c["la_code"].map(lea)
    new_id = dict(zip(c["child_id"], c_lea + "/" + c["child_id"]))
    c = c.assign(child_id=c["child_id"].map(new_id), la_code=c_lea, looked_after_date=pd.NaT)
    c["family_id"] = c["child_id"]
    r["child_id"] = r["child_id"].map(new_id)
    r["referral_id"] = r["child_id"] + "/" + r["referral_date"].dt.strftime("%Y-%m-%d")
    p["child_id"] = p["child_id"].map(new_id)
    p["plan_id"] = p["child_id"] + "/" + p["start_date"].dt.strftime("%Y-%m-%d")
    p["end_reason"] = None
    kept_3, _, m_3 = clean_extract({"children": c, "referrals": r, "plans": p}, paths, extract_date=extract_date)
    for name in ("children", "referrals", "plans"):
        assert m_cin["tables"][name]["rows_kept"] == m_3["tables"][name]["rows_kept"] == len(getattr(extract, name))

    def analysis(kept):
        rereport, counts = derive_rereport(kept["children"], kept["referrals"], kept["plans"], extract_date=extract_date)
        durations = derive_cpp_durations(kept["children"], kept["plans"], extract_date=extract_date)
        return rereport, durations, counts

    a_rr, a_dur, a_counts = analysis(kept_cin)
    b_rr, b_dur, b_counts = analysis(kept_3)
    assert a_counts == b_counts
    assert a_counts["index_referrals"] > 1000 and a_counts["events"] > 100   # not a vacuous comparison
    assert not set(NOT_RECORDED) & set(a_rr.columns)       # absent from the CIN route, never 0
    assert (a_rr["family_id"] == a_rr["child_id"]).all()     # each child its own cluster
    drop = ["family_id", *NOT_RECORDED]
    a_rr = a_rr.drop(columns=["family_id"]).sort_values("index_referral_id").reset_index(drop=True)
    b_rr = b_rr.drop(columns=drop).sort_values("index_referral_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a_rr, b_rr)
    # Ethnicity at group level (WBRI etc. -> WHITE by pipeline.schema's aliases).
    assert set(a_rr["ethnicity"]) <= {"WHITE", "MIXED", "ASIAN", "BLACK", "OTHER", "UNKNOWN"}
    a_dur = a_dur.drop(columns=["family_id"]).sort_values("plan_id").reset_index(drop=True)
    b_dur = b_dur.drop(columns=["family_id"]).sort_values("plan_id").reset_index(drop=True)
    assert len(a_dur) > 100
    pd.testing.assert_frame_equal(a_dur, b_dur)
    assert np.all(adapted.metrics["records"]["referrals"]["merged"] > 0)


# --- review fixes: key dates, mixed LA keys, disclosure, recorded-only codes, statements ----

FLAT_COLS = ["LA", "Year", "LAchildID", "Type", "PersonBirthDate", "GenderCurrent", "Ethnicity", "Disabilities",
             "CINreferralDate", "ReferralSource", "PrimaryNeedCode", "CINclosureDate", "ReasonForClosure",
             "ReferralNFA", "Factors", "CINPlanStartDate", "CPPstartDate", "CPPendDate", "InitialCategoryOfAbuse",
             "NumberOfPreviousCPP"]


def flat_row(**values) -> dict[str, str]:
    row = dict.fromkeys(FLAT_COLS, "")
    row.update(PersonBirthDate="2015-06-01", GenderCurrent="2", Ethnicity="WBRI", Disabilities="NONE",
               ReferralSource="1A", ReferralNFA="0")
    row.update(values)
    return row


def write_flat(folder: Path, name: str, rows: list[dict[str, str]]) -> None:
    pd.DataFrame(rows, columns=FLAT_COLS).to_csv(folder / name, index=False)


A1_YEAR1 = child_xml("A1", (
    "<CINdetails><CINreferralDate>2022-06-01</CINreferralDate><ReferralSource>1A</ReferralSource>"
    "<ReferralNFA>0</ReferralNFA><ChildProtectionPlans><CPPstartDate>2022-07-01</CPPstartDate>"
    "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>"
    "<NumberOfPreviousCPP>0</NumberOfPreviousCPP></ChildProtectionPlans></CINdetails>"))


@pytest.mark.parametrize("dayfirst, ref, start, closure", [
    (True, "01/06/2022", "01/07/2022", "01/05/2023"),    # liiatools writes dd/mm/yyyy
    (False, "06/01/2022", "07/01/2022", "05/01/2023"),   # input.dayfirst: false -> mm/dd/yyyy
])
def test_key_dates_are_parsed_before_keying(tmp_path, dayfirst, ref, start, closure):
    # The same referral and plan: XML (xs:date, ISO) in the 2023 return, flat CSV (slash
    # dates; LA column already the LEA code 201) for 2024. Keyed on the parsed date, they are
    # one referral (2 in = 1 kept + 1 merged) and one plan, keyed and dated in ISO.
    write_return(tmp_path, "201_2023.xml", 2023, [A1_YEAR1])
    write_flat(tmp_path, "flat_2024.csv", [flat_row(
        LA="201", Year="2024", LAchildID="A1", Type="CPPendDate", CINreferralDate=ref, CINclosureDate=closure,
        CPPstartDate=start, CPPendDate=closure, InitialCategoryOfAbuse="NEG", NumberOfPreviousCPP="0")])
    got = cin_census.read(tmp_path, dayfirst=dayfirst)
    r, p = got.tables["referrals"], got.tables["plans"]
    assert r[["referral_id", "referral_date", "closure_date", "outcome", "abuse_category"]].values.tolist() == \
        [["201/A1/2022-06-01", "2022-06-01", "2023-05-01", "CPP", "NEGLECT"]]
    assert p[["plan_id", "start_date", "end_date"]].values.tolist() == [["201/A1/2022-07-01", "2022-07-01",
                                                                         "2023-05-01"]]
    rec = got.metrics["records"]
    assert [rec["referrals"][m] for m in ("records_in", "kept", "rejected", "merged", "conflicts")] == [2, 1, 0, 1, 0]
    assert [rec["plans"][m] for m in ("records_in", "kept", "rejected", "merged", "conflicts")] == [2, 1, 0, 1, 0]
    assert got.tables["children"]["child_id"].tolist() == ["201/A1"]


def test_unreadable_key_date_rejects_the_record(tmp_path):
    # XML: month 13 (not an xs:date) and 30 February; flat CSV: day 31 of month 31.
    bad_ref = ("<CINdetails><CINreferralDate>2022-13-45</CINreferralDate><ReferralSource>1A</ReferralSource>"
               "<ReferralNFA>0</ReferralNFA></CINdetails>")
    bad_plan = ("<CINdetails><CINreferralDate>2022-06-01</CINreferralDate><ReferralSource>1A</ReferralSource>"
                "<ReferralNFA>0</ReferralNFA><ChildProtectionPlans><CPPstartDate>2022-02-30</CPPstartDate>"
                "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG"
                "</LatestCategoryOfAbuse><NumberOfPreviousCPP>0</NumberOfPreviousCPP></ChildProtectionPlans>"
                "</CINdetails>")
    write_return(tmp_path, "201_2023.xml", 2023, [child_xml("A1", bad_ref), child_xml("A2", bad_plan)])
    write_flat(tmp_path, "flat_2024.csv", [
        flat_row(LA="201", Year="2024", LAchildID="A3", CINreferralDate="31/31/2022"),
        flat_row(LA="201", Year="2024", LAchildID="A4", CINreferralDate="01/06/2022", CPPstartDate="soon")])
    got = cin_census.read(tmp_path)
    rej = got.rejects.set_index("source_row")[["table", "field", "value", "reason"]]
    assert rej.loc["201_2023.xml:/Message/Children/Child[1]/CINdetails[1]"].tolist() == \
        ["referrals", "CINreferralDate", "2022-13-45", "unparseable_date"]
    assert rej.loc["201_2023.xml:/Message/Children/Child[2]/CINdetails[1]/ChildProtectionPlans[1]"].tolist() == \
        ["plans", "CPPstartDate", "2022-02-30", "unparseable_date"]
    assert rej.loc["flat_2024.csv: row 1"].tolist() == ["referrals", "CINreferralDate", "31/31/2022", "unparseable_date"]
    assert rej.loc["flat_2024.csv: row 2"].tolist() == ["plans", "CPPstartDate", "soon", "unparseable_date"]
    assert got.tables["referrals"]["referral_id"].tolist() == ["201/A2/2022-06-01", "201/A4/2022-06-01"]
    assert got.tables["plans"].empty
    # referrals: 2 (XML) + 2 (CSV) in = 2 kept + 2 rejected; plans: 1 + 1 in = 0 kept + 2 rejected.
    rec = got.metrics["records"]
    assert [rec["referrals"][m] for m in ("records_in", "kept", "rejected", "merged")] == [4, 2, 2, 0]
    assert [rec["plans"][m] for m in ("records_in", "kept", "rejected", "merged")] == [2, 0, 2, 0]


def test_xml_and_flat_csv_with_la_names_do_not_mix(tmp_path):
    # XML keys children by the 3-digit LEA (201/A1); liiatools writes the LA's name (Barnet/A1).
    write_return(tmp_path, "201_2023.xml", 2023, [A1_YEAR1])
    write_flat(tmp_path, "flat_2024.csv", [flat_row(LA="Barnet", Year="2024", LAchildID="A1",
                                                    CINreferralDate="01/06/2022")])
    with pytest.raises(InputError) as err:
        cin_census.read(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "201_2023.xml" in msg and "flat_2024.csv" in msg and "LA keys differ" in msg and "'Barnet'" in msg
    # With the LEA code in the CSV's LA column the two mix (one child).
    write_flat(tmp_path, "flat_2024.csv", [flat_row(LA="201", Year="2024", LAchildID="A1",
                                                    CINreferralDate="01/06/2022")])
    assert cin_census.read(tmp_path).tables["children"]["child_id"].tolist() == ["201/A1"]
    # Flat CSVs alone keep their LA names.
    (tmp_path / "201_2023.xml").unlink()
    write_flat(tmp_path, "flat_2024.csv", [flat_row(LA="Barnet", Year="2024", LAchildID="A1",
                                                    CINreferralDate="01/06/2022")])
    assert cin_census.read(tmp_path).tables["children"]["child_id"].tolist() == ["Barnet/A1"]


def factor_cin(day: int, factors: list[str], nprev: int | None = None, need="N1", reason=None) -> str:
    facs = "".join(f"<AssessmentFactors>{c}</AssessmentFactors>" for c in factors)
    plan = ("" if nprev is None else
            f"<ChildProtectionPlans><CPPstartDate>2022-07-{day:02d}</CPPstartDate>"
            "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG</LatestCategoryOfAbuse>"
            f"<NumberOfPreviousCPP>{nprev}</NumberOfPreviousCPP></ChildProtectionPlans>")
    closure = f"<CINclosureDate>2022-09-{day:02d}</CINclosureDate><ReasonForClosure>{reason}</ReasonForClosure>" \
        if reason else ""
    return (f"<CINdetails><CINreferralDate>2022-06-{day:02d}</CINreferralDate><ReferralSource>1A</ReferralSource>"
            f"<PrimaryNeedCode>{need}</PrimaryNeedCode>{closure}"
            f"<Assessments><AssessmentActualStartDate>2022-06-{day:02d}</AssessmentActualStartDate>"
            f"<FactorsIdentifiedAtAssessment>{facs}</FactorsIdentifiedAtAssessment></Assessments>"
            f"<ReferralNFA>0</ReferralNFA>{plan}</CINdetails>")


def disclosure_return(folder: Path) -> None:
    """Five children. Factors: 2B x4, 22A x1 (FGM), 12A x2 (trafficking). Plans:
    NumberOfPreviousCPP 0 x3, 1 x1, 2 x0, 3+ x0, missing 0. PrimaryNeedCode N1 x3, N99 x1, N0X x1
    (N99 and N0X not in the map); ReasonForClosure RC8 x1, RC10 x2 (RC10 not in the map)."""
    write_return(folder, "201_2023.xml", 2023, [
        child_xml("C1", factor_cin(1, ["2B", "22A"], nprev=0, reason="RC8")),
        child_xml("C2", factor_cin(2, ["2B", "12A"], nprev=0, need="N99", reason="RC10")),
        child_xml("C3", factor_cin(3, ["2B", "12A"], nprev=0, need="N0X", reason="RC10")),
        child_xml("C4", factor_cin(4, ["2B"], nprev=1)),
        child_xml("C5", factor_cin(5, ["21"])),
    ])


def test_min_count_withholds_small_counts_of_sensitive_codes(tmp_path):
    disclosure_return(tmp_path)
    full = cin_census.read(tmp_path).metrics
    assert full["assessment_factor_codes"] == {"12A": 2, "21": 1, "22A": 1, "2B": 4}
    assert full["number_of_previous_cpp"]["by_value"] == {"0": 3, "1": 1, "2": 0, "3_or_more": 0}
    assert full["number_of_previous_cpp"]["missing"] == 0
    assert "withheld" not in full

    got = cin_census.read(tmp_path, min_count=3).metrics
    # Below 3 -> None: 12A (2), 21 (1), 22A (1); 2B (4) stays.
    assert got["assessment_factor_codes"] == {"12A": None, "21": None, "22A": None, "2B": 4}
    # 1 (1), 2 (0), 3_or_more (0) and missing (0) are below 3; 0 (3) stays.
    assert got["number_of_previous_cpp"]["by_value"] == {"0": 3, "1": None, "2": None, "3_or_more": None}
    assert got["number_of_previous_cpp"]["missing"] is None
    assert got["withheld"] == "counts below 3 withheld"
    # Reconciliation tallies are exempt: the per-file and total record counts stay.
    assert got["records"]["plans"]["kept"] == 4 and got["files"]["201_2023.xml"]["plans"]["records_in"] == 4


def test_one_withheld_cell_is_not_recoverable_from_the_total(tmp_path):
    # The NumberOfPreviousCPP cells (0, 1, 2, 3_or_more, missing) add up to the plans kept,
    # which the metrics publish: one withheld cell alone could be recovered by subtraction.
    # 0 x2, 1 x2, 2 x2, 3_or_more x2 (3 and 4), missing x1 = 9 plans; min_count 2 withholds
    # only "missing" (1), so the smallest other cell is withheld too (a tie: the first, "0").
    no_prev = ("<CINdetails><CINreferralDate>2022-06-09</CINreferralDate><ReferralSource>1A</ReferralSource>"
               "<ReferralNFA>0</ReferralNFA><ChildProtectionPlans><CPPstartDate>2022-07-09</CPPstartDate>"
               "<InitialCategoryOfAbuse>NEG</InitialCategoryOfAbuse><LatestCategoryOfAbuse>NEG"
               "</LatestCategoryOfAbuse></ChildProtectionPlans></CINdetails>")
    write_return(tmp_path, "201_2023.xml", 2023, [
        child_xml(f"D{i}", factor_cin(i, ["2B"], nprev=n)) for i, n in enumerate([0, 0, 1, 1, 2, 2, 3, 4], 1)]
        + [child_xml("D9", no_prev)])
    full = cin_census.read(tmp_path).metrics["number_of_previous_cpp"]
    assert full["plans"] == 9 and full["missing"] == 1
    assert full["by_value"] == {"0": 2, "1": 2, "2": 2, "3_or_more": 2}
    nprev = cin_census.read(tmp_path, min_count=2).metrics["number_of_previous_cpp"]
    assert nprev["plans"] == 9 and nprev["missing"] is None
    assert nprev["by_value"] == {"0": None, "1": 2, "2": 2, "3_or_more": 2}
    # min_count 1: nothing below it, nothing withheld.
    nprev = cin_census.read(tmp_path, min_count=1).metrics["number_of_previous_cpp"]
    assert nprev["missing"] == 1 and nprev["by_value"] == full["by_value"]


def test_recorded_only_codes_not_in_the_map_are_counted(tmp_path):
    disclosure_return(tmp_path)
    got = cin_census.read(tmp_path)
    # Counted, not rejected: all 5 referrals kept.
    assert len(got.tables["referrals"]) == 5 and got.rejects.empty
    assert got.metrics["codes_not_in_map"] == {"PrimaryNeedCode": {"N0X": 1, "N99": 1},
                                               "ReasonForClosure": {"RC10": 2}}
    assert cin_census.read(tmp_path, min_count=2).metrics["codes_not_in_map"] == {
        "PrimaryNeedCode": {"N0X": None, "N99": None}, "ReasonForClosure": {"RC10": 2}}
    # The flat CSV's columns of the same names are read too.
    folder = tmp_path / "flat"
    folder.mkdir()
    write_flat(folder, "x.csv", [flat_row(LA="Barnet", Year="2023", LAchildID="F1", CINreferralDate="01/06/2022",
                                          PrimaryNeedCode="N77", CINclosureDate="01/08/2022",
                                          ReasonForClosure="RC1")])
    assert cin_census.read(folder).metrics["codes_not_in_map"] == {"PrimaryNeedCode": {"N77": 1},
                                                                   "ReasonForClosure": {}}


def test_statements_state_the_rules_without_identifiers(tmp_path):
    # 12 children whose ethnicity differs between two returns: 12 children conflicts (>= 10,
    # so the number is given); the one referral source conflict is "fewer than 10".
    body = ("<CINdetails><CINreferralDate>2022-06-01</CINreferralDate><ReferralSource>{s}</ReferralSource>"
            "<ReferralNFA>0</ReferralNFA></CINdetails>")
    eth = "<Ethnicity>{e}</Ethnicity>"
    write_return(tmp_path, "201_2023.xml", 2023, [child_xml(f"Q{i}", body.format(s="1A"), chars=eth.format(e="WBRI"))
                                                  for i in range(12)])
    write_return(tmp_path, "201_2024.xml", 2024, [
        child_xml(f"Q{i}", body.format(s="6" if i == 0 else "1A"), chars=eth.format(e="BAFR")) for i in range(12)])
    got = cin_census.read(tmp_path)
    assert got.metrics["records"]["children"]["conflicts"] == 12
    assert got.metrics["records"]["referrals"]["conflicts"] == 1
    statements = got.metrics["statements"]
    assert isinstance(statements, list) and len(statements) >= 5
    assert all(isinstance(s, str) and 0 < len(s) < 200 for s in statements)
    text = " ".join(statements)
    assert not re.search(r"\bQ\d+\b|201/", text)                  # no identifiers
    assert "LAchildID" in text and "family" in text                # keys, no family id
    assert "latest return" in text
    assert "children 12" in text and "referrals fewer than 10" in text and "plans fewer than 10" in text
    assert "ReferralNFA" in text                                   # the outcome rule
    assert "financial problems" in text                            # factors not recorded
    assert "end reason" in text and "entering care" in text
