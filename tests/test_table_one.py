"""Table 1 (pipeline/table_one.py): counts, shares, medians and quartiles worked out by hand
on hand-made rows; primary and secondary suppression worked out by hand; no identifier; and
the logistic stage writes it for its own split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import logistic, table_one

# Twelve hand-made rows: rows 0-7 develop, 8-11 validate; y the outcome at the horizon.
ROWS = pd.DataFrame({
    "sex": ["F", "F", "M", "M", "F", "M", "F", "M", "F", "M", "F", "M"],
    "x": [1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0],
    "age_years": [float(a) for a in range(1, 13)],
    "y": [1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1],
})
DEV = np.arange(12) < 8
GROUPS = {"all": np.ones(12, bool), "development": DEV, "validation": ~DEV,
          "outcome": ROWS["y"].to_numpy() == 1, "no_outcome": ROWS["y"].to_numpy() == 0}
PARTITIONS = [("all", "development", "validation"), ("all", "outcome", "no_outcome")]


def cell(t: pd.DataFrame, group: str, variable: str, level: str) -> pd.Series:
    rows = t[(t["group"] == group) & (t["variable"] == variable) & (t["level"] == level)]
    assert len(rows) == 1, (group, variable, level)
    return rows.iloc[0]


def test_counts_shares_medians_and_quartiles_by_hand():
    t = table_one.table_one(ROWS, GROUPS, ["age_years", "sex", "x"], min_count=2, partitions=PARTITIONS)
    # Group sizes: all 12; development rows 0-7: 8; validation 8-11: 4;
    # outcome y = 1 at rows 0, 2, 6, 8, 11: 5; without: 7.
    assert {g: cell(t, g, "rows", "all")["n"] for g in GROUPS} == {
        "all": 12, "development": 8, "validation": 4, "outcome": 5, "no_outcome": 7}
    # sex F: all rows 0, 1, 4, 6, 8, 10 = 6 (50.0%); development 0, 1, 4, 6 = 4 of 8 (50.0%);
    # outcome 0, 6, 8 = 3 of 5 (60.0%); no outcome 1, 4, 10 = 3 of 7 (42.857 -> 42.9%).
    assert (cell(t, "all", "sex", "F")["n"], cell(t, "all", "sex", "F")["percent"]) == (6, 50.0)
    assert (cell(t, "development", "sex", "F")["n"], cell(t, "development", "sex", "F")["percent"]) == (4, 50.0)
    assert (cell(t, "outcome", "sex", "F")["n"], cell(t, "outcome", "sex", "F")["percent"]) == (3, 60.0)
    assert (cell(t, "no_outcome", "sex", "M")["n"], cell(t, "no_outcome", "sex", "M")["percent"]) == (4, 57.1)
    # x = 1 (a 0/1 factor): outcome rows 0, 2, 8 -> 3 (60.0%), so x = 0: 2 (40.0%);
    # validation rows 8, 10 -> 2 of 4 (50.0%).
    assert (cell(t, "outcome", "x", "1")["n"], cell(t, "outcome", "x", "1")["percent"]) == (3, 60.0)
    assert (cell(t, "outcome", "x", "0")["n"], cell(t, "outcome", "x", "0")["percent"]) == (2, 40.0)
    assert cell(t, "validation", "x", "1")["n"] == 2
    # age, R's quantile(type = 7): position 1 + p (n - 1).
    # all 1..12: median 6.5; Q1 at 1 + 0.25 * 11 = 3.75 -> 3.75; Q3 at 9.25 -> 9.25.
    # development 1..8: 4.5, 2.75, 6.25. outcome ages 1, 3, 7, 9, 12: median 7, Q1 (position 2) 3, Q3 9.
    # no outcome ages 2, 4, 5, 6, 8, 10, 11: median 6, Q1 at 2.5 -> 4.5, Q3 at 5.5 -> 9.
    expected = {"all": (6.5, 3.75, 9.25), "development": (4.5, 2.75, 6.25), "validation": (10.5, 9.75, 11.25),
                "outcome": (7, 3, 9), "no_outcome": (6, 4.5, 9)}
    for group, (median, q1, q3) in expected.items():
        r = cell(t, group, "age_years", "recorded")
        assert (r["statistic"], r["median"], r["lower_quartile"], r["upper_quartile"]) == ("median_iqr", median, q1, q3)
    assert list(t.columns) == table_one.COLUMNS


def test_one_small_level_withholds_the_next_smallest():
    rows = pd.DataFrame({"g": ["a"] * 10 + ["b"] * 5 + ["c"]})
    t = table_one.table_one(rows, {"all": np.ones(16, bool)}, ["g"], min_count=3)
    # c = 1 < 3: withheld; it would be 16 - 10 - 5, so b (the next smallest) is withheld too.
    assert cell(t, "all", "g", "a")["n"] == 10 and cell(t, "all", "g", "a")["percent"] == 62.5   # 10 / 16
    assert cell(t, "all", "g", "b")[["n", "percent"]].isna().all()
    assert cell(t, "all", "g", "c")[["n", "percent"]].isna().all()


def test_a_factor_almost_everyone_has_is_withheld():
    """11 of 12 with the factor: publishing 11 gives away the 1 without it (12 - 11)."""
    rows = pd.DataFrame({"x": [1] * 11 + [0]})
    t = table_one.table_one(rows, {"all": np.ones(12, bool)}, ["x"], min_count=3)
    assert np.isnan(cell(t, "all", "x", "1")["n"]) and np.isnan(cell(t, "all", "x", "0")["n"])
    assert cell(t, "all", "rows", "all")["n"] == 12


def test_suppression_across_the_split_and_the_outcome_by_hand():
    t = table_one.table_one(ROWS, GROUPS, ["sex", "x"], min_count=3, partitions=PARTITIONS)
    # Primary: validation F = 2 and M = 2 (< 3). Development F = 4 would be all F (6) minus the
    # withheld validation F, so it is withheld too; likewise development M, x = 1 and x = 0.
    for group in ("development", "validation"):
        assert t[(t["group"] == group) & t["variable"].isin(["sex", "x"])]["n"].isna().all(), group
    # Outcome: M = 2 < 3 withheld; F = 3 is the group's 5 minus M: withheld (across levels).
    # No outcome: F = 3 and M = 4 are all rows' F and M minus the outcome's: withheld (across groups).
    # x: outcome x = 0 is 2 < 3, so outcome x = 1 (3) goes, then no outcome x = 1 (3).
    for group in ("outcome", "no_outcome"):
        assert t[(t["group"] == group) & t["variable"].isin(["sex", "x"])]["n"].isna().all(), group
    # All rows' counts stay: each is at least 3 and no withheld cell follows from them alone.
    assert [cell(t, "all", "sex", s)["n"] for s in ("F", "M")] == [6, 6] and cell(t, "all", "x", "1")["n"] == 6
    assert t[t["variable"] == "rows"]["n"].tolist() == [12, 8, 4, 5, 7]


def test_a_level_absent_from_a_group_is_a_withheld_zero_and_the_chain_follows():
    rows = pd.DataFrame({"g": ["a", "a", "a", "u", "u", "a", "a", "a"]})
    dev = np.arange(8) < 5
    groups = {"all": np.ones(8, bool), "development": dev, "validation": ~dev}
    t = table_one.table_one(rows, groups, ["g"], min_count=2, partitions=[("all", "development", "validation")])
    # validation u = 0 (< 2): withheld. development u = 2 = all u (2) - 0: withheld. development's
    # one withheld level then takes a (3) with it; validation a (3) = all a (6) - 3 goes too.
    assert cell(t, "validation", "g", "u")["n"] != 0
    assert t[t["group"].isin(["development", "validation"]) & (t["variable"] == "g")]["n"].isna().all()
    assert [cell(t, "all", "g", level)["n"] for level in ("a", "u")] == [6, 2]


def test_missing_values_are_a_level_of_their_own():
    rows = pd.DataFrame({"sex": ["F"] * 6 + ["M"] * 5 + [None], "age_years": [5.0] * 11 + [np.nan]})
    t = table_one.table_one(rows, {"all": np.ones(12, bool)}, ["sex", "age_years"], min_count=3)
    # 1 missing sex (< 3) withheld; it would be 12 - 6 - 5, so M (the next smallest) goes too.
    assert np.isnan(cell(t, "all", "sex", "missing")["n"]) and np.isnan(cell(t, "all", "sex", "M")["n"])
    assert cell(t, "all", "sex", "F")["n"] == 6
    # age: 11 recorded, 1 missing: the recorded count goes with the missing one; the median stays.
    assert np.isnan(cell(t, "all", "age_years", "recorded")["n"]) and cell(t, "all", "age_years", "recorded")["median"] == 5


def test_medians_of_fewer_rows_than_the_threshold_are_withheld():
    t = table_one.table_one(ROWS, {"validation": ~DEV}, ["age_years"], min_count=5)
    assert cell(t, "validation", "age_years", "recorded")[["median", "lower_quartile", "upper_quartile"]].isna().all()


def test_levels_in_reading_order():
    levels = ["16_17", "10_15", "under_1", "5_9", "1_4", "missing"]
    assert sorted(levels, key=table_one.level_key) == ["under_1", "1_4", "5_9", "10_15", "16_17", "missing"]
    assert sorted(["3+", "2", "0", "1"], key=table_one.level_key) == ["0", "1", "2", "3+"]


def test_never_an_identifier():
    with pytest.raises(ValueError, match="identifier"):
        table_one.table_one(ROWS.assign(family_id="f"), {"all": np.ones(12, bool)}, ["family_id"], 2)
    columns = ["family_id", "child_id", "subject_id", "case_id", "sex", "age_years"]
    assert table_one.variables_to_describe(columns, {"covariates": ["case_id"], "groups": ["sex"]}) == [
        "age_years", "sex"]


def synthetic_table(n: int = 600, seed: int = 3) -> pd.DataFrame:
    """An analysis table for the logistic stage: families of two, index dates over four years."""
    rng = np.random.default_rng(seed)
    family = np.repeat(np.arange(n // 2), 2)
    index = pd.Timestamp("2019-01-01") + pd.to_timedelta(rng.integers(0, 4 * 365, n), unit="D")
    x = rng.integers(0, 2, n)
    time = rng.exponential(600 / (1 + x), n).round() + 1
    event = (time < 1500).astype("int8")
    return pd.DataFrame({
        "family_id": [f"fam{f:04d}" for f in family], "child_id": [f"child{i:04d}" for i in range(n)],
        "index_date": index, "origin_date": index, "time_days": np.minimum(time, 1500).astype(int), "event": event,
        "event_type": np.where(event == 1, "re_referral", "extract_date"), "x": x,
        "sex": rng.choice(["F", "M"], n), "age_years": rng.uniform(0, 17, n).round(1)})


def test_the_logistic_stage_describes_its_own_split():
    s = {"horizon_days": 365, "censoring": "exclude", "split": "temporal", "cutoff": "2021-06-01",
         "covariates": ["x"], "categorical": ["sex"], "groups": ["sex"]}
    tables, metrics, _ = logistic.run(synthetic_table(), s, None, 0, min_count=10)
    t = tables["table1"]
    size = t[t["variable"] == "rows"].set_index("group")["n"]
    assert size["development"] == metrics["development"]["n"] and size["validation"] == metrics["validation"]["n"]
    assert size["all"] == size["development"] + size["validation"] == size["outcome"] + size["no_outcome"]
    assert size["outcome"] == metrics["development"]["events"] + metrics["validation"]["events"]
    assert set(t["variable"]) == {"rows", "age_years", "sex", "x"}
    text = t.to_csv()
    assert "fam0" not in text and "child0" not in text
    assert ((t["n"].isna()) | (t["n"] >= 10)).all()


def test_out_of_fold_validation_has_no_split_columns():
    s = {"horizon_days": 365, "censoring": "exclude", "split": "grouped_kfold", "folds": 3,
         "covariates": ["x"], "categorical": [], "groups": ["sex"]}
    tables, _, _ = logistic.run(synthetic_table(), s, None, 0, min_count=10)
    assert list(dict.fromkeys(tables["table1"]["group"])) == ["all", "outcome", "no_outcome"]


def test_no_rows_gives_a_headed_table_without_rows():
    s = {"horizon_days": 365, "censoring": "exclude", "split": "temporal", "cutoff": "2021-06-01",
         "covariates": ["x"], "categorical": [], "groups": []}
    tables, metrics, _ = logistic.run(synthetic_table().assign(time_days=10, event=0), s, None, 0, min_count=10)
    assert "status" in metrics and tables["table1"].empty and list(tables["table1"].columns) == table_one.COLUMNS
