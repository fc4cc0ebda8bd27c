"""``durations`` stage: how long child protection plans last, for local-authority planners.

From case-level plans (``data/analysis/cpp_durations.parquet``): Kaplan-Meier curves of
the share of plans still open by time since start, overall and by LA, category, age band
at start and first vs repeat plan (lifelines, log(-log) 95% CIs); the median length with
its CI (where the CI curves cross one half, by R's rule: see ``km_quantile``); the share
still open at 3, 6, 12 and 24 months; the share lasting two years or more (S at 24
months); a log-rank test across LAs; and a table comparing LAs.

From **published banded counts** (plans ended in a year by length band, as DfE publishes
them), the same quantities treating each band as an interval-censored observation: the
Turnbull NPMLE (``pipeline.nonparametric.turnbull``; with the DfE bands it puts each
band's share on that band, so shares open at the band edges 3, 6, 12 and 24 months are
exact) and an interval-censored Weibull fit (``weibull_interval_fit``) for a smooth median
with a 95% CI; per LA and year, pooled across years, and for all LAs (``banded_estimates``).
Counts of plans *ended* in a year describe completed plans, not a start cohort.

The file is DfE's table as downloaded from explore-education-statistics ("Children in
need", data set "D7 Child Protection Plans ending during the year by duration and local
authority"; field map and source in ``pipeline/formats/dfe_plan_durations.yaml``), or the
project's long layout::

    la_code,year,band,plans_ended
    E09000001,2025,<=3 months,25
    E09000001,2025,3 months or less,25     (DfE's labels work too; markers c, z, x, low, ...)

It lives in ``data/raw/banded/`` (``BANDED_FOLDER``), which the DVC stage always depends
on, and ``durations.banded_counts`` names it (a file name in that folder). Without a file
the stage builds the table from the case-level plans that ended in the 12 months to the
extract date, so both routes can be compared.

Disclosure: DfE's published counts are public and are shown as published; counts the
pipeline derives from case-level data follow ``disclosure.min_cell_count`` (see
``banded_estimates``).

No plans in the input (a prepared survival table, an extract without plans): the stage
writes its tables with their header and no rows (the declared outputs exist, nothing from
an earlier input is left behind) and ``metrics/durations.json`` says ``"status": "no plans
in this input"``; the banded tables are still made when a published file is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lifelines.statistics import multivariate_logrank_test

from pipeline import config
from pipeline.cli import InputError, stage_entry
from pipeline.disclosure import complementary_at_risk, complementary_suppression
from pipeline.plot_tables import WITHHELD
from pipeline.formats import field_map
from pipeline.io import read_table, write_csv, write_json
from pipeline.nonparametric import (
    DAYS_PER_MONTH,
    kaplan_meier,
    km_quantile,
    step_read,
    turnbull,
)
from pipeline.published import CPP_DURATION_BAND_EDGES_DAYS, CPP_DURATION_BANDS
from pipeline.schema import years_before

REPORTS = Path("reports/durations")
GROUPS = ("la_code", "category", "age_band_at_start", "plan_sequence")
BAND_INTERVALS = dict(zip(CPP_DURATION_BANDS, zip((0, *CPP_DURATION_BAND_EDGES_DAYS),
                                                  (*CPP_DURATION_BAND_EDGES_DAYS, np.inf))))


def km_summary(duration: pd.Series, ended: pd.Series, horizons_months: list[float], min_count: int
               ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Median (CI), share open at each horizon (CI) and the KM curve, for one group."""
    n = len(duration)
    row: dict[str, Any] = {"plans": n if n >= min_count else np.nan,
                           "ended": int(ended.sum()) if ended.sum() >= min_count else np.nan}
    if n < min_count:
        return row, pd.DataFrame()
    km = kaplan_meier(duration, ended)
    t = km["time_days"].to_numpy()
    row["median_days"] = km_quantile(t, km["survival"])
    row["median_lower"] = km_quantile(t, km["survival_lower"])
    row["median_upper"] = km_quantile(t, km["survival_upper"])
    for m in horizons_months:
        for suffix, col in (("", "survival"), ("_lower", "survival_lower"), ("_upper", "survival_upper")):
            row[f"open_at_{m}m{suffix}"] = float(step_read(km["time_days"], km[col], m * DAYS_PER_MONTH, 1.0)[0])
    row["lasting_2y_plus"] = row.get("open_at_24m")
    curve = km.rename(columns={"survival": "open_share", "survival_lower": "lower", "survival_upper": "upper"})
    curve = curve[curve["at_risk"] >= min_count]
    curve.insert(1, "time_months", (curve["time_days"] / DAYS_PER_MONTH).round(3))
    return row, curve


def complementary_on_grid(plot: pd.DataFrame, parts: list[str]) -> pd.DataFrame:
    """Secondary suppression at each time of a plot table whose ``parts`` series add up to
    a published total (first + repeat plans = all plans): where exactly one part's number at
    risk is withheld at a time, the other parts' are withheld there too, else the total minus
    them gives it. (``complementary_at_risk`` withholds from the time a part's curve stops;
    a grid time just before it reads the number at risk over the gap, found at a 10M-children
    run by the outputs stage's secondary-suppression check.)"""
    out = plot.copy()
    rows = out["series"].isin(parts)
    withheld = rows & (out["at_risk"] == WITHHELD)
    shown = rows & (out["at_risk"] != WITHHELD)
    lone = withheld.groupby(out["time_months"]).transform("sum").eq(1)
    out.loc[shown & lone, "at_risk"] = WITHHELD
    return out


def planner_tables(plans: pd.DataFrame, horizons_months: list[float], min_count: int
                   ) -> dict[str, pd.DataFrame]:
    rows, curves = [], []
    summary, curve = km_summary(plans["duration_days"], plans["ended"], horizons_months, min_count)
    rows.append({"variable": "all", "level": "all", **summary})
    curves.append(curve.assign(variable="all", level="all"))
    for var in GROUPS:
        for level, sub in plans.groupby(plans[var].astype(str), sort=True):
            summary, curve = km_summary(sub["duration_days"], sub["ended"], horizons_months, min_count)
            rows.append({"variable": var, "level": level, **summary})
            if not curve.empty:
                curves.append(curve.assign(variable=var, level=level))
    summary_table = complementary_suppression(pd.DataFrame(rows), ["variable"], "plans", ["plans", "ended"])
    summary_table = complementary_suppression(summary_table, ["variable"], "ended", ["ended"])
    la = summary_table[summary_table["variable"] == "la_code"].drop(columns="variable").rename(
        columns={"level": "la_code"})
    repeat = plans.groupby("la_code")["plan_sequence"].apply(lambda s: (s != "first").mean())
    sizes = plans.groupby("la_code").size()
    repeats = (repeat * sizes).round()
    # share x plans would give the repeat count: withheld when either side is small
    la["repeat_plan_share"] = la["la_code"].map(repeat.where((repeats >= min_count) & (sizes - repeats >= min_count)))
    overall = summary_table.iloc[0]
    la["median_vs_all_days"] = la["median_days"] - overall["median_days"]
    tests = []
    for var in GROUPS:
        if plans[var].nunique() > 1:
            t = multivariate_logrank_test(plans["duration_days"], plans[var].astype(str), plans["ended"])
            tests.append({"variable": var, "groups": int(plans[var].nunique()), "chisq": t.test_statistic,
                          "df": int(plans[var].nunique() - 1), "p": t.p_value})
    cols = ["variable", "level", "time_days", "time_months", "at_risk", "open_share", "lower", "upper"]
    curves_table = pd.concat(curves, ignore_index=True)[cols]
    overall_end = float(curves_table.loc[curves_table["variable"] == "all", "time_days"].max())
    curves_table = complementary_at_risk(curves_table, {v: sorted(plans[v].astype(str).unique()) for v in GROUPS},
                                         overall_end)
    # Long form for dvc plots (pipeline.plot_tables): a curve ends where it was cut, with the number at risk.
    from pipeline.plot_tables import step_series

    grid = np.arange(0, 60.25, 0.5)
    plot = []
    for var, level, name in (("all", "all", "all_plans"), ("plan_sequence", "first", "first_plans"),
                             ("plan_sequence", "second_or_subsequent", "repeat_plans")):
        c = curves_table[(curves_table["variable"] == var) & (curves_table["level"] == level)]
        plot.append(step_series(c, name, grid, "open_share", 1.0, "open_share"))
    return {"plot_open_share": complementary_on_grid(pd.concat(plot, ignore_index=True),
                                                     ["first_plans", "repeat_plans"]),
            "planner_summary": summary_table,
            "la_comparison": la.reset_index(drop=True),
            "km_curves": curves_table, "logrank": pd.DataFrame(tests)}


def bands_from_plans(plans: pd.DataFrame, extract_date: pd.Timestamp) -> pd.DataFrame:
    """The DfE D7 layout built from case-level plans ended in the 12 months to the extract."""
    ended = plans[(plans["ended"] == 1) & (plans["end_date"] > years_before(extract_date))]
    edges = np.array(CPP_DURATION_BAND_EDGES_DAYS)
    band = np.array(CPP_DURATION_BANDS)[np.searchsorted(edges, ended["duration_days"].to_numpy(), side="left")]
    counts = (pd.DataFrame({"la_code": ended["la_code"].to_numpy(), "band": band})
              .groupby(["la_code", "band"]).size().rename("plans_ended").reset_index())
    full = pd.MultiIndex.from_product([sorted(plans["la_code"].unique()), CPP_DURATION_BANDS],
                                      names=["la_code", "band"])
    counts = counts.set_index(["la_code", "band"]).reindex(full, fill_value=0).reset_index()
    counts.insert(1, "year", extract_date.year)
    return counts


# ---------------------------------------------------------------------------------------
# Banded counts: DfE's published table (or the project's long layout) -> estimates.
# ---------------------------------------------------------------------------------------

BANDED_FOLDER = Path("data/raw/banded")
BAND_EDGES = np.array(CPP_DURATION_BAND_EDGES_DAYS, dtype=float)
BAND_LOWER = np.r_[0.0, BAND_EDGES]
BAND_UPPER = np.r_[BAND_EDGES, np.inf]
Z95 = 1.959963984540054


def _where(path: Path, row: int) -> str:
    """``file: row N (line N+1)``: data rows are numbered from 1 after the header."""
    return f"{path}: row {row} (line {row + 1})"


def _cell(value: Any, markers: dict[str, Any], where: str, field: str) -> tuple[float, str]:
    """(count, marker) of one published cell: a whole number >= 0, or one of DfE's markers."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    if text.lower() in markers:
        key = text.lower()
        return (0.0 if markers[key]["treat"] == "zero" else np.nan), key
    if text.isdigit():
        return float(text), ""
    raise InputError(f"{where}: {field}: {text!r} is neither a count nor a DfE marker "
                     f"({', '.join(markers)})")


def read_banded(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read published banded counts: (cells, totals, tallies).

    ``cells``: one row per LA, year and band (``la_code, la_name, year, band,
    plans_ended, marker``; ``plans_ended`` is NaN where DfE shows a marker instead of a
    number). ``totals``: one row per LA and year with DfE's published total of plans
    ended (NaN when not published, with its marker). Two layouts:

    * DfE's table as downloaded from explore-education-statistics (columns
      ``time_period, time_identifier, geographic_level, ..., new_la_code, la_name,
      CPP_End, 3_months_or_less, ...``; field map ``pipeline/formats/dfe_plan_durations.yaml``,
      which quotes the source). Only ``Local authority`` rows are used; National and
      Regional rows are counted and skipped.
    * the project's long layout ``la_code,year,band,plans_ended`` (optional ``la_name``),
      bands by the pipeline's labels, DfE's labels or DfE's column names; an optional row
      with band ``Total`` gives the published total.

    Markers (the YAML documents each): ``c``, ``low``, ``k``, ``u``, ``x`` and ``:`` mean
    plans whose number is not shown; ``z`` (not applicable) means none. Bad input raises a
    one-line ``InputError`` naming the file, the data row and the field.
    """
    spec = field_map("dfe_plan_durations")
    markers = {str(k).lower(): v for k, v in spec["markers"].items()}
    table = read_table(path)
    table.columns = [str(c).lstrip("\ufeff").strip() for c in table.columns]
    cols = spec["columns"]
    if cols["year"] in table.columns and cols["geographic_level"] in table.columns:
        return _read_dfe_layout(path, table, spec, markers)
    return _read_long_layout(path, table, spec, markers)


def _read_dfe_layout(path: Path, table: pd.DataFrame, spec: dict[str, Any], markers: dict[str, Any]
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    cols = spec["columns"]
    band_col = {}
    for band in CPP_DURATION_BANDS:
        found = [c for c, b in spec["band_columns"].items() if b == band and c in table.columns]
        if len(found) != 1:
            names = [c for c, b in spec["band_columns"].items() if b == band]
            raise InputError(f"{path}: header (line 1): {'no' if not found else 'more than one'} column for band "
                             f"'{band}' (expected one of {', '.join(names)}; pipeline/formats/dfe_plan_durations.yaml)")
        band_col[band] = found[0]
    total_col = next((c for c in cols["total"] if c in table.columns), None)
    if total_col is None:
        raise InputError(f"{path}: header (line 1): no total column (expected one of {', '.join(cols['total'])})")
    for key in ("la_code", "la_name", "time_identifier"):
        if cols[key] not in table.columns:
            raise InputError(f"{path}: header (line 1): missing column '{cols[key]}'")
    cells, totals, seen = [], [], {}
    skipped = 0
    for i, rec in enumerate(table.to_dict("records"), start=1):
        where = _where(path, i)
        level = (rec.get(cols["geographic_level"]) or "").strip()
        if level in spec["other_levels"]:
            skipped += 1
            continue
        if level != spec["local_authority_level"]:
            raise InputError(f"{where}: {cols['geographic_level']}: unknown level {level!r} (expected "
                             f"{spec['local_authority_level']!r} or one of {', '.join(spec['other_levels'])})")
        ident = (rec.get(cols["time_identifier"]) or "").strip()
        if ident not in spec["time_identifiers"]:
            raise InputError(f"{where}: {cols['time_identifier']}: {ident!r} is not one of "
                             f"{', '.join(spec['time_identifiers'])}")
        year_text = (rec.get(cols["year"]) or "").strip()
        if not (year_text.isdigit() and len(year_text) == 4):
            raise InputError(f"{where}: {cols['year']}: {year_text!r} is not a year (e.g. 2025)")
        la = (rec.get(cols["la_code"]) or "").strip() or (rec.get(cols["la_code_fallback"]) or "").strip()
        if not la:
            raise InputError(f"{where}: {cols['la_code']}: blank (and no {cols['la_code_fallback']})")
        key = (la, int(year_text))
        if key in seen:
            raise InputError(f"{where}: {cols['la_code']}, {cols['year']}: {la} {year_text} already in row {seen[key]}")
        seen[key] = i
        name = (rec.get(cols["la_name"]) or "").strip()
        counts = {b: _cell(rec.get(c), markers, where, c) for b, c in band_col.items()}
        total, total_marker = _cell(rec.get(total_col), markers, where, total_col)
        _check_total(where, total_col, counts, total)
        cells += [{"la_code": la, "la_name": name, "year": key[1], "band": b, "plans_ended": n, "marker": m,
                   "source_row": i} for b, (n, m) in counts.items()]
        totals.append({"la_code": la, "year": key[1], "total": total, "total_marker": total_marker, "source_row": i})
    if not cells:
        raise InputError(f"{path}: no '{spec['local_authority_level']}' rows")
    tallies = {"layout": "DfE explore-education-statistics table (one row per year and geography)",
               "rows_in": len(table), "rows_local_authority": len(seen), "rows_national_or_regional_skipped": skipped}
    return pd.DataFrame(cells), pd.DataFrame(totals), tallies


def _check_total(where: str, field: str, counts: dict[str, tuple[float, str]], total: float) -> None:
    known = sum(n for n, _ in counts.values() if not np.isnan(n))
    unknown = any(np.isnan(n) for n, _ in counts.values())
    if not np.isnan(total) and (known > total or (not unknown and known != total)):
        raise InputError(f"{where}: {field}: published total {total:.0f} but the bands "
                         f"{'shown ' if unknown else ''}add to {known:.0f}")


def _read_long_layout(path: Path, table: pd.DataFrame, spec: dict[str, Any], markers: dict[str, Any]
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    for col in ("la_code", "year", "band", "plans_ended"):
        if col not in table.columns:
            raise InputError(f"{path}: header (line 1): missing column '{col}' (layouts: "
                             f"la_code,year,band,plans_ended or DfE's table as downloaded)")
    labels = {str(k).strip().lower(): v for k, v in spec["band_labels"].items()}
    labels.update({str(k).strip().lower(): v for k, v in spec["band_columns"].items()})
    total_labels = {str(t).strip().lower() for t in spec["total_labels"]}
    rows, totals, seen = [], {}, {}
    for i, rec in enumerate(table.to_dict("records"), start=1):
        where = _where(path, i)
        la = (rec.get("la_code") or "").strip()
        if not la:
            raise InputError(f"{where}: la_code: blank")
        year_text = (rec.get("year") or "").strip()
        if not (year_text.isdigit() and len(year_text) == 4):
            raise InputError(f"{where}: year: {year_text!r} is not a year (e.g. 2025)")
        label = (rec.get("band") or "").strip()
        count, marker = _cell(rec.get("plans_ended"), markers, where, "plans_ended")
        key = (la, int(year_text))
        if label.lower() in total_labels:
            totals[key] = (count, marker, i)
            continue
        if label.lower() not in labels:
            raise InputError(f"{where}: band: unknown band {label!r}; expected one of {', '.join(CPP_DURATION_BANDS)} "
                             f"or DfE's labels (pipeline/formats/dfe_plan_durations.yaml)")
        band = labels[label.lower()]
        if (*key, band) in seen:
            raise InputError(f"{where}: band: {la} {year_text} {band!r} already in row {seen[(*key, band)]}")
        seen[(*key, band)] = i
        rows.append({"la_code": la, "la_name": (rec.get("la_name") or "").strip(), "year": key[1], "band": band,
                     "plans_ended": count, "marker": marker, "source_row": i})
    cells = pd.DataFrame(rows)
    total_rows = []
    for (la, year), sub in cells.groupby(["la_code", "year"], sort=False):
        missing = [b for b in CPP_DURATION_BANDS if b not in set(sub["band"])]
        if missing:
            raise InputError(f"{_where(path, int(sub['source_row'].iloc[0]))}: band: {la} {year} has no row for "
                             f"{', '.join(repr(b) for b in missing)}")
        known = sub["plans_ended"]
        if (la, year) in totals:
            total, marker, row = totals.pop((la, year))
            _check_total(_where(path, row), "plans_ended (Total)",
                         {b: (n, m) for b, n, m in zip(sub["band"], sub["plans_ended"], sub["marker"])}, total)
        elif known.notna().all():
            total, marker = float(known.sum()), ""       # every band shown: the total is their sum
        else:
            total, marker = np.nan, "not in file"
        total_rows.append({"la_code": la, "year": year, "total": total, "total_marker": marker})
    if totals:
        (la, year), (_, _, row) = next(iter(totals.items()))
        raise InputError(f"{_where(path, row)}: band: a Total for {la} {year} but no band rows")
    tallies = {"layout": "long (la_code,year,band,plans_ended)", "rows_in": len(table)}
    return cells, pd.DataFrame(total_rows), tallies


def band_allocations(cells: pd.DataFrame, totals: pd.DataFrame) -> pd.DataFrame:
    """Per LA and year: what the published cells say about the five band counts.

    A cell not shown (``c``, ``low``, ``k``, ``u``, ``x``, ``:``) is *not* a small count
    we may assume: DfE suppresses 1 to 5 and then further cells ("secondary suppression"),
    so a ``c`` can hide any number. What is known exactly is that the cells not shown add
    up to the published total minus the bands shown (R). So:

    * no cell hidden: the counts (``early == late``); status ``published``;
    * one cell hidden and the total published: that cell is R (exact);
    * several hidden and the total published: the counts are bounded by the two extreme
      allocations, all of R in the earliest hidden band (``early``: the shortest plans
      the data allow) or in the latest (``late``). Every share open at a band edge is
      monotone in the allocation, so its two values bound it exactly; the Weibull fit is
      given at both (its median is increasing in the allocation in practice, so these
      bound it too);
    * a cell hidden and no total published, or no plans: not estimable that year (the
      pooled row uses the other years and says so).
    """
    rows = []
    index = {k: v for k, v in zip(zip(totals["la_code"], totals["year"]), totals.itertuples(index=False))}
    for (la, year), sub in cells.groupby(["la_code", "year"], sort=True):
        sub = sub.set_index("band").reindex(list(CPP_DURATION_BANDS))
        n = sub["plans_ended"].to_numpy(dtype=float)
        hidden = np.isnan(n) & sub["marker"].fillna("").ne("").to_numpy()
        n = np.where(np.isnan(n) & ~hidden, 0.0, n)        # a band absent from derived counts: none ended
        tot = index.get((la, year))
        total = float(tot.total) if tot is not None else (np.nan if hidden.any() else float(np.nansum(n)))
        markers = ", ".join(sorted({m for m in sub["marker"].fillna("") if m}))
        names = sub["la_name"].dropna()
        row = {"la_code": la, "la_name": names.iloc[0] if len(names) else "", "year": int(year),
               "cells_not_shown": int(hidden.sum()), "markers": markers, "early": None, "late": None,
               "hidden": hidden}
        if hidden.any() and np.isnan(total):
            row["status"] = "not estimable: bands not shown and no published total"
        elif (0 if np.isnan(total) else total) == 0:
            row["status"] = "no plans ended (or none published)"
        else:
            rest = total - np.nansum(n[~hidden])
            early, late = n.copy(), n.copy()
            early[hidden], late[hidden] = 0.0, 0.0
            idx = np.flatnonzero(hidden)
            if len(idx):
                early[idx[0]] += rest
                late[idx[-1]] += rest
            row.update(early=early, late=late)
            row["status"] = ("published" if not len(idx) else
                             "one band not shown: the published total minus the other bands" if len(idx) == 1 else
                             f"{len(idx)} bands not shown: bounded by the published total")
        rows.append(row)
    return pd.DataFrame(rows)


def weibull_interval_fit(counts: np.ndarray) -> dict[str, float]:
    """Interval-censored Weibull MLE from counts in the DfE bands, with the median's 95% CI.

    S(t) = exp(-(t / scale)^shape); band k holds plans with length in (L_k, U_k] (L_1 = 0,
    U_5 = inf), so log L = sum_k n_k log(S(L_k) - S(U_k)), maximised over (log scale,
    log shape). Median = scale * log(2)^(1/shape); its CI by the delta method on the log
    median with the observed information (numerical Hessian), as R's
    ``survreg(Surv(l, r, type = "interval2") ~ 1, dist = "weibull", weights = n)``.
    Needs plans in at least two bands (else the MLE sits on the boundary): NaN otherwise.
    """
    from scipy.optimize import minimize

    n = np.asarray(counts, dtype=float)
    out = dict.fromkeys(("median", "median_lower", "median_upper", "shape", "scale"), np.nan)
    if (n > 0).sum() < 2:
        return out
    keep = n > 0
    lo, hi, w = BAND_LOWER[keep], BAND_UPPER[keep], n[keep]

    def nll(theta: np.ndarray) -> float:
        scale, shape = np.exp(theta)
        a = (lo / scale) ** shape                       # -log S(L)
        b = np.where(np.isinf(hi), np.inf, (np.where(np.isinf(hi), 1.0, hi) / scale) ** shape)
        with np.errstate(divide="ignore"):
            logp = -a + np.where(np.isinf(b), 0.0, np.log(-np.expm1(-(b - a))))
        return float(-(w * logp).sum())

    mid = np.where(np.isinf(hi), lo * 1.5, (lo + hi) / 2)
    start = np.array([np.log(np.average(mid, weights=w)), 0.0])
    fit = minimize(nll, start, method="BFGS", options={"gtol": 1e-9})
    fit = minimize(nll, fit.x, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    theta = fit.x
    h = 1e-4
    hess = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
            hess[i, j] = (nll(theta + ei + ej) - nll(theta + ei - ej) - nll(theta - ei + ej)
                          + nll(theta - ei - ej)) / (4 * h * h)
    scale, shape = np.exp(theta)
    log_median = theta[0] + np.log(np.log(2)) / shape
    out.update(median=float(np.exp(log_median)), shape=float(shape), scale=float(scale))
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return out
    grad = np.array([1.0, -np.log(np.log(2)) / shape])
    var = float(grad @ cov @ grad)
    if var > 0:
        se = np.sqrt(var)
        out.update(median_lower=float(np.exp(log_median - Z95 * se)), median_upper=float(np.exp(log_median + Z95 * se)))
    return out


def _open_share(counts: np.ndarray, months: float) -> float:
    """Turnbull estimate of the share of ended plans longer than ``months`` (at a band edge)."""
    keep = counts > 0
    npmle = turnbull(BAND_LOWER[keep], BAND_UPPER[keep], counts[keep])
    t = months * DAYS_PER_MONTH
    # S is identified at the band edges; between them the NPMLE is not unique.
    at_edge = npmle[npmle["right"] <= t + 1]
    return float(at_edge["survival_after"].iloc[-1]) if len(at_edge) else 1.0


def _estimate_row(early: np.ndarray, late: np.ndarray, horizons_months: list[float],
                  hidden: np.ndarray | None = None) -> dict[str, Any]:
    """Shares, Turnbull and Weibull estimates at both allocations; a point value where they agree.

    A band DfE did not show gets no share of its own even when the published total fixes it
    (one hidden band): the pipeline does not print a value DfE chose not to print.
    """
    row: dict[str, Any] = {}
    total = float(early.sum())
    hidden = np.zeros(len(early), dtype=bool) if hidden is None else np.asarray(hidden, dtype=bool)
    for band, a, b, h in zip(CPP_DURATION_BANDS, early, late, hidden):
        row[f"share_{_band_key(band)}"] = a / total if a == b and not h else np.nan
    for m in horizons_months:
        s = sorted((_open_share(early, m), _open_share(late, m)))
        key = f"turnbull_open_at_{m}m"
        row[key] = s[0] if np.isclose(s[0], s[1], rtol=0, atol=1e-12) else np.nan
        row[f"{key}_low"], row[f"{key}_high"] = s
    fits = [weibull_interval_fit(early)] + ([weibull_interval_fit(late)] if not np.array_equal(early, late) else [])
    medians = [f["median"] for f in fits]
    row["weibull_median_days"] = medians[0] if len(fits) == 1 else np.nan
    row["weibull_median_low"], row["weibull_median_high"] = min(medians), max(medians)
    row["weibull_median_lower95"] = min(f["median_lower"] for f in fits)
    row["weibull_median_upper95"] = max(f["median_upper"] for f in fits)
    row["weibull_shape"] = fits[0]["shape"] if len(fits) == 1 else np.nan
    row["weibull_scale_days"] = fits[0]["scale"] if len(fits) == 1 else np.nan
    return row


def _band_key(band: str) -> str:
    return {"<=3 months": "3m_or_less", "3-6 months": "3m_to_6m", "6 months-1 year": "6m_to_1y",
            "1-2 years": "1y_to_2y", "2+ years": "2y_or_more"}[band]


def banded_estimates(cells: pd.DataFrame, totals: pd.DataFrame | None, horizons_months: list[float],
                     min_count: int, published: bool) -> pd.DataFrame:
    """Turnbull and Weibull estimates per LA and year, pooled across years, and for all LAs.

    Rows: each LA and year (``basis`` = ``year``); each LA pooled over its years
    (``basis`` = ``pooled``: the years' counts added, which assumes the same length
    distribution each year; ``years`` lists those used and ``status`` those left out); and
    ``all`` (the sum of the LA rows, per year and pooled; not DfE's England figure, which is
    rounded to the nearest 10). Where cells are not shown (``band_allocations``) each
    estimate has ``_low``/``_high`` bounds and its point value is blank unless they agree.

    Disclosure. ``published=True``: the counts are DfE's published figures, public already;
    they are shown and used as published (``published_plans_ended``), not suppressed again:
    ``disclosure.min_cell_count`` is the rule for counts the pipeline derives from case-level
    data, and re-suppressing DfE's cells would only throw away public information.
    ``published=False`` (bands built from the extract's plans): an LA-year with a band
    below ``min_count`` gets no estimates (its total, Turnbull shares and even its Weibull
    fit, whose score equations are linear in the counts, would give the band back), nor
    does its pooled row; the ``all`` rows then lose their total and are rounded (shares
    and shape to 2 decimals, days to whole days) so that all minus the published LAs
    cannot be solved for the withheld band.
    """
    if totals is None:
        totals = pd.DataFrame(columns=["la_code", "year", "total", "total_marker"])
    cells = cells.assign(**{c: cells.get(c, "") for c in ("la_name", "marker")})
    alloc = band_allocations(cells, totals)
    if not published:
        small = cells[(cells["plans_ended"] > 0) & (cells["plans_ended"] < min_count)]
        withheld = set(zip(small["la_code"], small["year"]))
    else:
        withheld = set()
    count_col = "published_plans_ended" if published else "plans_ended"
    rows: list[dict[str, Any]] = []

    def emit(la, name, year, basis, years_used, status, early, late, cells_not_shown, hide, hidden=None):
        row = {"la_code": la, "la_name": name, "year": year, "basis": basis, "years": years_used,
               "status": status, "cells_not_shown": cells_not_shown, count_col: np.nan}
        if early is not None and not hide:
            row[count_col] = float(early.sum())
            row.update(_estimate_row(early, late, horizons_months, hidden))
        rows.append(row)

    usable = alloc[alloc["early"].notna()] if len(alloc) else alloc
    for la, sub in alloc.groupby("la_code", sort=True):
        name = sub["la_name"].iloc[0]
        for r in sub.itertuples(index=False):
            hide = (la, r.year) in withheld
            status = (f"withheld: a band below {min_count} plans (counts derived from case-level data)"
                      if hide else r.status)
            emit(la, name, r.year, "year", str(r.year), status, r.early, r.late, r.cells_not_shown, hide, r.hidden)
        if len(sub) > 1:
            ok = sub[sub["early"].notna()]
            left_out = sub[sub["early"].isna()]
            status = "pooled: counts of the years listed added (same length distribution assumed each year)"
            if len(left_out):
                status += "; left out (not estimable): " + ", ".join(map(str, left_out["year"]))
            if ok["cells_not_shown"].sum():
                status += "; bounded: cells not shown in " + ", ".join(
                    str(y) for y, c in zip(ok["year"], ok["cells_not_shown"]) if c)
            hide = any((la, y) in withheld for y in sub["year"])
            if hide:
                status = f"withheld: a band below {min_count} plans in a year (counts derived from case-level data)"
            if len(ok):
                emit(la, name, pd.NA, "pooled", ", ".join(map(str, ok["year"])), status,
                     np.sum(list(ok["early"]), axis=0), np.sum(list(ok["late"]), axis=0),
                     int(ok["cells_not_shown"].sum()), hide, np.any(list(ok["hidden"]), axis=0))
            else:
                emit(la, name, pd.NA, "pooled", "", status, None, None, 0, True)
    all_rows = []
    years = sorted(alloc["year"].unique()) if len(alloc) else []
    groups = [(y, "year", usable[usable["year"] == y]) for y in years]
    if len(years) > 1:
        groups.append((pd.NA, "pooled", usable))
    for year, basis, sub in groups:
        excluded = sorted(set(alloc.loc[(alloc["early"].isna()) & ((alloc["year"] == year) if basis == "year"
                                                                    else True), "la_code"]))
        status = "sum of the LA rows" + (" of every year (pooled; same length distribution assumed each year)"
                                         if basis == "pooled" else "")
        if excluded:
            status += f"; LAs left out (not estimable): {len(excluded)} ({', '.join(excluded)})"
        if not len(sub):
            all_rows.append(len(rows))
            emit("all", "all LAs in the file", year, basis, "", status, None, None, 0, True)
            continue
        all_rows.append(len(rows))
        emit("all", "all LAs in the file", year, basis, ", ".join(map(str, sorted(sub["year"].unique()))), status,
             np.sum(list(sub["early"]), axis=0), np.sum(list(sub["late"]), axis=0),
             int(sub["cells_not_shown"].sum()), False)
    table = pd.DataFrame(rows)
    first = [*all_rows, *[i for i in range(len(table)) if i not in all_rows]]     # the all rows first
    table = table.iloc[first].reset_index(drop=True)
    all_rows = list(range(len(all_rows)))
    if withheld:     # the all rows while a derived count is withheld somewhere: no total, rounded
        for i in all_rows:
            table.loc[i, count_col] = np.nan
            table.loc[i, "status"] += f"; total withheld and estimates rounded (a band below {min_count} is withheld)"
        share_cols = [c for c in table.columns if c.startswith(("turnbull", "share_", "weibull_shape"))]
        day_cols = [c for c in table.columns if c.startswith(("weibull_median", "weibull_scale"))]
        table.loc[all_rows, share_cols] = table.loc[all_rows, share_cols].round(2)
        table.loc[all_rows, day_cols] = table.loc[all_rows, day_cols].round(0)
    order = ["la_code", "la_name", "year", "basis", "years", "status", "cells_not_shown", count_col]
    table = table[order + [c for c in table.columns if c not in order]]
    table["year"] = table["year"].astype("Int64")
    return table


def empty_planner_tables(horizons_months: list[float]) -> dict[str, pd.DataFrame]:
    """The case-level tables with their columns and no rows (an input without plans)."""
    per_group = ["plans", "ended", "median_days", "median_lower", "median_upper",
                 *[f"open_at_{m}m{s}" for m in horizons_months for s in ("", "_lower", "_upper")], "lasting_2y_plus"]
    columns = {
        "plot_open_share": ["time_months", "series", "open_share", "at_risk"],
        "planner_summary": ["variable", "level", *per_group],
        "la_comparison": ["la_code", *per_group, "repeat_plan_share", "median_vs_all_days"],
        "km_curves": ["variable", "level", "time_days", "time_months", "at_risk", "open_share", "lower", "upper"],
        "logrank": ["variable", "groups", "chisq", "df", "p"],
    }
    return {name: pd.DataFrame(columns=cols) for name, cols in columns.items()}


def banded_file(setting: str | None) -> Path | None:
    """``durations.banded_counts``: a file in ``data/raw/banded/`` (the folder DVC watches)."""
    if not setting:
        return None
    path = Path(setting)
    if len(path.parts) == 1:
        path = BANDED_FOLDER / path
    if path.parent.resolve() != BANDED_FOLDER.resolve():
        raise InputError(f"params.yaml: durations.banded_counts: {setting!r} is not in {BANDED_FOLDER}/; put the "
                         f"file there (the durations stage depends on that folder, so a changed count reruns it)")
    return path


def banded_metrics(estimates: pd.DataFrame, count_col: str) -> dict[str, Any]:
    """Headline banded figures for all LAs: per year and pooled, with how they were made."""
    out: dict[str, Any] = {}
    for r in estimates[estimates["la_code"] == "all"].to_dict("records"):
        key = "pooled" if r["basis"] == "pooled" else f"year_{r['year']}"
        out[key] = {"years": r["years"], "status": r["status"], count_col: r.get(count_col),
                    "weibull_median_days": r.get("weibull_median_days"),
                    "weibull_median_low": r.get("weibull_median_low"),
                    "weibull_median_high": r.get("weibull_median_high"),
                    "turnbull_open_at_24m_low": r.get("turnbull_open_at_24m_low"),
                    "turnbull_open_at_24m_high": r.get("turnbull_open_at_24m_high")}
    return out


def main() -> None:
    params = config.load_params()
    d = params["durations"]
    min_count = int(params["disclosure"]["min_cell_count"])
    horizons = d["horizons_months"]
    plans = pd.read_parquet("data/analysis/cpp_durations.parquet")
    # Fewer plans than the disclosure threshold: every estimate would be withheld, so none is made.
    enough = len(plans) >= min_count
    metrics: dict[str, Any] = {"plans": len(plans) if enough or not len(plans) else None}
    if enough:
        tables = planner_tables(plans, horizons, min_count)
        overall = tables["planner_summary"].iloc[0]
        metrics.update({"plans_ended": int(plans["ended"].sum()), "median_days": overall.get("median_days"),
                        "lasting_2y_plus": overall.get("lasting_2y_plus"),
                        "logrank_across_las_p": float(tables["logrank"].set_index("variable").loc["la_code", "p"])
                        if "la_code" in set(tables["logrank"].get("variable", [])) else None})
    else:   # headed, empty tables: the declared outputs exist and nothing of an earlier input survives
        tables = empty_planner_tables(horizons)
        metrics["status"] = ("no plans in this input" if not len(plans) else
                             f"plan durations could not be estimated: fewer plans than {min_count} "
                             "(disclosure.min_cell_count), so every estimate would be withheld")
    path = banded_file(d.get("banded_counts"))
    if path is not None:
        cells, totals, tallies = read_banded(path)
        estimates = banded_estimates(cells, totals, horizons, min_count, published=True)
        shown = cells.rename(columns={"plans_ended": "published_plans_ended"}).drop(columns="source_row")
        la_years = estimates[(estimates["la_code"] != "all") & (estimates["basis"] == "year")]
        estimated = la_years["published_plans_ended"].notna()
        metrics["banded"] = {
            "source": str(path), **{k: str(v) for k, v in tallies.items()},
            "counts": "published by DfE: public, used and shown as published (not suppressed again); "
                      "disclosure.min_cell_count applies to counts derived from case-level data",
            "cells_not_shown": "DfE markers c, low, k, u, x, ':' (plans not shown): bounded by the published total "
                               "minus the bands shown; z: none (not applicable)",
            "la_years_estimated": f"{int(estimated.sum())} of {len(la_years)}",
            "la_years_bounded": f"{int((la_years['cells_not_shown'] > 0).sum())} of {len(la_years)}",
            "pooling": "rows with basis 'pooled' add an LA's counts over its years (same length distribution "
                       "assumed each year); rows with basis 'year' are one year each",
            "all_las": banded_metrics(estimates, "published_plans_ended"),
        }
    elif enough:
        derived = bands_from_plans(plans, config.extract_date(params))
        estimates = banded_estimates(derived, None, horizons, min_count, published=False)
        shown = derived.assign(plans_ended=derived["plans_ended"].where(
            (derived["plans_ended"] >= min_count) | (derived["plans_ended"] == 0)))
        metrics["banded"] = {"source": "built from the case-level plans ended in the final 12 months",
                             "counts": f"derived from case-level data: counts below {min_count} withheld",
                             "pooling": "one year only (no pooled rows)",
                             "all_las": banded_metrics(estimates, "plans_ended")}
    else:
        shown = pd.DataFrame(columns=["la_code", "year", "band", "plans_ended"])
        estimates = pd.DataFrame(columns=["la_code", "la_name", "year", "basis", "years", "status", "plans_ended"])
    tables["banded_counts"], tables["banded_estimates"] = shown, estimates
    for name, table in tables.items():
        write_csv(table, REPORTS / f"{name}.csv")
    write_json(metrics, Path("metrics/durations.json"))
    if enough:
        print(f"durations: {metrics['plans']:,} plans; median {metrics.get('median_days')} days; "
              f"lasting 2 years or more {metrics.get('lasting_2y_plus')}")
    else:
        print(f"durations: {metrics['status']}: case-level tables written empty"
              + ("; banded estimates from " + str(path) if path is not None else ""))


if __name__ == "__main__":
    stage_entry(main)()
