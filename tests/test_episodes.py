"""Episode derivation on small hand-built extracts: every number below is worked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.derive import (derive_cpp_durations, derive_rereport, eighteenth_birthday_days,
                               episode_starts, to_days)
from pipeline.schema import FACTORS

EXTRACT = pd.Timestamp("2022-12-31")
D = pd.Timestamp


def _children() -> pd.DataFrame:
    return pd.DataFrame({
        "child_id": ["A", "B", "C", "D", "E"],
        "family_id": ["f1", "f1", "f2", "f3", "f4"],
        "la_code": ["LA01", "LA01", "LA02", "LA02", "LA03"],
        "sex": ["M", "F", "M", "F", "F"],
        "date_of_birth": [D("2015-05-01"), D("2012-01-01"), D("2003-06-15"), D("2010-01-01"), D("2004-02-29")],
        "ethnicity": ["WHITE"] * 5,
        "disability": np.array([0, 1, 0, 0, 0], dtype=np.int8),
        # A enters care on 2021-01-01, after r2's origin (2020-03-01): a competing end.
        "looked_after_date": [D("2021-01-01"), pd.NaT, pd.NaT, pd.NaT, pd.NaT],
    })


def _referrals() -> pd.DataFrame:
    rows = [
        # id, child, referral, closure, outcome
        ("r1", "A", "2020-01-01", "2020-02-01", "ASSESSED"),
        ("r2", "A", "2020-02-10", "2020-03-01", "CIN"),      # 40 days after r1: a new episode
        ("r3", "B", "2020-01-01", "2020-01-03", "NFA"),
        ("r4", "B", "2020-01-10", "2020-01-11", "NFA"),      # 9 days after r3: same episode
        ("r5", "B", "2020-03-01", "2020-04-01", "CPP"),
        ("r6", "C", "2021-01-01", "2021-02-01", "ASSESSED"),  # turns 18 on 2021-06-15
        ("r7", "D", "2022-06-01", None, "CIN"),              # still open at the extract date
        ("r8", "E", "2021-09-01", "2021-10-01", "NFA"),      # 29 Feb birth: 18 on 2022-03-01
    ]
    df = pd.DataFrame(rows, columns=["referral_id", "child_id", "referral_date", "closure_date", "outcome"])
    df["referral_date"] = pd.to_datetime(df["referral_date"])
    df["closure_date"] = pd.to_datetime(df["closure_date"])
    df["referral_source"] = "POLICE"
    for f in FACTORS:
        df[f] = np.int8(0)
    df.loc[df["referral_id"] == "r1", "substance_misuse"] = 1
    df["abuse_category"] = None
    return df


def _plans() -> pd.DataFrame:
    return pd.DataFrame({
        "plan_id": ["p1", "p2", "p3"],
        "child_id": ["B", "B", "A"],
        "start_date": [D("2019-01-01"), D("2020-03-20"), D("2020-02-20")],
        "end_date": [D("2019-04-02"), pd.NaT, D("2020-02-25")],
        "category": ["NEGLECT", "EMOTIONAL", "PHYSICAL"],
        "end_reason": ["NO_LONGER_REQUIRED", None, "NO_LONGER_REQUIRED"],
    })


def _derive(**kw):
    out, counts = derive_rereport(_children(), _referrals(), _plans(), extract_date=EXTRACT, **kw)
    return out.set_index("index_referral_id"), counts


def test_episode_starts_measure_from_the_episode_start_not_the_previous_report():
    child = np.array([0, 0, 0, 1, 1])
    day = np.array([0, 10, 20, 0, 14])
    # 10 is within 14 days of 0; 20 is 20 days after the episode start (though 10 after day 10);
    # for child 1, exactly 14 days is still the same episode.
    assert episode_starts(child, day, 14).tolist() == [True, False, True, True, False]


def test_closure_origin_times_events_and_censoring():
    out, counts = _derive()
    assert sorted(out.index) == ["r1", "r2", "r3", "r5", "r6", "r8"]
    # r1: origin = max(closure 2020-02-01, referral + 14 = 2020-01-15) = 2020-02-01; next episode r2 on 2020-02-10.
    assert (out.loc["r1", "time_days"], out.loc["r1", "event"]) == (9, 1)
    assert out.loc["r1", "origin_date"] == D("2020-02-01")
    # r2: closure 2020-03-01, no later referral; A enters care on 2021-01-01: 306 days, competing end.
    assert (out.loc["r2", "time_days"], out.loc["r2", "event"], out.loc["r2", "censor_reason"]) == (306, 0, "entered_care")
    assert out.loc["r2", "event_type"] == "entered_care" and out.loc["r1", "event_type"] == "re_referral"
    # r5: B's plan p2 is open; no end but the extract date: 2022-12-31 - 2020-04-01 = 1004 days.
    assert (out.loc["r5", "time_days"], out.loc["r5", "censor_reason"]) == (1004, "extract_date")
    # r3 closed on 2020-01-03 but its same-episode window runs to 2020-01-15: r4 (01-10) is not a re-report;
    # r5 on 2020-03-01 is: 2020-03-01 - 2020-01-15 = 46 days.
    assert (out.loc["r3", "time_days"], out.loc["r3", "event"]) == (46, 1)
    assert out.loc["r3", "origin_date"] == D("2020-01-15")
    # r6: child C turns 18 on 2021-06-15: censored then, 2021-06-15 - 2021-02-01 = 134 days.
    assert (out.loc["r6", "time_days"], out.loc["r6", "event"], out.loc["r6", "censor_reason"]) == (134, 0, "age_18")
    # r8: born 29 Feb 2004, 18 on 1 Mar 2022; origin 2021-10-01: 151 days.
    assert (out.loc["r8", "time_days"], out.loc["r8", "censor_reason"]) == (151, "age_18")
    assert counts["same_episode_reports"] == 1
    assert counts["open_at_extract"] == 1
    assert counts["index_referrals"] == 6 and counts["events"] == 2


def test_covariates_at_index():
    out, _ = _derive()
    assert out.loc["r1", "substance_misuse"] == 1 and out.loc["r2", "substance_misuse"] == 0
    # Prior episodes of the child in the window: r4 is not an episode, so r5 has one prior (r3).
    assert out.loc["r1", "prior_referrals"] == 0 and out.loc["r2", "prior_referrals"] == 1
    assert out.loc["r5", "prior_referrals"] == 1
    # Plan p1 (2019) precedes r3; p3 (2020-02-20) precedes r2 (2020-02-10)? No: it starts after it.
    assert out.loc["r3", "prior_plan"] == 1 and out.loc["r2", "prior_plan"] == 0
    assert out.loc["r1", "no_service"] == 1 and out.loc["r2", "no_service"] == 0
    assert out.loc["r3", "no_service"] == 1 and out.loc["r5", "no_service"] == 0
    # Age at referral: A born 2015-05-01, referred 2020-01-01 -> 4.67 years, band 1-4.
    assert out.loc["r1", "age_band"] == "1_4"
    assert out.loc["r6", "age_band"] == "16_17"
    assert out.loc["r3", "family_id"] == "f1" and out.loc["r6", "la_code"] == "LA02"


def test_referral_origin():
    out, _ = _derive(time_origin="referral")
    # r1 -> r2: 2020-02-10 - 2020-01-01 = 40 days; r3 -> r5 (r4 same episode): 60 days.
    assert (out.loc["r1", "time_days"], out.loc["r1", "event"]) == (40, 1)
    assert (out.loc["r3", "time_days"], out.loc["r3", "event"]) == (60, 1)
    # r6: 2021-06-15 - 2021-01-01 = 165 days to the 18th birthday.
    assert out.loc["r6", "time_days"] == 165


def test_first_per_child():
    out, counts = _derive(index="first_per_child")
    assert sorted(out.index) == ["r1", "r3", "r6", "r8"]
    assert counts["later_episodes_not_index"] == 2  # r2 and r5
    assert counts["open_at_extract"] == 1           # D's only referral


def test_same_episode_window_is_a_parameter():
    out, _ = _derive(same_episode_days=7)
    # With a 7-day window r4 (9 days after r3) is its own episode and r3's re-report:
    # origin max(2020-01-03, 2020-01-08) = 2020-01-08, event 2 days later.
    assert (out.loc["r3", "time_days"], out.loc["r3", "event"]) == (2, 1)
    assert "r4" in out.index


def test_eighteenth_birthday_including_leap_day():
    dob = pd.Series([D("2004-02-29"), D("2003-06-15"), D("2000-12-31")])
    expected = pd.Series([D("2022-03-01"), D("2021-06-15"), D("2018-12-31")])
    assert eighteenth_birthday_days(dob).tolist() == to_days(expected).tolist()


def test_cpp_durations():
    out = derive_cpp_durations(_children(), _plans(), extract_date=EXTRACT).set_index("plan_id")
    # p1: 2019-01-01 to 2019-04-02 = 91 days, ended; p2 open: 2020-03-20 to the extract date = 1016 days.
    assert (out.loc["p1", "duration_days"], out.loc["p1", "ended"]) == (91, 1)
    assert (out.loc["p2", "duration_days"], out.loc["p2", "ended"]) == (1016, 0)
    assert out.loc["p1", "plan_sequence"] == "first"
    assert out.loc["p2", "plan_sequence"] == "second_or_subsequent" and out.loc["p2", "plan_number"] == 2
    assert out.loc["p3", "plan_sequence"] == "first"
    # B born 2012-01-01, p1 starts 2019-01-01: 7.0 years, band 5-9.
    assert out.loc["p1", "age_at_start_years"] == pytest.approx(7.0, abs=0.01)
    assert out.loc["p1", "age_band_at_start"] == "5_9"


def test_dfe_rereferral_share_counts_calendar_years_by_hand():
    """DfE's measure: of the referrals in the 12 months to the extract date (after 31 March
    2024, up to 31 March 2025), the share within 12 months of the child's previous one.
    A: 29 Feb 2024 (before the year), 28 Feb 2025 (in it; a year after 29 Feb is 28 Feb: within).
    B: 1 Jun 2023, 1 Jun 2024 (in it; 366 days, one calendar year: within).
    C: 10 Apr 2023, 11 Apr 2024 (in it; a year and a day: not within).
    So 2 of 3. (Counting 365 days would give 1 of 3: B's leap year would push it out.)"""
    from pipeline.derive import dfe_rereferral_share, episode_start_days

    referrals = pd.DataFrame({"child_id": ["A", "A", "B", "B", "C", "C"],
                              "referral_date": pd.to_datetime(["2024-02-29", "2025-02-28", "2023-06-01", "2024-06-01",
                                                               "2023-04-10", "2024-04-11"])})
    share, in_year = dfe_rereferral_share(*episode_start_days(referrals, 14), pd.Timestamp("2025-03-31"))
    assert in_year == 3 and share == 2 / 3
