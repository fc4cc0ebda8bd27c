"""``episodes`` stage: analysis tables from the clean extract.

``data/analysis/rereport.parquet``, one row per index referral:

* **Episodes.** Referrals of a child are grouped into episodes: a referral starts a new
  episode when it comes more than ``same_episode_days`` after the referral that started
  the current one; later reports of the same incident are not re-referrals.
* **Index referrals.** ``every_closed``: every closed episode-starting referral;
  ``first_per_child``: each child's first episode-starting referral in the window
  (excluded, and counted, when still open at the extract date under ``closure`` origin).
* **Time origin.** ``closure``: the episode's end, ``max(closure_date, referral_date +
  same_episode_days)`` (a case closed the day it came in is still one episode for its
  window); ``referral``: the referral date.
* **Event.** The next episode-starting referral of the same child after the origin,
  before the extract date and the 18th birthday. ``time_days`` runs from origin to that
  referral, or to the first of the competing ends: entering care (``looked_after_date``
  after the origin), the 18th birthday, the extract date. ``censor_reason`` names it and
  ``event_type`` carries all four (``re_referral``, ``entered_care``, ``age_18``,
  ``extract_date``) for competing-risks analysis.
* **Covariates at index**: the referral's factors and outcome, ``no_service`` (outcome
  NFA or assessed only), age, sex, ethnicity, disability, LA, ``prior_referrals`` (earlier
  episodes of the child in the window), ``prior_plan`` (a plan started before the index
  referral date).

``data/analysis/cpp_durations.parquet``, one row per plan: ``duration_days`` from start to
end (or to the extract date while open), ``ended``, category, age at start, LA, and the
plan's sequence for the child (``first`` / ``second_or_subsequent``).

Rows that cannot be index referrals are counted by reason in ``metrics/episodes.json``.
The rules are pure functions in ``pipeline/derive.py`` (shared with ``pipeline.published``).
With ``compute.scheduler`` set they run on partitions of whole families as Dask tasks, with
the same result (``pipeline/family_partitions.py``). When the clean referrals exceed
``episodes.max_rows_in_memory`` they run out of core on this machine (``compute.scheduler``
or not), on partitions of children read with Polars and written as they come, with the
same files (``pipeline/partitioned.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import compute, config
from pipeline.cli import stage_entry
from pipeline.derive import (_empty_children_plans, analysis_table_to_rereport, derive_cpp_durations,
                             dfe_rereferral_share, episode_start_days, no_rows_reason)
from pipeline.family_partitions import cpp_durations_by_family, rereport_by_family
from pipeline.io import write_json, write_parquet
from pipeline.partitioned import MAX_ROWS_IN_MEMORY, derive_to_files, rows_in

ANALYSIS_DIR = Path("data/analysis")
CLEAN_DIR = Path("data/clean")


def main() -> None:
    params = config.load_params()
    compute.use(params)
    ep = params["episodes"]
    extract_date = config.extract_date(params)
    measures: dict[str, Any] = {}
    rules = dict(extract_date=extract_date, index=ep["index"], time_origin=ep["time_origin"],
                 same_episode_days=int(ep["same_episode_days"]))
    max_rows = int(ep.get("max_rows_in_memory", MAX_ROWS_IN_MEMORY))
    out_of_core = (params["input"]["source"] != "analysis_table"
                   and rows_in(CLEAN_DIR / "referrals.parquet") > max_rows)
    if params["input"]["source"] == "analysis_table":
        table = pd.read_parquet(CLEAN_DIR / "analysis_table.parquet")
        rereport, counts = analysis_table_to_rereport(table, params["input"]["analysis_table"])
        durations = derive_cpp_durations(*_empty_children_plans(), extract_date=extract_date)
    elif out_of_core:
        # Too large for memory: partitions of children, written as they are derived.
        counts, (share, in_year) = derive_to_files(CLEAN_DIR, ANALYSIS_DIR / "rereport.parquet",
                                                   ANALYSIS_DIR / "cpp_durations.parquet",
                                                   max_rows=max_rows, **rules)
    else:
        children, referrals, plans = (pd.read_parquet(CLEAN_DIR / f"{name}.parquet")
                                      for name in ("children", "referrals", "plans"))
        rereport, counts = rereport_by_family(children, referrals, plans, **rules)
        durations = cpp_durations_by_family(children, plans, extract_date=extract_date)
        share, in_year = dfe_rereferral_share(*episode_start_days(referrals, int(ep["same_episode_days"])),
                                              extract_date)
    if params["input"]["source"] != "analysis_table":
        measures["dfe_rereferral_within_12_months"] = {
            "share": None if np.isnan(share) else round(share, 4), "referrals_in_final_year": in_year,
            "definition": "of the referrals in the 12 months to the extract date, the share within 12 months "
                          "of the child's previous referral (DfE's published measure; backward-looking)"}
    if not out_of_core:
        counts["plans"] = int(len(durations))
        counts["plans_ended"] = int(durations["ended"].sum())
        write_parquet(rereport, ANALYSIS_DIR / "rereport.parquet")
        write_parquet(durations, ANALYSIS_DIR / "cpp_durations.parquet")
    status = no_rows_reason(counts, params["input"]["source"] == "analysis_table")
    write_json({"definition": {k: ep[k] for k in ("index", "time_origin", "same_episode_days")},
                "counts": counts, **measures, **({"status": status} if status else {})}, Path("metrics/episodes.json"))
    print(f"episodes: {counts['index_referrals']:,} index referrals, {counts['events']:,} re-referrals; "
          f"{counts['plans']:,} plans" + (f"; {status}" if status else ""))


if __name__ == "__main__":
    stage_entry(main)()
