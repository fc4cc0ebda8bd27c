"""Disclosure checks on everything the pipeline publishes (``reports/``, ``metrics/``).

Rule (``disclosure.min_cell_count``, default 10): a count of children, families,
referrals or plans below the threshold is withheld (blank in CSV, null in JSON, a dash
in the report), and so is any cell from which it could be recovered by subtraction
(each stage withholds the linked cells with it: the four cells of an error table, a
group's events with its size, ...).

``scan`` is the independent check: it reads every CSV, JSON, Markdown and HTML file
under the given folders and reports (a) any child, family or referral identifier of the
input, raw or pseudonymised, and (b) any count column or key holding a value in
[1, min_count) ... or 0 where zero itself would disclose (counts of people in a group).
Which columns are counts is declared here, in one place (``COUNT_NAMES``).

Data-processing tallies in ``metrics/clean.json`` (rows read, kept, rejected by reason,
normalised) count records of the extract, not people with an attribute; they are
published so that the reconciliation rows in = kept + rejected can be checked, and are
exempt (``EXEMPT_JSON``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

# Column names (CSV) and keys (JSON) that hold counts of people or referrals.
COUNT_NAMES = frozenset({
    "n", "events", "plans", "ended", "plans_ended", "at_risk", "tp", "fp", "fn", "tn", "flagged",
    "observed_events", "children", "families", "referrals", "index_referrals", "count",
    "development_rows", "validation_rows", "development_families", "validation_families", "kept",
    "events_within_horizon", "rows", "censored_before_horizon", "without_possible_follow_up",
    "validation_referrals", "same_episode_reports", "open_at_extract", "no_follow_up",
    "censored_extract_date", "censored_age_18", "censored_entered_care",
})
EXEMPT_JSON = frozenset({"clean.json"})
ID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{4,}")


def _small(value: Any, min_count: int) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return v == v and 0 <= v < min_count and float(v).is_integer()


def _json_counts(obj: Any, key: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_counts(v, f"{key}.{k}" if key else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_counts(v, f"{key}[{i}]")
    elif key.rsplit(".", 1)[-1] in COUNT_NAMES:
        yield key, obj


def scan(folders: list[Path], min_count: int, identifiers: set[str]) -> list[str]:
    """Problems found: one line each (file, where, what)."""
    problems = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".md", ".html")):
            text = path.read_text(encoding="utf-8", errors="replace")
            leaked = sorted(set(ID_PATTERN.findall(text)) & identifiers)
            if leaked:
                problems.append(f"{path}: identifier(s) of the input: {', '.join(leaked[:5])}")
            if path.suffix == ".csv":
                frame = pd.read_csv(path)
                for column in frame.columns:
                    if column in COUNT_NAMES:
                        bad = frame.index[frame[column].map(lambda v: _small(v, min_count))]
                        if len(bad):
                            problems.append(f"{path}: column {column}, rows {', '.join(str(i + 2) for i in bad[:5])}: "
                                            f"count below {min_count} ({frame.loc[bad[0], column]})")
            elif path.suffix == ".json" and path.name not in EXEMPT_JSON:
                for key, value in _json_counts(json.loads(text)):
                    if _small(value, min_count):
                        problems.append(f"{path}: {key} = {value}: count below {min_count}")
    return problems


def complementary_suppression(table: pd.DataFrame, by: list[str], count: str, blank: list[str]) -> pd.DataFrame:
    """Secondary suppression across the levels of a variable: where exactly one level's
    ``count`` is withheld, its value would follow from the published total minus the other
    levels, so the next smallest level is withheld too (``blank``: its columns to clear).
    Tables whose levels do not add up to a published total are left as they are by not
    calling this."""
    out = table.copy()
    columns = [c for c in blank if c in out]
    for _, rows in out.groupby(by, sort=False, dropna=False):
        withheld = rows[count].isna()
        if withheld.sum() == 1 and (~withheld).any():
            smallest = rows.loc[~withheld, count].astype(float).idxmin()
            out.loc[smallest, columns] = np.nan
    return out
