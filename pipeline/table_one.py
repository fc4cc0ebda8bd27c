"""Table 1: who the analysed rows are, by split and by outcome (TRIPOD+AI items 16 and 25).

``table_one(rows, groups, variables, min_count)`` describes ``rows`` in each group (a
boolean mask over the rows; a row may sit in several groups): one output row per group,
variable and level, in long form::

    group, variable, level, statistic, n, percent, median, lower_quartile, upper_quartile

* the group's size: variable ``rows``, level ``all``;
* a text variable (sex, ethnicity, local authority, age band, ...): ``n`` and ``percent``
  of the group at each level, ``missing`` for rows without a value (so a variable's levels
  add up to the group's size);
* a 0/1 variable (a factor): ``n`` and ``percent`` without and with the factor (levels
  ``0`` and ``1``; the report shows ``1``), and ``missing`` when any row has no value;
* any other numeric variable: level ``recorded``, its ``n`` the rows with a value and the
  ``median`` with the ``lower_quartile`` and ``upper_quartile`` (numpy's linear
  interpolation, R's ``quantile(type = 7)``), and ``missing`` as for a factor.

Percentages are of the group's size, to one decimal.

Disclosure (``disclosure.min_cell_count``, ``pipeline/disclosure.py``). Primary: a count
below ``min_count`` (zero included) is withheld with its percentage, and a median and
quartiles of fewer than ``min_count`` rows are withheld. Secondary, repeated until nothing
changes, since each step can call for the other:

* across the levels of a variable within a group, which add up to the group's size:
  ``disclosure.complementary_suppression`` (one withheld level would be the size minus the
  others, so the next smallest is withheld too);
* across groups that partition another (development + validation = all rows; with the
  outcome + without = all rows: ``partitions``): where one part's count is withheld and
  the whole's is not, the other part's count is withheld too, or it would be the whole
  minus the published part.

Every group has every level of a variable (a level absent from a group is a zero, withheld),
so the levels always add up to the group's size. No identifier is ever a variable (``IDENTIFIERS``, any ``*_id``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from pipeline.disclosure import complementary_suppression

COLUMNS = ["group", "variable", "level", "statistic", "n", "percent", "median", "lower_quartile", "upper_quartile"]
IDENTIFIERS = frozenset({"index_referral_id", "child_id", "family_id", "referral_id", "plan_id", "subject_id"})
# Described first, in this order, when present; then the model's groups and covariates.
PREFERRED_ORDER = ("age_years", "age_band", "sex", "ethnicity", "la_code", "prior_referrals", "prior_referrals_band")
MISSING = "missing"


def empty() -> pd.DataFrame:
    """Table 1 with its header and no rows (a stage that has no rows to describe)."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("group", "variable", "level", "statistic") else float)
                         for c in COLUMNS})


def variables_to_describe(columns: pd.Index | list[str], settings: dict[str, Any]) -> list[str]:
    """Which columns Table 1 describes: the case-level characteristics first
    (``PREFERRED_ORDER``), then the model's groups, categorical covariates and covariates;
    only those present, never an identifier."""
    names = [*PREFERRED_ORDER, *settings.get("groups", []), *settings.get("categorical", []),
             *settings.get("covariates", [])]
    present = set(columns)
    return [n for n in dict.fromkeys(names) if n in present and n not in IDENTIFIERS and not n.endswith("_id")]


def level_key(level: str) -> tuple[int, float, str]:
    """Levels in reading order: ``under_1`` before ``1_4`` before ``10_15`` (by their first
    number; ``under`` first), ``3+`` after ``2``; levels without a number alphabetically
    after those with one; ``missing`` last."""
    if level == MISSING:
        return (2, 0.0, "")
    number = re.search(r"\d+(\.\d+)?", level)
    if number is None:
        return (1, 0.0, level)
    return (0, float(number.group()) - (0.5 if level.lower().startswith("under") else 0.0), level)


def _kind(values: pd.Series) -> str:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "levels"
    return "flag" if values.dropna().isin([0, 1]).all() else "median"


def _levels(values: pd.Series, kind: str) -> list[str]:
    """Every level of a variable over all the rows (each group gets each, zeros included, so
    that a level absent from one group is a withheld zero, not a missing row)."""
    if kind == "median":
        levels = ["recorded"]
    elif kind == "flag":
        levels = ["0", "1"]
    else:
        levels = sorted(values.dropna().astype(str).unique(), key=level_key)
    return levels + ([MISSING] if values.isna().any() else [])


def _describe(values: pd.Series, variable: str, kind: str, levels: list[str], min_count: int
              ) -> list[dict[str, Any]]:
    """One group's rows for one variable (before any suppression)."""
    size = len(values)
    present = values.dropna()
    if kind == "median":
        counts = {"recorded": len(present)}
    else:
        counts = (present.astype(int) if kind == "flag" else present).astype(str).value_counts().to_dict()
    counts[MISSING] = int(values.isna().sum())
    out = []
    for level in levels:
        row = {"variable": variable, "level": level, "statistic": "n_percent", "n": int(counts.get(level, 0))}
        if level == "recorded":
            q = (np.percentile(present.astype(float), [50, 25, 75]) if len(present) >= min_count
                 else [np.nan] * 3)
            row.update(statistic="median_iqr", median=q[0], lower_quartile=q[1], upper_quartile=q[2])
        row["percent"] = 100 * row["n"] / size if size else np.nan
        out.append(row)
    return out


def table_one(rows: pd.DataFrame, groups: dict[str, pd.Series], variables: list[str], min_count: int,
              partitions: list[tuple[str, str, str]] = ()) -> pd.DataFrame:
    """Table 1 in long form (see the module docstring), suppressed for disclosure.

    ``groups``: name -> boolean mask aligned with ``rows``, in column order;
    ``partitions``: (whole, part, other part) triples of group names whose parts add up to
    the whole."""
    leaked = [v for v in variables if v in IDENTIFIERS or v.endswith("_id")]
    if leaked:
        raise ValueError(f"Table 1 never describes an identifier: {', '.join(leaked)}")
    kinds = {v: _kind(rows[v]) for v in variables}
    levels = {v: _levels(rows[v], kinds[v]) for v in variables}
    records = []
    for group, mask in groups.items():
        members = rows.loc[np.asarray(mask, dtype=bool)]
        records.append({"group": group, "variable": "rows", "level": "all", "statistic": "n_percent",
                        "n": len(members), "percent": 100.0 if len(members) else np.nan})
        for variable in variables:
            records += [{"group": group, **r} for r in _describe(members[variable], variable, kinds[variable],
                                                                   levels[variable], min_count)]
    if not records:
        return empty()
    table = pd.DataFrame(records).reindex(columns=COLUMNS)
    table["n"] = table["n"].astype(float)
    table = suppress(table, min_count, partitions).reset_index(drop=True)
    table["percent"] = table["percent"].round(1)
    return table[COLUMNS]


def suppress(table: pd.DataFrame, min_count: int, partitions: list[tuple[str, str, str]] = ()) -> pd.DataFrame:
    """Primary, then secondary suppression until nothing changes (module docstring)."""
    out = table.copy()
    small = out["n"] < min_count
    out.loc[small, ["n", "percent"]] = np.nan
    while True:
        before = out["n"].isna().sum()
        out = complementary_suppression(out, ["group", "variable"], "n", ["n", "percent"])
        keyed = out.set_index(["group", "variable", "level"])["n"]
        for whole, part, other in partitions:
            for (group, variable, level), value in keyed.items():
                if group != part:
                    continue
                pair = (other, variable, level)
                whole_value = keyed.get((whole, variable, level), np.nan)
                other_value = keyed.get(pair, np.nan)
                if pd.isna(whole_value) or pd.isna(value) == pd.isna(other_value):
                    continue
                withheld_not = (other, variable, level) if pd.isna(value) else (part, variable, level)
                at = ((out["group"] == withheld_not[0]) & (out["variable"] == variable) & (out["level"] == level))
                out.loc[at, ["n", "percent"]] = np.nan
        if out["n"].isna().sum() == before:
            return out


def describe_split(development: pd.DataFrame, validation: pd.DataFrame, settings: dict[str, Any], min_count: int
                   ) -> pd.DataFrame:
    """Table 1 of the logistic model's rows: all of them, the development and validation
    rows, and those with and without the outcome at the horizon (``y``). With out-of-fold
    validation (``grouped_kfold``: the same rows develop and validate) there are no
    development and validation columns."""
    from pipeline.design import with_groups

    same = development is validation
    rows = with_groups(development if same else pd.concat([development, validation], ignore_index=True))
    if rows.empty:
        return empty()
    y = rows["y"].to_numpy()
    groups = {"all": np.ones(len(rows), dtype=bool)}
    partitions = [("all", "outcome", "no_outcome")]
    if not same:
        groups["development"] = np.arange(len(rows)) < len(development)
        groups["validation"] = ~groups["development"]
        partitions.insert(0, ("all", "development", "validation"))
    groups.update(outcome=y == 1, no_outcome=y == 0)
    return table_one(rows, groups, variables_to_describe(rows.columns, settings), min_count, partitions)
