"""``durations`` stage: how long child protection plans last, for local-authority planners.

From case-level plans (``data/analysis/cpp_durations.parquet``): Kaplan-Meier curves of
the share of plans still open by time since start, overall and by LA, category, age band
at start and first vs repeat plan (lifelines, log(-log) 95% CIs); the median length with
its CI (where the CI curves cross one half, by R's rule: see ``km_quantile``); the share still open at 3,
6, 12 and 24 months; the share lasting two years or more (S at 24 months); a log-rank
test across LAs; and a table comparing LAs.

From **published banded counts** (plans ended in a year by length band, as DfE table D7
publishes them; layout below), the same quantities treating each band as an interval-
censored observation: the Turnbull NPMLE (``pipeline.nonparametric.turnbull``; with the
DfE bands it puts each band's share on that band, so shares open at the band edges 3,
6, 12 and 24 months are exact) and an interval-censored Weibull fit (lifelines) for a
smooth median. Note: counts of plans *ended* in a year describe completed plans, not a
start cohort.

Banded counts CSV layout (``durations.banded_counts`` in params.yaml)::

    la_code,year,band,plans_ended
    E09000001,2025,<=3 months,25
    E09000001,2025,3-6 months,18
    ...            (bands: <=3 months, 3-6 months, 6 months-1 year, 1-2 years, 2+ years)

When no file is given the stage builds that table from the case-level plans that ended in
the 12 months to the extract date and estimates from it, so both routes can be compared.
Counts below ``disclosure.min_cell_count`` are suppressed in every output.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lifelines import WeibullFitter
from lifelines.statistics import multivariate_logrank_test

from pipeline import config
from pipeline.cli import InputError, stage_entry
from pipeline.disclosure import complementary_at_risk, complementary_suppression
from pipeline.io import read_table, write_csv, write_json
from pipeline.nonparametric import DAYS_PER_MONTH, kaplan_meier, km_quantile, step_read, turnbull
from pipeline.published import CPP_DURATION_BAND_EDGES_DAYS, CPP_DURATION_BANDS

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
    grid = np.arange(0, 60.25, 0.5)
    plot = {"time_months": grid}
    for var, level, name in (("all", "all", "all_plans"), ("plan_sequence", "first", "first_plans"),
                             ("plan_sequence", "second_or_subsequent", "repeat_plans")):
        c = curves_table[(curves_table["variable"] == var) & (curves_table["level"] == level)]
        plot[name] = step_read(c["time_days"], c["open_share"], grid * DAYS_PER_MONTH, 1.0, "nan")
    return {"plot_open_share": pd.DataFrame(plot),"planner_summary": summary_table, "la_comparison": la.reset_index(drop=True),
            "km_curves": curves_table, "logrank": pd.DataFrame(tests)}


def bands_from_plans(plans: pd.DataFrame, extract_date: pd.Timestamp) -> pd.DataFrame:
    """The DfE D7 layout built from case-level plans ended in the 12 months to the extract."""
    ended = plans[(plans["ended"] == 1) & (plans["end_date"] > extract_date - pd.Timedelta(days=365))]
    edges = np.array(CPP_DURATION_BAND_EDGES_DAYS)
    band = np.array(CPP_DURATION_BANDS)[np.searchsorted(edges, ended["duration_days"].to_numpy(), side="left")]
    counts = (pd.DataFrame({"la_code": ended["la_code"].to_numpy(), "band": band})
              .groupby(["la_code", "band"]).size().rename("plans_ended").reset_index())
    full = pd.MultiIndex.from_product([sorted(plans["la_code"].unique()), CPP_DURATION_BANDS],
                                      names=["la_code", "band"])
    counts = counts.set_index(["la_code", "band"]).reindex(full, fill_value=0).reset_index()
    counts.insert(1, "year", extract_date.year)
    return counts


def read_banded(path: Path) -> pd.DataFrame:
    table = read_table(path)
    for col in ("la_code", "year", "band", "plans_ended"):
        if col not in table.columns:
            raise InputError(f"{path}: header (line 1): missing column '{col}'")
    unknown = ~table["band"].isin(BAND_INTERVALS)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(f"{path}: column band, row {i + 1}: unknown band {table['band'].iloc[i]!r}; "
                         f"expected one of {', '.join(CPP_DURATION_BANDS)}")
    counts = pd.to_numeric(table["plans_ended"], errors="coerce")
    bad = counts.isna() | (counts < 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: column plans_ended, row {i + 1}: {table['plans_ended'].iloc[i]!r} is not a count")
    return table.assign(plans_ended=counts.astype(int))


def banded_estimates(counts: pd.DataFrame, horizons_months: list[float], min_count: int) -> pd.DataFrame:
    """Turnbull and interval-censored Weibull estimates from banded counts, overall and per LA.

    Disclosure: an LA with a band count withheld from banded_counts.csv gets no estimates
    at all (its total, its Turnbull shares at the band edges, which are cumulative counts
    over the total, and even its Weibull fit, whose score equations are linear in the band
    counts, would each give the withheld count back). While any count is withheld, the
    overall row's total is withheld and its estimates are rounded (shares and shape to 2
    decimals, days to whole days), so that the overall band counts minus the published LA
    counts cannot be solved for the withheld ones.
    """
    rows = []
    groups = [("all", counts)] + [(la, sub) for la, sub in counts.groupby("la_code", sort=True)]
    small = counts[(counts["plans_ended"] > 0) & (counts["plans_ended"] < min_count)]
    for label, sub in groups:
        sub = sub[sub["plans_ended"] > 0]
        total = int(sub["plans_ended"].sum())
        row: dict[str, Any] = {"la_code": label, "plans_ended": total if total >= min_count else np.nan}
        withheld_inside = len(small) > 0 if label == "all" else bool((small["la_code"] == label).any())
        if total < min_count or (withheld_inside and label != "all"):
            rows.append({"la_code": label, "plans_ended": np.nan})
            continue
        lower = sub["band"].map(lambda b: BAND_INTERVALS[b][0]).to_numpy(dtype=float)
        upper = sub["band"].map(lambda b: BAND_INTERVALS[b][1]).to_numpy(dtype=float)
        npmle = turnbull(lower, upper, sub["plans_ended"].to_numpy())
        for m in horizons_months:
            t = m * DAYS_PER_MONTH
            # S is identified at the band edges; between them the NPMLE is not unique.
            at_edge = npmle[npmle["right"] <= t + 1]
            row[f"turnbull_open_at_{m}m"] = float(at_edge["survival_after"].iloc[-1]) if len(at_edge) else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wf = WeibullFitter().fit_interval_censoring(np.maximum(lower, 1e-3), upper,
                                                        weights=sub["plans_ended"].to_numpy())
        row["weibull_median_days"] = float(wf.median_survival_time_)
        row["weibull_shape"], row["weibull_scale_days"] = float(wf.rho_), float(wf.lambda_)
        for m in horizons_months:
            row[f"weibull_open_at_{m}m"] = float(wf.survival_function_at_times(m * DAYS_PER_MONTH).iloc[0])
        if withheld_inside:          # the overall row while a count is withheld somewhere
            row["plans_ended"] = np.nan
            row = {k: (round(v, 2) if k.startswith(("turnbull", "weibull_open", "weibull_shape")) else
                       round(v) if k in ("weibull_median_days", "weibull_scale_days") else v) for k, v in row.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    params = config.load_params()
    d = params["durations"]
    min_count = int(params["disclosure"]["min_cell_count"])
    plans = pd.read_parquet("data/analysis/cpp_durations.parquet")
    tables: dict[str, pd.DataFrame] = {}
    metrics: dict[str, Any] = {"plans": int(len(plans))}
    if len(plans):
        tables = planner_tables(plans, d["horizons_months"], min_count)
        overall = tables["planner_summary"].iloc[0]
        metrics.update({"plans_ended": int(plans["ended"].sum()), "median_days": overall.get("median_days"),
                        "lasting_2y_plus": overall.get("lasting_2y_plus"),
                        "logrank_across_las_p": float(tables["logrank"].set_index("variable").loc["la_code", "p"])
                        if "la_code" in set(tables["logrank"].get("variable", [])) else None})
    if d.get("banded_counts"):
        counts = read_banded(Path(d["banded_counts"]))
        metrics["banded_source"] = str(d["banded_counts"])
    elif len(plans):
        counts = bands_from_plans(plans, config.extract_date(params))
        metrics["banded_source"] = "built from the case-level plans ended in the final 12 months"
    else:
        counts = None
    if counts is not None:
        shown = counts.assign(plans_ended=counts["plans_ended"].where(
            (counts["plans_ended"] >= min_count) | (counts["plans_ended"] == 0)))
        tables["banded_counts"] = shown
        tables["banded_estimates"] = banded_estimates(counts, d["horizons_months"], min_count)
        b = tables["banded_estimates"].iloc[0]
        metrics["banded"] = {"weibull_median_days": b.get("weibull_median_days"),
                             "turnbull_open_at_24m": b.get(f"turnbull_open_at_{24}m")}
    if not tables:  # a prepared analysis table has no plans: say so rather than leave nothing
        tables["planner_summary"] = pd.DataFrame({"note": ["no plans in the input: nothing to summarise"]})
    for name, table in tables.items():
        write_csv(table, REPORTS / f"{name}.csv")
    write_json(metrics, Path("metrics/durations.json"))
    print(f"durations: {metrics['plans']:,} plans; median {metrics.get('median_days')} days; "
          f"lasting 2 years or more {metrics.get('lasting_2y_plus')}")


if __name__ == "__main__":
    stage_entry(main)()
