"""Episode rules: the pure core of the ``episodes`` stage, shared with
``pipeline.published`` (the figures an extract achieves, checked by ``simulate``).

The rules themselves (episodes, index referrals, time origin, event and competing ends,
covariates at index) are described in ``pipeline/episodes.py``, the stage that applies them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import InputError
from pipeline.schema import DURATION_UNITS, FACTORS, NO_SERVICE_OUTCOMES, age_band, age_in_years, years_before

_DAY_NS = 86_400_000_000_000


def to_days(dates: pd.Series) -> np.ndarray:
    """Whole days since 1970-01-01 as int64; missing dates become -1 (never a real day here)."""
    values = pd.to_datetime(dates).to_numpy(dtype="datetime64[ns]")
    days = values.astype(np.int64) // _DAY_NS
    return np.where(np.isnat(values), -1, days)


def eighteenth_birthday_days(date_of_birth: pd.Series) -> np.ndarray:
    """Day of the 18th birthday (calendar years; a 29 February birth turns 18 on 1 March)."""
    dob = pd.to_datetime(date_of_birth)
    plus18 = pd.to_datetime({"year": dob.dt.year + 18, "month": dob.dt.month, "day": 1})
    last_day = plus18.dt.days_in_month
    day = np.minimum(dob.dt.day, last_day)
    bday = plus18 + pd.to_timedelta(day - 1, unit="D")
    bday = bday.where(~((dob.dt.month == 2) & (dob.dt.day == 29) & (last_day == 28)),
                      bday + pd.Timedelta(days=1))
    return to_days(bday)


def order_by_child(child_id: pd.Series, dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Row order grouping each child's rows by date (stable: ties keep input order), and
    the integer child code of each row in that order. Integer sorts, not string sorts."""
    code = pd.factorize(child_id)[0]
    order = np.lexsort((to_days(dates), code))
    return order, code[order]


def episode_starts(child_code: np.ndarray, day: np.ndarray, same_episode_days: int) -> np.ndarray:
    """True where a referral starts an episode. Rows must be sorted by child, then day.

    A referral starts an episode when it is the child's first or comes more than
    ``same_episode_days`` after the start of the current episode (not after the previous
    referral: a chain of reports a few days apart is still one incident's episode).
    """
    n = len(day)
    starts = np.zeros(n, dtype=bool)
    if n == 0:
        return starts
    first = np.ones(n, dtype=bool)
    first[1:] = child_code[1:] != child_code[:-1]
    group_start = np.flatnonzero(first)
    position = np.arange(n) - np.repeat(group_start, np.diff(np.append(group_start, n)))
    current = np.zeros(len(group_start), dtype=np.int64)
    group = np.cumsum(first) - 1
    # One pass per position within child: vectorised across children.
    for k in range(int(position.max()) + 1):
        rows = np.flatnonzero(position == k)
        g = group[rows]
        new = (k == 0) | (day[rows] - current[g] > same_episode_days)
        starts[rows] = new
        current[g] = np.where(new, day[rows], current[g])
    return starts


def episode_start_days(referrals: pd.DataFrame, same_episode_days: int) -> tuple[np.ndarray, np.ndarray]:
    """The child code and day of every episode-starting referral, by child then day."""
    order, code = order_by_child(referrals["child_id"], referrals["referral_date"])
    day = to_days(referrals["referral_date"])[order]
    starts = episode_starts(code, day, same_episode_days)
    return code[starts], day[starts]


def dfe_rereferral_share(start_code: np.ndarray, start_day: np.ndarray, extract_date: pd.Timestamp
                         ) -> tuple[float, int]:
    """England's published re-referral measure (DfE, Characteristics of children in need):
    of the referrals in the 12 months to the extract date, the share that came within 12
    months (on or before the same calendar date a year later) of the child's previous referral. Referrals are episode starts (a
    second report of the same incident is not a referral here). Returns the share (NaN with
    no referral in the year) and the number of referrals in the year.

    A backward-looking share of referrals: not a child's risk of being re-referred, which
    the Kaplan-Meier and Aalen-Johansen curves estimate forward from each episode's end."""
    within, in_year = dfe_rereferral_counts(start_code, start_day, extract_date)
    # within / in_year is the float64 mean of the 0/1 flags (an exact integer sum, one division).
    return (within / in_year if in_year else float("nan")), in_year


def dfe_rereferral_counts(start_code: np.ndarray, start_day: np.ndarray, extract_date: pd.Timestamp
                          ) -> tuple[int, int]:
    """The two counts behind ``dfe_rereferral_share``: referrals in the year within 12 months of
    the child's previous one, and referrals in the year. Each looks at one child's episode
    starts only, so partitions of children add up to the whole extract's counts."""
    has_prev = np.r_[False, start_code[1:] == start_code[:-1]]
    previous = pd.Series(pd.to_datetime(np.r_[start_day[:1], start_day[:-1]], unit="D"))
    within_year = start_day <= to_days(previous + pd.DateOffset(years=1))
    in_year = start_day > to_days(pd.Series([years_before(pd.Timestamp(extract_date))]))[0]
    return int((has_prev & within_year)[in_year].sum()), int(in_year.sum())


def derive_rereport(children: pd.DataFrame, referrals: pd.DataFrame, plans: pd.DataFrame, *,
                    extract_date: pd.Timestamp, index: str = "every_closed",
                    time_origin: str = "closure", same_episode_days: int = 14,
                    ) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per index referral with time to re-report; and exclusion counts by reason."""
    if index not in ("every_closed", "first_per_child"):
        raise InputError(f"params.yaml: episodes.index '{index}' must be every_closed or first_per_child")
    if time_origin not in ("closure", "referral"):
        raise InputError(f"params.yaml: episodes.time_origin '{time_origin}' must be closure or referral")
    extract_day = int(pd.Timestamp(extract_date).value // _DAY_NS)
    kids = children.set_index("child_id")
    order, child_code = order_by_child(referrals["child_id"], referrals["referral_date"])
    r = referrals.iloc[order].reset_index(drop=True)
    ref_day = to_days(r["referral_date"])
    clo_day = to_days(r["closure_date"])
    starts = episode_starts(child_code, ref_day, same_episode_days)
    prior_episodes = pd.Series(starts.astype(np.int64)).groupby(child_code).cumsum().to_numpy() - 1

    counts = {"referrals": int(len(r)), "same_episode_reports": int((~starts).sum())}
    candidate = starts.copy()
    if index == "first_per_child":
        candidate &= prior_episodes == 0
        counts["later_episodes_not_index"] = int((starts & (prior_episodes > 0)).sum())
    open_case = clo_day < 0
    if time_origin == "closure":
        counts["open_at_extract"] = int((candidate & open_case).sum())
        candidate &= ~open_case
        origin = np.maximum(clo_day, ref_day + same_episode_days)
    else:
        if index == "every_closed":
            counts["open_at_extract"] = int((candidate & open_case).sum())
            candidate &= ~open_case
        origin = ref_day.copy()

    # Next episode start of the same child after the origin: one binary search per row.
    start_rows = np.flatnonzero(starts)
    big = np.int64(1) << 32
    start_key = child_code[start_rows].astype(np.int64) * big + ref_day[start_rows]
    idx = np.flatnonzero(candidate)
    pos = np.searchsorted(start_key, child_code[idx].astype(np.int64) * big + origin[idx], side="right")
    found = pos < len(start_rows)
    nxt_row = start_rows[np.minimum(pos, len(start_rows) - 1)]
    found &= child_code[nxt_row] == child_code[idx]
    next_day = np.where(found, ref_day[nxt_row], -1)

    kid = kids.loc[r["child_id"].to_numpy()[idx]]
    day18 = eighteenth_birthday_days(kid["date_of_birth"])
    care_day = to_days(kid["looked_after_date"]) if "looked_after_date" in kid else np.full(len(idx), -1)
    # Follow-up ends at the first of: re-referral, entering care (after the origin), the 18th
    # birthday, the extract date. A care entry on or before the origin is history, not an end.
    care_day = np.where(care_day > origin[idx], care_day, np.iinfo(np.int64).max)
    next_day = np.where(found & (next_day < day18) & (next_day <= extract_day), next_day, np.iinfo(np.int64).max)
    ends = np.stack([next_day, care_day, day18, np.full(len(idx), extract_day + 1)])
    first = ends.argmin(axis=0)  # ties: re-referral, then care, then age 18, then extract date
    end_day = np.where(first == 3, extract_day, ends.min(axis=0))
    event_type = np.array(["re_referral", "entered_care", "age_18", "extract_date"], dtype=object)[first]
    event = first == 0
    time_days = end_day - origin[idx]
    no_follow_up = time_days <= 0
    counts["no_follow_up"] = int(no_follow_up.sum())
    keep = ~no_follow_up
    idx, kid, event, time_days, event_type = idx[keep], kid[keep], event[keep], time_days[keep], event_type[keep]

    first_plan = plans.groupby("child_id")["start_date"].min()
    rr = r.iloc[idx]
    age_years = age_in_years(rr["referral_date"], kid["date_of_birth"])
    out = pd.DataFrame({
        "index_referral_id": rr["referral_id"].to_numpy(),
        "child_id": rr["child_id"].to_numpy(),
        "family_id": kid["family_id"].to_numpy(),
        "la_code": kid["la_code"].to_numpy(),
        "index_date": rr["referral_date"].to_numpy(),
        "origin_date": pd.to_datetime(origin[idx], unit="D"),
        "time_days": time_days.astype(np.int64),
        "event": event.astype(np.int8),
        "censor_reason": np.where(event, None, event_type).astype(object),
        "event_type": event_type,
        **{f: rr[f].to_numpy(dtype=np.int8) for f in FACTORS if f in rr.columns},  # absent: not recorded
        "disability": kid["disability"].to_numpy(dtype=np.int8),
        "no_service": rr["outcome"].isin(NO_SERVICE_OUTCOMES).to_numpy(dtype=np.int8),
        "outcome": rr["outcome"].to_numpy(),
        "referral_source": rr["referral_source"].to_numpy(),
        "prior_referrals": prior_episodes[idx].astype(np.int64),
        "prior_plan": (rr["referral_date"].to_numpy()
                       > first_plan.reindex(rr["child_id"]).to_numpy()).astype(np.int8),
        "age_years": np.round(age_years, 3),
        "age_band": age_band(pd.Series(age_years)).to_numpy(),
        "sex": kid["sex"].to_numpy(),
        "ethnicity": kid["ethnicity"].to_numpy(),
    })
    counts["index_referrals"] = int(len(out))
    counts["events"] = int(out["event"].sum())
    counts["censored_extract_date"] = int((out["censor_reason"] == "extract_date").sum())
    counts["censored_age_18"] = int((out["censor_reason"] == "age_18").sum())
    counts["censored_entered_care"] = int((out["censor_reason"] == "entered_care").sum())
    return out, counts


def derive_cpp_durations(children: pd.DataFrame, plans: pd.DataFrame, *,
                         extract_date: pd.Timestamp) -> pd.DataFrame:
    """One row per plan: duration to end (or to the extract date while open) and context."""
    p = plans.iloc[order_by_child(plans["child_id"], plans["start_date"])[0]].reset_index(drop=True)
    kid = children.set_index("child_id").loc[p["child_id"].to_numpy()]
    ended = p["end_date"].notna().to_numpy()
    stop = p["end_date"].fillna(pd.Timestamp(extract_date))
    number = p.groupby("child_id").cumcount().to_numpy() + 1
    age = age_in_years(p["start_date"], kid["date_of_birth"])
    return pd.DataFrame({
        "plan_id": p["plan_id"].to_numpy(),
        "child_id": p["child_id"].to_numpy(),
        "family_id": kid["family_id"].to_numpy(),
        "la_code": kid["la_code"].to_numpy(),
        "start_date": p["start_date"].to_numpy(),
        "end_date": p["end_date"].to_numpy(),
        "duration_days": ((stop - p["start_date"]).dt.days).to_numpy(dtype=np.int64),
        "ended": ended.astype(np.int8),
        "end_reason": p["end_reason"].to_numpy(),
        "category": p["category"].to_numpy(),
        "age_at_start_years": np.round(age, 3),
        "age_band_at_start": age_band(pd.Series(age)).to_numpy(),
        "sex": kid["sex"].to_numpy(),
        "plan_number": number.astype(np.int64),
        "plan_sequence": np.where(number == 1, "first", "second_or_subsequent"),
    })


def analysis_table_to_rereport(table: pd.DataFrame, spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The prepared analysis table under the model stages' column names.

    ``id`` -> ``subject_id``, ``cluster`` -> ``family_id`` (each subject its own cluster
    when none is given), ``duration`` -> ``time_days`` (converted from ``duration_unit``:
    days, weeks = 7 days, months = 365.25 / 12 days, years = 365.25 days), ``event`` ->
    ``event``, ``index_date`` -> ``index_date`` (when named); covariates, KM groups and the
    stratum keep their names.
    """
    unit = spec.get("duration_unit", "days")
    out = pd.DataFrame({
        "subject_id": table[spec["id"]].to_numpy(),
        "family_id": table[spec["cluster"]].to_numpy() if spec.get("cluster") else table[spec["id"]].to_numpy(),
        "time_days": table[spec["duration"]].to_numpy(dtype=float) * DURATION_UNITS[unit],
        "event": table[spec["event"]].to_numpy(dtype=np.int8),
    })
    if spec.get("index_date"):
        out["index_date"] = pd.to_datetime(table[spec["index_date"]]).to_numpy()
    for col in dict.fromkeys([*(spec.get("covariates") or []), *(spec.get("km_groups") or []),
                              *([spec["strata"]] if spec.get("strata") else [])]):
        out[col] = table[col].to_numpy()
    return out, {"index_referrals": int(len(out)), "events": int(out["event"].sum()),
                 "duration_unit": unit, "clusters": int(out["family_id"].nunique())}


def no_rows_reason(counts: dict[str, Any], prepared: bool) -> str | None:
    """Why the analysis table has no rows (the later stages then write empty outputs and
    say what could not be estimated), or None when it has rows."""
    if counts["index_referrals"]:
        return None
    if prepared or not counts.get("referrals"):
        return (f"no rows in the analysis table: every {'row of the prepared table' if prepared else 'referral'} "
                "was rejected by clean (reasons in data/clean/rejects.csv and metrics/clean.json)")
    return ("no rows in the analysis table: no referral gives an index episode (each is open at the extract date, "
            "or a later report of an earlier episode)")


def _empty_children_plans() -> tuple[pd.DataFrame, pd.DataFrame]:
    children = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
        ("child_id", str), ("family_id", str), ("la_code", str), ("sex", str),
        ("date_of_birth", "datetime64[ns]"))})
    plans = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
        ("plan_id", str), ("child_id", str), ("start_date", "datetime64[ns]"),
        ("end_date", "datetime64[ns]"), ("category", str), ("end_reason", str))})
    return children, plans
