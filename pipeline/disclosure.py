"""Disclosure checks on everything the pipeline publishes (``reports/``, ``metrics/``).

Rule (``disclosure.min_cell_count``, default 10): a count of children, families,
referrals or plans below the threshold is withheld (blank in CSV, null in JSON, a dash
in the report), and so is any cell from which it could be recovered by subtraction
(each stage withholds the linked cells with it: the four cells of an error table, a
group's events with its size, ...).

``scan`` is the independent check: it reads every CSV, JSON, Markdown, HTML and text file
under the given folders and reports

* any child, family, referral or plan identifier of the input, raw or pseudonymised, as a
  whole token or as the alphanumeric part of a longer one (``child_C0000001``); purely
  numeric identifiers shorter than 6 digits are not looked for (they would match counts);
* in CSV files, a value in [0, min_count) in a count column (``COUNT_NAMES``; the stages
  withhold zeros in tables too);
* in JSON files, an integer value in [1, min_count) under any key not declared a
  non-count (``NON_COUNT_KEYS``).

It cannot see counts that are only implied (a share times a published total, a
difference between overlapping rows): those are the stages' job (secondary suppression),
tested where they are made. Counts in the HTML and Markdown report come from the scanned
CSV and JSON files. Data-processing tallies in ``metrics/clean.json`` (rows read, kept,
rejected by reason, normalised) count records of the extract, not people with an
attribute; they are published so that the reconciliation rows in = kept + rejected can
be checked, and are exempt (``EXEMPT_JSON``). So are the output-checking bundle's ACRO files
(``reports/outputs/results.json``, ``session_summary.json``): their integers are cell positions,
numbers of flagged cells and residual degrees of freedom, and the tables they describe are
scanned beside them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

# Column names (CSV) that hold counts of people or referrals: checked for [0, min_count).
COUNT_NAMES = frozenset({
    "n", "events", "plans", "ended", "plans_ended", "at_risk", "tp", "fp", "fn", "tn", "flagged",
    "observed_events", "children", "families", "referrals", "index_referrals", "count",
})
# JSON keys whose integer values are not counts (every other integer leaf is checked for
# [1, min_count); a zero in a JSON tally discloses no one).
NON_COUNT_KEYS = frozenset({
    "horizon_days", "horizon_months", "same_episode_days", "bootstrap_replicates", "iterations", "parameters",
    "seed", "folds", "df", "year", "intercept", "shrinkage", "optimism_r2", "riley_minimum_n",
    "covariates_with_truth", "true_value_in_95ci",
})
EXEMPT_JSON = frozenset({"clean.json", "results.json", "session_summary.json"})
SCANNED = (".csv", ".json", ".md", ".html", ".txt")     # text files; .txt for identifiers only
ID_PATTERNS = (re.compile(r"[A-Za-z0-9_\-./]{4,}"), re.compile(r"[A-Za-z0-9]{4,}"))


def _small(value: Any, min_count: int) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return v == v and 0 <= v < min_count and float(v).is_integer()


def _json_counts(obj: Any, key: str = "") -> Iterable[tuple[str, Any]]:
    """Every integer leaf of a JSON document that is not declared a non-count."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_counts(v, f"{key}.{k}" if key else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_counts(v, f"{key}[{i}]")
    elif isinstance(obj, int) and not isinstance(obj, bool) and key.rsplit(".", 1)[-1] not in NON_COUNT_KEYS:
        yield key, obj


def scan(folders: list[Path], min_count: int, identifiers: set[str] | Any) -> list[str]:
    """Problems found: one line each (file, where, what).

    ``identifiers``: a set, or anything with ``intersection(tokens) -> set`` (the outputs
    stage looks the files' tokens up in the clean tables' id columns, never holding them all)."""
    problems = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in SCANNED):
            text = path.read_text(encoding="utf-8", errors="replace")
            tokens = set().union(*(pattern.findall(text) for pattern in ID_PATTERNS))
            tokens = {t for t in tokens if not (t.isdigit() and len(t) < 6)}
            leaked = sorted(identifiers.intersection(tokens))
            if leaked:
                problems.append(f"{path}: identifier(s) of the input: {', '.join(leaked[:5])}")
            if path.suffix == ".csv":
                if not text.strip():       # a table that could not be estimated may hold no header either
                    continue
                frame = pd.read_csv(path)
                for column in frame.columns:
                    if column in COUNT_NAMES:
                        bad = frame.index[frame[column].map(lambda v: _small(v, min_count))]
                        if len(bad):
                            problems.append(f"{path}: column {column}, rows {', '.join(str(i + 2) for i in bad[:5])}: "
                                            f"count below {min_count} ({frame.loc[bad[0], column]})")
            elif path.suffix == ".json" and path.name not in EXEMPT_JSON:
                for key, value in _json_counts(json.loads(text)):
                    if value != 0 and _small(value, min_count):
                        problems.append(f"{path}: {key} = {value}: count below {min_count}")
    return problems


def complementary_suppression(table: pd.DataFrame, by: list[str], count: str, blank: list[str]) -> pd.DataFrame:
    """Secondary suppression across the levels of a variable: where exactly one level's
    ``count`` is withheld, its value would follow from the published total minus the other
    levels, so the next smallest level is withheld too (``blank``: its columns to clear).
    Tables whose levels do not add up to a published total are left as they are by not
    calling this."""
    out = table.copy()
    if out.empty:
        return out
    columns = [c for c in blank if c in out]
    for _, rows in out.groupby(by, sort=False, dropna=False):
        withheld = rows[count].isna()
        if withheld.sum() == 1 and (~withheld).any():
            smallest = rows.loc[~withheld, count].astype(float).idxmin()
            out.loc[smallest, columns] = np.nan
    return out


def complementary_at_risk(curves: pd.DataFrame, levels: dict[str, list[str]], overall_end: float,
                          time: str = "time_days", count: str = "at_risk") -> pd.DataFrame:
    """Secondary suppression for curves by group: each group's curve stops where fewer than
    the threshold remain at risk (or is not shown at all). From then on, the overall number
    at risk minus the other groups' would give the first stopped group's; so the group with
    the fewest at risk at that moment has its at-risk counts withheld from then on too (its
    curve stays). Applied once per variable: with two groups withheld, each is unknown."""
    out = curves.copy()
    for variable, names in levels.items():
        if len(names) < 2:
            continue
        rows = out["variable"] == variable
        last = {}
        for name in names:
            times = out.loc[rows & (out["level"] == name), time]
            last[name] = float(times.max()) if len(times) else -np.inf
        first = min(last.values())
        stopped = [n for n, t in last.items() if t == first]
        if first >= overall_end or len(stopped) > 1:
            continue

        def at_risk_then(name: str) -> float:
            own = out[rows & (out["level"] == name)]
            before = own[own[time] <= first]
            return float(before[count].iloc[-1]) if len(before) else float(own[count].iloc[0])

        companion = min((n for n in names if n not in stopped), key=at_risk_then)
        out.loc[rows & (out["level"] == companion) & (out[time] > first), count] = np.nan
    return out
