"""Published figures the synthetic extract is calibrated to, and how the achieved ones are measured.

Sources are as quoted in ``shared/reference/literature.yaml`` (DCSF Statistical First
Releases 2009 and DfE 'Characteristics of children in need' 2024-2025).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: DfE table D7, 2025: lengths of plans that ended in the year (<=3 m, 3-6 m, 6-12 m, 1-2 y, 2+ y).
CPP_DURATION_BAND_SHARES_2025 = [0.159, 0.110, 0.435, 0.252, 0.044]
CPP_DURATION_BANDS = ("<=3 months", "3-6 months", "6 months-1 year", "1-2 years", "2+ years")
CPP_DURATION_BAND_EDGES_DAYS = (91, 182, 365, 730)

TARGETS: dict[str, dict[str, Any]] = {
    "rereferral_within_12_months_share": {
        "target": 0.226, "tolerance": 0.02,
        "source": "DfE CIN 2025: 142,900 of 632,830 referrals (0.226); 0.22-0.24 in 2008-09 (DCSF SFR)",
    },
    "second_or_subsequent_plan_share": {
        "range": [0.13, 0.20],
        "source": "DCSF SFR 2009: 0.13; DfE 2015: 0.166 (a previous plan however long ago)",
    },
    "cpp_duration_band_shares": {
        "target": CPP_DURATION_BAND_SHARES_2025, "tolerance": 0.03, "bands": list(CPP_DURATION_BANDS),
        "source": "DfE table D7, plans ended in year to 31 March 2025 (62,300 plans)",
    },
    "open_plans_aged_0_4_share": {
        "target": 0.45, "tolerance": 0.05, "source": "DCSF SFR: CPP at 31 March 2009 aged 0-4",
    },
    "open_plans_neglect_or_emotional_share": {
        "target": 0.73, "tolerance": 0.05, "source": "DCSF SFR: CPP at 31 March 2009, neglect or emotional abuse",
    },
    "boys_share": {
        "target": 0.55, "tolerance": 0.02, "source": "DCSF SFR: children in need at 31 March 2009, boys",
    },
    "rereferral_hazard_per_1000_child_years": {
        "shape": "decreasing", "intervals_days": [[0, 91], [91, 182], [182, 365], [365, 730]],
        "source": "literature.yaml: re-referral hazard highest in the first months after closure",
    },
}


def duration_band(duration_days: np.ndarray) -> np.ndarray:
    """Index 0-4 of the DfE length band (upper edges inclusive)."""
    return np.searchsorted(np.array(CPP_DURATION_BAND_EDGES_DAYS), duration_days, side="left")


def achieved_figures(children: pd.DataFrame, referrals: pd.DataFrame, plans: pd.DataFrame,
                     extract_date: pd.Timestamp, same_episode_days: int) -> dict[str, Any]:
    """The calibration figures as measured on an extract (as DfE would, in the final year).

    Year-based figures use the 12 months to the extract date, so a window of several years
    gives every counted referral or plan its full history, as in the national returns.
    """
    from pipeline.derive import dfe_rereferral_share, episode_start_days, order_by_child, to_days
    from pipeline.schema import DAYS_PER_YEAR, age_in_years, years_before

    extract = pd.Timestamp(extract_date)
    year_start = years_before(extract)
    s_code, s_day = episode_start_days(referrals, same_episode_days)
    has_prev = np.r_[False, s_code[1:] == s_code[:-1]]
    rereferral_share, referrals_in_year = dfe_rereferral_share(s_code, s_day, extract)

    p = plans.iloc[order_by_child(plans["child_id"], plans["start_date"])[0]]
    repeat = p.groupby("child_id").cumcount().to_numpy() > 0
    started_in_year = (p["start_date"] > year_start).to_numpy()
    ended_in_year = (p["end_date"] > year_start).to_numpy()
    durations = (p["end_date"] - p["start_date"]).dt.days.to_numpy()[ended_in_year]
    bands = np.bincount(duration_band(durations), minlength=5) / max(len(durations), 1)

    open_plans = p[p["end_date"].isna()].merge(children[["child_id", "date_of_birth"]], on="child_id")
    age_open = age_in_years(np.full(len(open_plans), extract.to_datetime64()), open_plans["date_of_birth"])
    t, event = _time_and_event(children, referrals, plans, extract, same_episode_days)
    hazards = {}
    for lo, hi in TARGETS["rereferral_hazard_per_1000_child_years"]["intervals_days"]:
        at_risk = np.clip(t - lo, 0, hi - lo).sum()
        events = ((event == 1) & (t > lo) & (t <= hi)).sum()
        hazards[f"{lo}-{hi}"] = round(float(1000 * DAYS_PER_YEAR * events / at_risk), 2)
    first_year = s_day[~has_prev] <= to_days(pd.Series([years_before(extract, 5)]))[0]
    child_has_second = np.bincount(s_code, minlength=s_code.max() + 1)[s_code[~has_prev]] > 1
    return {
        "rereferral_within_12_months_share": round(rereferral_share, 4),
        "second_or_subsequent_plan_share": round(float(repeat[started_in_year].mean()), 4),
        "cpp_duration_band_shares": [round(float(b), 4) for b in bands],
        "open_plans_aged_0_4_share": round(float((age_open < 5).mean()), 4),
        "open_plans_neglect_or_emotional_share": round(
            float(open_plans["category"].isin(["NEGLECT", "EMOTIONAL"]).mean()), 4),
        "boys_share": round(float((children["sex"] == "M").mean()), 4),
        "rereferral_hazard_per_1000_child_years": hazards,
        "first_year_cohort_rereferred_by_extract_share": round(float(child_has_second[first_year].mean()), 4),
        "referrals_per_child": round(len(referrals) / max(len(children), 1), 3),
        "counted": {"referrals_in_final_year": referrals_in_year, "plans_started_in_final_year":
                    int(started_in_year.sum()), "plans_ended_in_final_year": int(len(durations)),
                    "plans_open_at_extract": int(len(open_plans))},
    }


#: Children per ``derive_rereport`` call in ``achieved_figures``: its working memory is
#: hundreds of bytes per referral, so 10 million children are taken a block at a time.
CHILDREN_PER_BLOCK = 250_000


def _time_and_event(children: pd.DataFrame, referrals: pd.DataFrame, plans: pd.DataFrame,
                    extract: pd.Timestamp, same_episode_days: int) -> tuple[np.ndarray, np.ndarray]:
    """``time_days`` and ``event`` of every index referral (``derive_rereport``), children
    taken ``CHILDREN_PER_BLOCK`` at a time. A child's index referrals depend only on that
    child's rows, so the rows are the same as one call's; only their order differs, and the
    hazards are integer sums over them."""
    from pipeline.derive import derive_rereport

    position = pd.Index(children["child_id"])
    def block_of(ids: pd.Series) -> np.ndarray:
        # A child missing from ``children`` goes to the first block (derive_rereport reports it).
        return np.maximum(position.get_indexer(ids), 0) // CHILDREN_PER_BLOCK
    ref_block, plan_block = block_of(referrals["child_id"]), block_of(plans["child_id"])
    times, events = [], []
    for block in range(max(1, -(-len(children) // CHILDREN_PER_BLOCK))):
        rereport, _ = derive_rereport(
            children.iloc[block * CHILDREN_PER_BLOCK:(block + 1) * CHILDREN_PER_BLOCK],
            referrals[ref_block == block], plans[plan_block == block],
            extract_date=extract, same_episode_days=same_episode_days)
        times.append(rereport["time_days"].to_numpy())
        events.append(rereport["event"].to_numpy())
    return np.concatenate(times), np.concatenate(events)


def check_against_targets(achieved: dict[str, Any]) -> dict[str, bool]:
    """Whether each achieved figure meets its target (used by tests and written to truth.json)."""
    out = {}
    for key, spec in TARGETS.items():
        value = achieved[key]
        if "range" in spec:
            out[key] = spec["range"][0] <= value <= spec["range"][1]
        elif spec.get("shape") == "decreasing":
            v = list(value.values())
            out[key] = all(a > b for a, b in zip(v, v[1:]))
        elif isinstance(spec["target"], list):
            out[key] = all(abs(a - t) <= spec["tolerance"] for a, t in zip(value, spec["target"]))
        else:
            out[key] = abs(value - spec["target"]) <= spec["tolerance"]
    return out


def markdown_table(truth: dict[str, Any]) -> str:
    """The achieved calibration figures against their targets, as a Markdown table."""
    achieved, met = truth["achieved"], truth["achieved_meets_target"]
    rows = ["| figure | published target | achieved | met |", "|---|---|---|---|"]
    for key, spec in TARGETS.items():
        if "range" in spec:
            target = f"{spec['range'][0]}-{spec['range'][1]}"
        elif spec.get("shape"):
            target = spec["shape"]
        elif isinstance(spec["target"], list):
            target = ", ".join(map(str, spec["target"])) + f" (each ± {spec['tolerance']})"
        else:
            target = f"{spec['target']} ± {spec['tolerance']}"
        value = achieved[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k} d: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        rows.append(f"| {key.replace('_', ' ')} | {target} | {value} | {'yes' if met[key] else 'NO'} |")
    rows.append(f"| first-year cohort re-referred by the extract date (Troncoso 2017: 0.55 within 6 years) "
                f"| informative | {achieved['first_year_cohort_rereferred_by_extract_share']} | |")
    rows.append(f"| referrals per child | informative | {achieved['referrals_per_child']} | |")
    return "\n".join(rows)


def main() -> None:
    """Print the calibration table of the synthetic extract (run after `dvc repro`)."""
    import json

    from pipeline import config

    print(markdown_table(json.loads((config.SYNTHETIC_DIR / "truth.json").read_text())))


if __name__ == "__main__":
    main()
