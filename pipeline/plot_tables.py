"""Plot tables for ``dvc plots``: long form, one row per (x, series) that has a value.

Why: Vega-Lite, which draws ``dvc plots``, reads an empty CSV cell as 0, so a value
withheld (a count below ``disclosure.min_cell_count``) or a curve stopped (fewer than that
at risk) was drawn as a drop to zero. In long form a series has no row where it has no
value: its line ends where its data end, or joins its neighbours across a withheld point,
and never falls to zero. Wide form cannot do this when the series of one plot end at
different places (the open share of repeat plans stops before that of all plans; the
model's net benefit is withheld where the "flag all" line is not).

Columns: ``x, series, value`` and, for a curve with people at risk, ``at_risk`` (the number
still followed at x). ``series`` holds the name the series had as a column of the wide
table, so ``wide_form`` gives the wide table back (NaN where a series has no row), as the
report's figures read it. Every cell is filled: an at-risk count withheld by secondary
suppression (``disclosure.complementary_at_risk``) while its curve goes on is the word
``withheld``. DVC draws these files with the ``series`` template (``.dvc/plots/series.json``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.nonparametric import DAYS_PER_MONTH, step_read

SERIES = "series"
AT_RISK = "at_risk"
WITHHELD = "withheld"


def at_risk_at(times, at_risk, at) -> np.ndarray:
    """The number at risk at each of ``at``: that of the first published time at or after it
    (a Kaplan-Meier table lists every distinct time, censored ones too, so no one leaves in
    between; as ``survival.at_horizons``). NaN past the last published time, where the curve
    was cut because fewer than the threshold remained, and where the count is withheld."""
    times = np.asarray(times, dtype=float)
    counts = np.asarray(at_risk, dtype=float)
    at = np.atleast_1d(np.asarray(at, dtype=float))
    out = np.full(len(at), np.nan)
    index = np.searchsorted(times, at, side="left")
    inside = index < len(times)
    out[inside] = counts[index[inside]]
    return out


def _counts(values) -> list:
    return [WITHHELD if pd.isna(v) else int(v) for v in values]


def long_form(wide: pd.DataFrame, x: str, series: Sequence[str], value: str, at_risk=None) -> pd.DataFrame:
    """The columns ``series`` of ``wide`` stacked as rows ``(x, series, value[, at_risk])``, series
    by series in the order given; rows without a value are left out. ``at_risk``: the number at
    risk at each row of ``wide`` (NaN: withheld)."""
    frame = wide[[x, *series]].copy()
    keep = [x]
    if at_risk is not None:
        frame[AT_RISK] = np.asarray(at_risk, dtype=float)
        keep.append(AT_RISK)
    long = frame.melt(id_vars=keep, value_vars=list(series), var_name=SERIES, value_name=value)
    long = long[long[value].notna()].reset_index(drop=True)
    columns = [x, SERIES, value]
    if at_risk is not None:
        long[AT_RISK] = pd.Series(_counts(long[AT_RISK]), index=long.index, dtype=object)
        columns.append(AT_RISK)
    return long[columns]


def step_series(curve: pd.DataFrame, name: str, grid_months, value: str, before: float, column: str,
                time: str = "time_days") -> pd.DataFrame:
    """One Kaplan-Meier-type curve (``curve[column]`` a right-continuous step in ``curve[time]``
    days, with ``at_risk``) read at each of ``grid_months`` as series ``name`` of a long table:
    ``before`` ahead of its first time, rows only up to its last published time (none for a
    curve with no published row), each with the number at risk then."""
    grid = np.asarray(grid_months, dtype=float)
    days = grid * DAYS_PER_MONTH
    if curve.empty:
        values = np.full(len(grid), np.nan)
    else:
        values = step_read(curve[time], curve[column], days, before, "nan")
    wide = pd.DataFrame({"time_months": grid, name: values})
    return long_form(wide, "time_months", [name], value, at_risk_at(curve[time], curve[AT_RISK], days))


def wide_form(long: pd.DataFrame, x: str, value: str, series: Sequence[str] = ()) -> pd.DataFrame:
    """A long plot table back in wide form: one column per series (those named in ``series``,
    in that order, or else every series in order of first appearance), NaN where a series has
    no row; no rows for an empty table."""
    if long.empty:
        return pd.DataFrame(columns=[x, *series])
    names = list(series) if series else list(dict.fromkeys(long[SERIES]))
    wide = long.pivot(index=x, columns=SERIES, values=value).reindex(columns=names).reset_index()
    wide.columns.name = None
    return wide
