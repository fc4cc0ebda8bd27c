"""Routes in: a prepared survival table through every model, and case-level input without a
family id or with factors the source does not record."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from pipeline import clean, derive, design, settings, survival
from pipeline.cli import InputError
from pipeline.errors import headline
from pipeline.schema import CHILDREN, FACTORS, REFERRALS
from pipeline.split import random_cluster_split, validation_split
from tests.conftest import with_changes

ROSSI_SPEC = {"file": "rossi.csv", "id": "id", "cluster": None, "duration": "week", "duration_unit": "weeks",
              "event": "arrest", "index_date": None,
              "covariates": ["fin", "age", "race", "wexp", "mar", "paro", "prio"],
              "km_groups": ["fin", "race"], "strata": None, "reference_profiles": {"financial_aid": {"fin": 1}},
              "outcome_label": "re-arrest", "subject_label": "people"}


def rossi_rereport(spec=ROSSI_SPEC) -> pd.DataFrame:
    raw = load_rossi().astype(str)
    raw.insert(0, "id", [f"p{i}" for i in range(len(raw))])
    kept, rejects, _ = clean.clean_analysis_table(raw, spec, "rossi.csv", key=b"k")
    assert rejects.empty
    return derive.analysis_table_to_rereport(kept, spec)[0]


def test_rossi_cox_equals_r_coxph(params):
    """Rossi through the prepared-table route: weeks in, days used, the Cox fit equals R's.

    R 4.2.2, survival 3.4-0:
      d <- read.csv("rossi.csv")   # lifelines.datasets.load_rossi(), 432 rows
      f <- coxph(Surv(week * 7, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = d,
                 ties = "efron", robust = TRUE)
      coef(f); sqrt(diag(vcov(f))); f$loglik; f$concordance["concordance"]
    """
    df = rossi_rereport()
    assert df["time_days"].max() == 52 * 7
    p = with_changes(params, input={"source": "analysis_table", "analysis_table": ROSSI_SPEC})
    s = survival.survival_settings(p, df)
    assert s["covariates"] == ROSSI_SPEC["covariates"] and s["strata"] is None and s["km_groups"] == ["fin", "race"]
    tables, metrics, model = survival.run(df, {**s, "parametric": []}, 10, None)
    hr = tables["hazard_ratios"].set_index("covariate")
    r_coef = {"fin": -0.3794221664859, "age": -0.0574377426841, "race": 0.3138997878425, "wexp": -0.1497956976665,
              "mar": -0.4337038779373, "paro": -0.0848710825004, "prio": 0.0914970809853}
    r_robust_se = {"fin": 0.1955417789820, "age": 0.0253361462640, "race": 0.2923285553468,
                   "wexp": 0.2180603152837, "mar": 0.3802444657500, "paro": 0.1992008295988,
                   "prio": 0.0289745946316}
    for name in r_coef:
        assert hr.loc[name, "coef"] == pytest.approx(r_coef[name], abs=1e-8)
        assert hr.loc[name, "robust_se"] == pytest.approx(r_robust_se[name], abs=1e-8)
    assert model.loglik_ == pytest.approx(-658.747659446, abs=1e-7)
    assert model.loglik_null_ == pytest.approx(-675.380632347, abs=1e-7)
    assert metrics["cox"]["concordance"] == pytest.approx(0.6403292471, abs=1e-4)
    groups = set(tables["km_by_group"]["variable"])
    assert groups == {"fin", "race"}


@pytest.mark.parametrize("unit, days", [("days", 1.0), ("weeks", 7.0), ("months", 30.4375), ("years", 365.25)])
def test_duration_units_convert_to_days(unit, days):
    df = rossi_rereport({**ROSSI_SPEC, "duration_unit": unit})
    assert df["time_days"].iloc[0] == pytest.approx(20 * days)   # Rossi's first row: week 20


def test_bad_duration_unit_and_unknown_group_are_one_line_errors(params):
    raw = load_rossi().astype(str).assign(id=[str(i) for i in range(432)])
    with pytest.raises(InputError, match="duration_unit 'fortnights'"):
        clean.clean_analysis_table(raw, {**ROSSI_SPEC, "duration_unit": "fortnights"}, "r.csv", key=b"k")
    with pytest.raises(InputError, match="missing column 'county'"):
        clean.clean_analysis_table(raw, {**ROSSI_SPEC, "km_groups": ["county"]}, "r.csv", key=b"k")
    p = with_changes(params, survival={**params["survival"], "covariates": ["prior_referals"]})
    with pytest.raises(InputError, match="survival.covariates names 'prior_referals'"):
        settings.survival_settings(p, pd.DataFrame({"prior_referrals": [1]}))


def test_index_date_column_is_parsed_and_quarantined_when_unreadable():
    raw = load_rossi().astype(str).assign(id=[str(i) for i in range(432)],
                                         start=["2020-01-%02d" % (1 + i % 28) for i in range(432)])
    raw.loc[5, "start"] = "not a date"
    kept, rejects, metrics = clean.clean_analysis_table(raw, {**ROSSI_SPEC, "index_date": "start"}, "r.csv", key=b"k")
    assert rejects[["source_row", "field", "reason"]].values.tolist() == [[6, "start", "unparseable_date"]]
    assert metrics["tables"]["analysis_table"]["rows_in"] == 432 == len(kept) + len(rejects)
    df = derive.analysis_table_to_rereport(kept, {**ROSSI_SPEC, "index_date": "start"})[0]
    assert df["index_date"].dtype.kind == "M" and df["index_date"].min() == pd.Timestamp("2020-01-01")


def test_without_index_dates_the_split_is_random_clusters_and_says_so():
    df = pd.DataFrame({"family_id": np.repeat(np.arange(100), 2).astype(str), "y": 0})
    dev, val, counts = validation_split(df, {"split": "temporal", "cutoff": "2022-10-01", "validation_share": 0.3}, 5)
    assert counts["method"] == "random_clusters" and "no index dates" in counts["note"]
    assert counts["validation_families"] == 30 and not set(dev["family_id"]) & set(val["family_id"])
    # Depends on the seed and the clusters' order, not on their (pseudonymised) ids.
    rekeyed = {f: hashlib.blake2b(f.encode(), key=b"another key", digest_size=8).hexdigest()
               for f in df["family_id"].unique()}
    again = random_cluster_split(df.assign(family_id=df["family_id"].map(rekeyed)), 0.3, 5)[1]
    assert set(again["family_id"]) == {rekeyed[f] for f in val["family_id"]}
    assert set(random_cluster_split(df, 0.3, 6)[1]["family_id"]) != set(val["family_id"])


def test_labels_change_the_headline_words(params):
    row = {"events_per_1000": 264, "flagged_per_1000": 199, "tp_per_1000": 88, "fp_per_1000": 111,
           "fn_per_1000": 176, "tn_per_1000": 625}
    p = with_changes(params, input={"source": "analysis_table", "analysis_table": ROSSI_SPEC})
    text = headline(row, 364, "the 20% of people with the highest predicted risk", settings.labels(p))
    assert text == ("Of 1,000 people, 264 have a re-arrest within 364 days. Flagging the 20% of people with the "
                    "highest predicted risk flags 199: 88 of them have a re-arrest and 111 do not; 176 people with "
                    "a re-arrest are not flagged.")
    default = headline(row, 365, "the top", settings.labels(params))
    assert default.startswith("Of 1,000 referrals, 264 are re-referred within a year.")
    assert default.endswith("176 re-referred children are not flagged.")


# -- case-level input without a family id, and factors a source does not record -------------
CHILD_ROWS = [["C1", "LA01", "M", "2015-01-01", "WHITE", "0"], ["C2", "LA01", "F", "2016-01-01", "ASIAN", "1"]]
NOT_RECORDED = ["financial_problems", "low_social_support", "parent_maltreated_as_child"]


def _extract_without_family_and_three_factors():
    children = pd.DataFrame(CHILD_ROWS, columns=[f.name for f in CHILDREN.fields
                                                 if f.name not in ("family_id", "looked_after_date")])
    recorded = [f for f in FACTORS if f not in NOT_RECORDED]
    columns = [c for c in REFERRALS.columns if c not in NOT_RECORDED]
    referrals = pd.DataFrame([["R1", "C1", "2020-01-01", "POLICE", "2020-02-01", "NFA", *["1"] * len(recorded), ""],
                              ["R2", "C1", "2020-06-01", "SCHOOL", "2020-07-01", "CIN", *["0"] * len(recorded), ""],
                              ["R3", "C2", "2020-03-01", "HEALTH", "", "CIN", *["0"] * len(recorded), ""]],
                             columns=columns)
    plans = pd.DataFrame(columns=["plan_id", "child_id", "start_date", "end_date", "category", "end_reason"])
    return {"children": children, "referrals": referrals, "plans": plans}


def test_no_family_id_makes_each_child_its_own_cluster_and_unrecorded_factors_stay_absent(params):
    paths = {t: f"{t}.csv" for t in ("children", "referrals", "plans")}
    kept, rejects, metrics = clean.clean_extract(_extract_without_family_and_three_factors(), paths,
                                                 extract_date=pd.Timestamp("2021-01-01"))
    assert rejects.empty
    assert (kept["children"]["family_id"] == kept["children"]["child_id"]).all()
    assert metrics["cluster"].startswith("child")
    assert metrics["not_recorded"] == NOT_RECORDED
    assert metrics["tables"]["children"]["absent_columns"] == {"child_id": ["family_id"], "empty": ["looked_after_date"]}
    assert not set(NOT_RECORDED) & set(kept["referrals"].columns)
    rereport, _ = derive.derive_rereport(kept["children"], kept["referrals"], kept["plans"],
                                           extract_date=pd.Timestamp("2021-01-01"))
    assert not set(NOT_RECORDED) & set(rereport.columns)          # absent, never invented as 0
    assert rereport["substance_misuse"].tolist() == [1, 0]         # R1 then R2 (R3 is open)
    assert (rereport["family_id"] == rereport["child_id"]).all()
    s = settings.survival_settings(params, rereport)
    assert s["not_recorded"] == NOT_RECORDED and not set(NOT_RECORDED) & set(s["covariates"])
    assert s["reference_profiles_dropped"] == ["financial_problems_low_support_no_service"]
    assert settings.logistic_settings(params, rereport)["not_recorded"] == NOT_RECORDED


def test_rejects_name_the_adapter_source_location():
    tables = _extract_without_family_and_three_factors()
    tables["referrals"]["source_location"] = [f"201_2023.xml:/Message/Children/Child[1]/CINdetails[{i}]"
                                              for i in (1, 2, 3)]
    tables["referrals"].loc[1, "referral_source"] = "99Z"
    paths = {t: f"{t}.csv" for t in tables}
    _, rejects, metrics = clean.clean_extract(tables, paths, extract_date=pd.Timestamp("2021-01-01"))
    assert rejects[["source_row", "field", "value", "reason"]].values.tolist() == [
        ["201_2023.xml:/Message/Children/Child[1]/CINdetails[2]", "referral_source", "99Z", "unknown_code"]]
    assert "source_location" not in metrics["tables"]["referrals"]["ignored_columns"]


def test_reference_profiles_take_categorical_levels():
    X = pd.DataFrame({"age": [1.0], "sex[M]": [0.0], "sex[U]": [0.0]})
    assert design.profile_row(X.columns, "p", {"age": 30, "sex": "M"}) == {"age": 30.0, "sex[M]": 1.0, "sex[U]": 0.0}
    assert design.profile_row(X.columns, "p", {"sex": "F"}) == {"age": 0.0, "sex[M]": 0.0, "sex[U]": 0.0}  # reference
    with pytest.raises(InputError, match="reference profile 'p' names 'county'"):
        design.profile_row(X.columns, "p", {"county": 1})
