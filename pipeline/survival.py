"""``survival`` stage: time to re-report, described and modelled.

Reads ``data/analysis/rereport.parquet`` and writes, under ``reports/survival/``:

* ``km_overall.csv``, ``km_by_group.csv``: Kaplan-Meier cumulative re-report (1 - S) and
  Nelson-Aalen cumulative hazard with 95% CIs (lifelines: log(-log) intervals for S,
  log intervals for H) and numbers at risk; ``cumulative_rereport.csv`` at the horizons;
  ``logrank.csv`` (multivariate log-rank test per grouping, ``nonparametric.logrank_test``).
* ``hazard_ratios.csv``: Cox model (``pipeline.cox.CoxPH``; Efron ties, LA strata,
  family-cluster robust SEs) with the true hazard ratio beside each estimate when the
  input is the synthetic default; ``ph_tests.csv``: scaled-Schoenfeld tests as R's
  ``cox.zph(transform="km")`` with plain-language advice; ``schoenfeld.csv``: for each
  covariate the advice flags, the smoothed scaled Schoenfeld residuals (beta(t)) with their
  band and binned means, no individual residual (``pipeline.schoenfeld``).
* ``parametric_models.csv`` / ``parametric_predictions.csv``: Weibull, log-normal and
  log-logistic AFT fits (``pipeline.aft``, equal to R's ``survreg``) compared by AIC, and
  predicted cumulative re-report at the horizons for reference profiles.
* ``recurrent_models.csv``: Andersen-Gill (counting process, robust by child) and PWP
  gap-time (strata by event number) models of every re-referral.
* ``competing_cif.csv`` / ``cause_specific_hazard_ratios.csv``: Aalen-Johansen cumulative
  incidence of re-referral, entering care and turning 18, and cause-specific Cox models.

An empty or degenerate table (no rows, no events, no positive duration, no covariate that
varies; rules in ``pipeline.estimable``) ends with every table written (header, no rows,
where nothing could be computed) and ``status`` / ``not_estimated`` in the metrics saying
what could not be estimated and why; the curves are drawn whenever a duration is positive.
Parametric fits move zero durations to ``ZERO_DURATION_DAYS`` (half a day; counted in the
metrics); Kaplan-Meier and Cox take them as they are.

Invalid values in the analysis table (a missing covariate or time, a negative time, an
event other than 0/1; ``pipeline.cox.check_input``) stop the stage with one line. A Cox
fit that did not converge, or whose coefficient may be infinite (separation), or an AFT fit
that did not converge, warns as R does; every such warning is in ``metrics/survival.json`` -> ``warnings`` ({model, message}).

Counts below ``disclosure.min_cell_count`` are suppressed: curves stop where fewer are at
risk, and group estimates are withheld where the group is smaller.
Also ``metrics/survival.json`` and ``models/cox.json`` + ``models/cox_baseline.csv``.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import config
from pipeline.analysis_read import read_analysis, survival_columns
from pipeline.aft import DISTRIBUTIONS, AFTConvergenceWarning, AFTRegression
from pipeline.cli import InputError, stage_entry
from pipeline.concordance import concordance_index
from pipeline import cox_model
from pipeline.cox import CoxConvergenceWarning, CoxInputError, CoxPH, check_input
from pipeline.cox_model import fit_cox
from pipeline.design import design_matrix, profile_row, with_groups
from pipeline.disclosure import complementary_at_risk, complementary_suppression
from pipeline.estimable import ZERO_DURATION_DAYS, empty, model_problem, record, survival_problem
from pipeline.fit_warnings import FitWarnings
from pipeline.frailty import TABLE_COLUMNS as FRAILTY_COLUMNS, fit_shared_frailty, frailty_problem
from pipeline.io import write_csv, write_json
from pipeline.settings import survival_settings
from pipeline.nonparametric import (DAYS_PER_MONTH, aalen_johansen, kaplan_meier, logrank_test, nelson_aalen,
                                    step_read)
from pipeline.schoenfeld import COLUMNS as SCHOENFELD_COLUMNS
from pipeline.schoenfeld import schoenfeld_table

REPORTS = Path("reports/survival")
#: Tables only some inputs have (recurrent referrals and competing ends need case-level
#: data; parametric fits need survival.parametric): written with their header and no rows
#: otherwise, so a route without them never deletes what another route committed.
OPTIONAL_TABLES = {
    "parametric_models": ["model", "loglik", "aic", "parameters", "delta_aic"],
    "parametric_predictions": ["model", "profile", "horizon_months", "cumulative_rereport"],
    "recurrent_models": ["covariate", "coef", "robust_se", "model_se", "hr", "hr_lower", "hr_upper", "z", "p", "model"],
    "competing_cif": ["cause", "time_days", "time_months", "at_risk", "cif", "lower", "upper"],
    "cause_specific_hazard_ratios": ["covariate", "coef", "robust_se", "model_se", "hr", "hr_lower", "hr_upper", "z",
                                     "p", "cause"],
    "frailty_hazard_ratios": FRAILTY_COLUMNS,
    "plot_cif": ["time_months", "series", "cumulative_incidence", "at_risk"],
}
#: Every other table, for an input from which nothing could be estimated (plus
#: ``true_hr``/``true_in_ci`` on the synthetic default).
TABLES = {
    "km_overall": ["time_days", "time_months", "at_risk", "survival", "survival_lower", "survival_upper",
                   "cumulative_hazard", "cumhaz_lower", "cumhaz_upper", "cumulative_rereport", "cumulative_lower",
                   "cumulative_upper"],
    "km_by_group": ["variable", "level", "time_days", "time_months", "at_risk", "cumulative_rereport",
                    "cumulative_lower", "cumulative_upper"],
    "cumulative_rereport": ["variable", "level", "n", "events", "horizon_months", "cumulative_rereport", "lower",
                            "upper", "at_risk"],
    "logrank": ["variable", "groups", "chisq", "df", "p"],
    "hazard_ratios": ["covariate", "coef", "robust_se", "model_se", "hr", "hr_lower", "hr_upper", "z", "p"],
    "ph_tests": ["covariate", "chisq", "df", "p", "p_holm", "violated", "advice"],
    "plot_curves": ["time_months", "series", "share", "at_risk"],
    "schoenfeld": SCHOENFELD_COLUMNS,
}
AFT = {name: partial(AFTRegression, name) for name in DISTRIBUTIONS}   # weibull, lognormal, loglogistic
CAUSES = ("re_referral", "entered_care", "age_18")
#: Warnings a Cox or AFT fit's metrics keep: R's convergence warnings, and numerical ones (an
#: overflow, an invalid value) that would otherwise scroll past on the terminal.
FIT_WARNINGS = (CoxConvergenceWarning, AFTConvergenceWarning, RuntimeWarning)
ANALYSIS_TABLE = "data/analysis/rereport.parquet"


# -- description --------------------------------------------------------------------------
def km_table(time: pd.Series, event: pd.Series, min_count: int) -> pd.DataFrame:
    """KM and Nelson-Aalen at each distinct time, cut where fewer than min_count are at risk."""
    out = kaplan_meier(time, event)
    na = nelson_aalen(time, event).set_index("time_days")      # variance as R's survfit (std.chaz)
    at = out["time_days"].to_numpy()
    for column in ("cumulative_hazard", "cumhaz_lower", "cumhaz_upper"):
        out[column] = na[column].reindex(at).to_numpy()
    out = out[(out["time_days"] > 0) & (out["at_risk"] >= min_count)]
    out.insert(1, "time_months", (out["time_days"] / DAYS_PER_MONTH).round(3))
    out["cumulative_rereport"] = 1 - out["survival"]
    out["cumulative_lower"] = 1 - out["survival_upper"]
    out["cumulative_upper"] = 1 - out["survival_lower"]
    return out.reset_index(drop=True)


def at_horizons(curve: pd.DataFrame, horizons_days: list[float]) -> pd.DataFrame:
    """The step curve read at each horizon, with the number at risk there (blank before
    the first and past the last reportable time)."""
    t = curve["time_days"].to_numpy()
    out = pd.DataFrame({name: step_read(t, curve[col], horizons_days, np.nan, "nan")
                        for name, col in (("cumulative_rereport", "cumulative_rereport"),
                                          ("lower", "cumulative_lower"), ("upper", "cumulative_upper"))})
    first_at_or_after = np.searchsorted(t, horizons_days, side="left")
    at_risk = curve["at_risk"].to_numpy(dtype=float)
    out["at_risk"] = [at_risk[i] if i < len(t) else np.nan for i in first_at_or_after]
    out.loc[out["cumulative_rereport"].isna(), "at_risk"] = np.nan
    return out


def on_grid(curve: pd.DataFrame, times: np.ndarray, months: float = 72, step: float = 0.5) -> pd.DataFrame:
    """A KM curve read every half month (exact step values there), with the number at risk
    at each grid time; blank past the last time with enough at risk."""
    grid = np.arange(0, months + step / 2, step)
    days = grid * DAYS_PER_MONTH
    out = pd.DataFrame({"time_months": grid, "time_days": np.round(days, 2),
                        "at_risk": len(times) - np.searchsorted(np.sort(times), days, side="left")})
    for col in ("cumulative_rereport", "cumulative_lower", "cumulative_upper"):
        out[col] = step_read(curve["time_days"], curve[col], days, 0.0, "nan")
    return out[out[["cumulative_rereport"]].notna().all(axis=1)]


def string_levels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's level as text (``astype(str)``) as a code into the distinct texts: the
    conversion is done once per distinct value rather than once per row."""
    raw, distinct_values = pd.factorize(values, use_na_sentinel=False)
    text = pd.Series(distinct_values, dtype=object).astype(str).to_numpy()
    merged, names = pd.factorize(text)        # two raw values may read the same as text
    return merged[raw], list(names)


def describe(df: pd.DataFrame, groups: list[str], horizons_months: list[float], min_count: int
             ) -> dict[str, pd.DataFrame]:
    horizons_days = [m * DAYS_PER_MONTH for m in horizons_months]
    overall = km_table(df["time_days"], df["event"], min_count)
    by_group, cumulative, logrank = [], [], []

    def horizon_rows(variable: str, level: str, n: int, events: int, curve: pd.DataFrame | None) -> None:
        read = at_horizons(curve, horizons_days) if curve is not None else None
        for i, m in enumerate(horizons_months):
            row = {"variable": variable, "level": level, "n": n if n >= min_count else np.nan,
                   "events": events if events >= min_count else np.nan, "horizon_months": m}
            row.update(read.iloc[i].to_dict() if read is not None else
                       {"cumulative_rereport": np.nan, "lower": np.nan, "upper": np.nan, "at_risk": np.nan})
            cumulative.append(row)

    time, event = df["time_days"].to_numpy(), df["event"].to_numpy()
    horizon_rows("all", "all", len(df), int(event.sum()), overall)
    levels_of = {}
    for var in groups:
        if var not in df.columns:
            continue
        codes, names = string_levels(df[var])
        levels_of[var] = sorted(names)
        for level in levels_of[var]:
            rows = codes == names.index(level)
            t, e = time[rows], event[rows]
            curve = km_table(t, e, min_count) if len(t) >= min_count else None
            if curve is not None and not curve.empty:
                by_group.append(on_grid(curve, t).assign(variable=var, level=level))
            horizon_rows(var, level, len(t), int(e.sum()), curve if curve is not None and not curve.empty else None)
        if len(names) > 1:
            chisq, dof, p = logrank_test(time, codes, event)
            logrank.append({"variable": var, "groups": len(names), "chisq": chisq, "df": dof, "p": p})
    km_cols = ["variable", "level", "time_days", "time_months", "at_risk", "cumulative_rereport",
               "cumulative_lower", "cumulative_upper"]
    return {
        "km_overall": overall,
        "km_by_group": complementary_at_risk(
            pd.concat(by_group, ignore_index=True)[km_cols],
            levels_of,
            float(overall["time_days"].max())) if by_group else pd.DataFrame(columns=km_cols),
        # Levels' counts add up to the "all" row's: a lone withheld n, events or number at risk
        # would follow by subtraction, so each gets its secondary suppression.
        "cumulative_rereport": complementary_suppression(complementary_suppression(
            complementary_suppression(pd.DataFrame(cumulative), ["variable", "horizon_months"], "n", ["n", "events"]),
            ["variable", "horizon_months"], "events", ["events"]), ["variable", "horizon_months"], "at_risk", ["at_risk"]),
        "logrank": pd.DataFrame(logrank, columns=["variable", "groups", "chisq", "df", "p"]),
    }


# -- Cox ----------------------------------------------------------------------------------
def ph_advice(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Add a verdict and plain-language advice to a cox.zph-style table, global test first.

    A covariate is flagged only when the global test rejects at ``alpha`` and its own test
    still does after Holm's adjustment across the covariates (``p_holm``; Holm 1979): with
    20 terms each tested at 0.05, some term would otherwise be flagged in most samples where
    proportional hazards hold exactly.
    """
    from statsmodels.stats.multitest import multipletests

    out = table.copy()
    terms = out.index != "GLOBAL"
    out["p_holm"] = np.nan
    if terms.any():
        out.loc[terms, "p_holm"] = multipletests(out.loc[terms, "p"].to_numpy(), method="holm")[1]
    global_rejects = bool((out.loc[~terms, "p"] < alpha).any())
    out["violated"] = np.where(terms, global_rejects & (out["p_holm"] < alpha), out["p"] < alpha)
    advice = []
    for name, row in out.iterrows():
        if name == "GLOBAL":
            advice.append("Some hazard ratios change over follow-up: read them as averages over time."
                          if row["violated"] else "No evidence overall that hazard ratios change over follow-up.")
        elif row["violated"]:
            advice.append(f"The hazard ratio for {name} changes over follow-up (Holm-adjusted p = {row['p_holm']:.3g}): "
                          "stratify on it, split follow-up into periods, or add an interaction with time; "
                          "its single hazard ratio is an average over follow-up.")
        elif global_rejects:
            advice.append("No evidence, after adjusting for the number of tests, that this hazard ratio changes.")
        else:
            advice.append("No evidence that this hazard ratio changes over follow-up (the global test does not "
                          "reject, so no covariate is tested on its own).")
    out["advice"] = advice
    return out


def truth_for(columns: list[str], truth: dict[str, Any] | None) -> pd.Series:
    """True log-hazard ratio for each design column: simulated effects, 0 for categorical
    indicators the simulation gives no effect, NaN for anything else (or real data)."""
    if not truth:
        return pd.Series(np.nan, index=columns)
    effects = truth["log_hazard_ratios"]
    return pd.Series([effects.get(c, 0.0 if "[" in c else np.nan) for c in columns], index=columns)


def hazard_ratio_table(model: CoxPH, truth: pd.Series | None = None) -> pd.DataFrame:
    out = model.summary().rename(columns={"se": "robust_se" if model.robust_se_ is not None else "se"})
    if truth is not None:
        out["true_hr"] = np.exp(truth.reindex(out.index))
        lo, hi = np.log(out["hr_lower"]), np.log(out["hr_upper"])
        t = truth.reindex(out.index)
        out["true_in_ci"] = np.where(t.notna(), (lo <= t) & (t <= hi), np.nan)
    return out.reset_index()


# -- parametric ---------------------------------------------------------------------------
def parametric(df: pd.DataFrame, X: pd.DataFrame, names: list[str], horizons_months: list[float],
               profiles: dict[str, dict[str, float]], log: FitWarnings | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    profile_rows = pd.DataFrame([profile_row(X.columns, name, p) for name, p in profiles.items()],
                                index=list(profiles), columns=X.columns)
    horizons_days = [m * DAYS_PER_MONTH for m in horizons_months]
    fits, preds = [], []
    for name in names:
        if name not in AFT:
            raise InputError(f"params.yaml: survival.parametric '{name}' is not one of {', '.join(AFT)}")
        # Not converging is an AFTConvergenceWarning: kept in ``log`` (the metrics), else raised as it is.
        with log.fitting(f"{name}_aft") if log is not None else nullcontext():
            model = AFT[name]().fit(X, df["time_days"], df["event"])
        fits.append({"model": name, "loglik": model.loglik_, "aic": model.aic_,
                     "parameters": model.n_parameters_})
        if not profiles:
            continue
        surv = model.predict_survival(profile_rows, horizons_days)
        for i, profile in enumerate(profiles):
            for j, m in enumerate(horizons_months):
                preds.append({"model": name, "profile": profile, "horizon_months": m,
                              "cumulative_rereport": 1 - float(surv[i, j])})
    table = pd.DataFrame(fits).sort_values("aic").reset_index(drop=True)
    table["delta_aic"] = table["aic"] - table["aic"].min()
    return table, pd.DataFrame(preds, columns=["model", "profile", "horizon_months", "cumulative_rereport"])


# -- recurrent and competing --------------------------------------------------------------
def recurrent_data(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Counting-process rows per child: time since the child's first index origin, one
    (start, stop] per index episode; gaps (open cases) are time not at risk. Rows whose
    interval overlaps the previous one (a referral while a case was open) are left out.

    Rows in (child_id, origin_date) order; the child's first origin, episode number and
    previous stop are read off that order in numpy (no pandas group-by on the text ids)."""
    codes = pd.factorize(df["child_id"], sort=True)[0]          # sorted codes: the ids' order
    origin = df["origin_date"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    if (codes < 0).any() or df["origin_date"].isna().any():     # missing ids or dates sort last, as pandas does
        order = df.reset_index(drop=True).sort_values(["child_id", "origin_date"], kind="stable").index.to_numpy()
    else:
        order = np.lexsort((origin, codes))
    d = df.take(order)
    child, origin = codes[order], origin[order]
    new_child = np.r_[True, child[1:] != child[:-1]] if len(d) else np.zeros(0, dtype=bool)
    first_row = np.maximum.accumulate(np.where(new_child, np.arange(len(d)), 0))   # each row's child's first row
    start = ((origin - origin[first_row]) // 86_400_000_000_000).astype(float)   # whole days (.dt.days)
    stop = start + d["time_days"].to_numpy()
    episode = np.arange(len(d)) - first_row + 1
    overlap = np.r_[False, stop[:-1] > start[1:]] & ~new_child if len(d) else new_child
    d = d.assign(start=start, stop=stop, episode=episode,
                 episode_stratum=np.array(["1", "2", "3", "4+"], dtype=object)[np.minimum(episode, 4) - 1])
    return d[~overlap], int(overlap.sum())


def recurrent(df: pd.DataFrame, X: pd.DataFrame, s: dict[str, Any], log: FitWarnings | None = None
              ) -> tuple[pd.DataFrame, dict[str, Any]]:
    d, overlapping = recurrent_data(df[["child_id", "origin_date", "time_days", "event"]])   # no copy of the rest
    rows = X.index.get_indexer(d.index)    # d's rows of X, fitted without a copy of them (0.2 GB at 1M)
    log = log or FitWarnings(FIT_WARNINGS)
    with log.fitting("andersen_gill"):
        ag = CoxPH(ties=s["ties"]).fit(X, d["stop"], d["event"], entry=d["start"], cluster=d["child_id"], rows=rows)
    ag_table = hazard_ratio_table(ag).assign(model="andersen_gill")
    del ag    # a fit keeps sorted copies of the design (~1 GB at a million rows): gone before the next
    with log.fitting("pwp_gap_time"):
        pwp = CoxPH(ties=s["ties"]).fit(X, d["time_days"], d["event"], strata=d["episode_stratum"],
                                        cluster=d["child_id"], rows=rows)
    table = pd.concat([ag_table, hazard_ratio_table(pwp).assign(model="pwp_gap_time")], ignore_index=True)
    return table, {"rows": int(len(d)), "children": int(d["child_id"].nunique()),
                   "events": int(d["event"].sum()), "overlapping_rows_left_out": overlapping}


def competing(df: pd.DataFrame, X: pd.DataFrame, s: dict[str, Any], min_count: int, log: FitWarnings | None = None,
              full: CoxPH | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Aalen-Johansen curves of each cause and cause-specific Cox models. ``full``: the
    full-data Cox model of re-referral, fitted without warnings on these rows and design;
    when the re-referral cause is exactly its event, it is that model (the same fit on
    the same numbers), not fitted twice."""
    code = {c: i + 1 for i, c in enumerate(CAUSES)}
    event_type = df["event_type"].map(code).fillna(0).astype(int).to_numpy()
    curves, tables, counts = [], [], {}
    for cause in CAUSES:
        counts[cause] = int((df["event_type"] == cause).sum())
        cif = aalen_johansen(df["time_days"], event_type, code[cause])
        cif = cif[cif["at_risk"] >= min_count]
        curves.append(cif.assign(cause=cause, time_months=(cif["time"] / DAYS_PER_MONTH).round(3)))
        if cause != "age_18" and counts[cause] >= min_count:
            event = (df["event_type"] == cause).astype(int)
            if full is not None and np.array_equal(event.to_numpy(), df["event"].to_numpy()):
                model = full
            else:
                with (log or FitWarnings(FIT_WARNINGS)).fitting(f"cause_specific_{cause}"):
                    model = fit_cox(df, X, s, event=event, what=f"cause-specific Cox model of {cause}")
            tables.append(hazard_ratio_table(model).assign(cause=cause))
            del model    # its sorted copies of the design go before the next cause's fit
    cif = pd.concat(curves, ignore_index=True).rename(columns={"time": "time_days"})
    cif = cif[["cause", "time_days", "time_months", "at_risk", "cif", "lower", "upper"]]
    published = {c: (n if n >= min_count else None) for c, n in counts.items()}
    return cif, pd.concat(tables, ignore_index=True), published


# -- the stage ----------------------------------------------------------------------------
def run(df: pd.DataFrame, s: dict[str, Any], min_count: int, truth: dict[str, Any] | None,
        progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, Any], CoxPH | None]:
    """Everything the stage computes (pure: analysis table and settings in, tables out).

    The Cox model is None when it could not be estimated (``metrics["not_estimated"]``)."""
    def say(msg: str) -> None:
        if progress:
            print(f"survival: {msg}", file=sys.stderr)

    if s["ties"] not in ("efron", "breslow"):
        raise InputError(f"params.yaml: survival.ties '{s['ties']}' must be efron or breslow")
    if s.get("frailty") not in (None, "gamma"):
        raise InputError(f"params.yaml: survival.frailty '{s['frailty']}' must be gamma or null")
    if not df.index.equals(pd.RangeIndex(len(df))):   # (reset_index would copy every column)
        df = df.reset_index(drop=True)
    df = with_groups(df)
    X, reference = design_matrix(df, s["covariates"], s.get("categorical", []))
    try:   # invalid values stop the stage (one line on the terminal, so the count of rows may be said)
        check_input(X.to_numpy(dtype=float), df["time_days"].to_numpy(dtype=float), df["event"].to_numpy(),
                    list(X.columns), strata=df[s["strata"]] if s.get("strata") else None,
                    cluster=df[s["cluster"]] if s.get("cluster") else None)
    except CoxInputError as err:
        raise InputError(f"{ANALYSIS_TABLE}: {err}") from None
    log = FitWarnings(FIT_WARNINGS)
    metrics: dict[str, Any] = {
        "n": int(len(df)), "events": int(df["event"].sum()),
        "covariates_not_recorded_in_this_input": s.get("not_recorded", []),
        "reference_profiles_dropped": s.get("reference_profiles_dropped", []),
        "families": int(df[s["cluster"]].nunique()) if s.get("cluster") else None,
    }
    curve_problem = survival_problem(df["time_days"], df["event"])
    if curve_problem is not None:
        record(metrics, "survival_curves", curve_problem)
        tables = {name: empty(columns) for name, columns in TABLES.items()}
    else:
        tables = describe(df, s.get("km_groups", []), s["horizons_months"], min_count)
        say("described")
    problem = model_problem(df["time_days"], df["event"])
    model = None
    cox_problem = problem or (None if X.shape[1] else "no covariate varies in the analysis table")
    if cox_problem is None:
        try:
            with log.fitting("cox"):
                model = fit_cox(df, X, s)
        except InputError as err:   # degenerate data (e.g. a singular information matrix): said, not fatal
            cox_problem = str(err)
    if model is None:
        record(metrics, "cox", cox_problem)
        for name in ("hazard_ratios", "ph_tests", "schoenfeld"):
            tables[name] = empty(TABLES[name])
    else:
        true = truth_for(list(X.columns), truth)
        hr = hazard_ratio_table(model, true if truth else None)
        tables["hazard_ratios"] = hr
        try:
            with log.fitting("ph_tests"):
                zph = ph_advice(model.zph("km"), s.get("ph_alpha", 0.05))
        except (ValueError, np.linalg.LinAlgError) as err:
            record(metrics, "ph_tests", str(err))
            zph = None
        tables["ph_tests"] = zph.reset_index() if zph is not None else empty(TABLES["ph_tests"])
        flagged = [c for c in zph.index if c != "GLOBAL" and zph.loc[c, "violated"]] if zph is not None else []
        with log.fitting("ph_tests"):
            tables["schoenfeld"] = (schoenfeld_table(model.scaled_schoenfeld("km"), flagged, min_count)
                                    if flagged else empty(TABLES["schoenfeld"]))
        say("Cox model fitted")
        c_index = concordance_index(df["time_days"], -model.linear_predictor_, df["event"])
        model.release_data()   # its sorted copy of the data (~0.5 GB at a million rows): not needed after this
        metrics["cox"] = {"concordance": round(float(c_index), 4), "loglik": model.loglik_,
                          "loglik_null": model.loglik_null_, "iterations": model.n_iter_,
                          "reference_levels": reference,
                          "ph_global_p": float(zph.loc["GLOBAL", "p"]) if zph is not None else None,
                          "ph_violations": flagged}
    if curve_problem is None:
        metrics["cumulative_rereport"] = {f"{m}_months": _read(tables["cumulative_rereport"], m)
                                          for m in s["horizons_months"]}
    if model is not None and truth:
        known = hr[hr["true_in_ci"].notna()]
        metrics["truth_recovery"] = {"covariates_with_truth": int(len(known)),
                                     "true_value_in_95ci": int(known["true_in_ci"].astype(bool).sum())}
    if s.get("frailty"):   # shared gamma frailty by cluster (pipeline/frailty.py)
        cluster = df[s["cluster"]] if s.get("cluster") else None
        frailty_reason = cox_problem or frailty_problem(cluster)
        if frailty_reason is None:
            try:
                with log.fitting("frailty"):
                    tables["frailty_hazard_ratios"], metrics["frailty"] = fit_shared_frailty(
                        X, df["time_days"], df["event"], cluster, df[s["strata"]] if s.get("strata") else None,
                        s["ties"], truth_for(list(X.columns), truth) if truth else None, min_count=min_count,
                        null_fit=model if not any(r["model"] == "cox" for r in log.records) else None)
                say("frailty model fitted")
            except ValueError as err:   # (a CoxInputError's reason names no count)
                frailty_reason = f"the fit failed ({getattr(err, 'reason', err)})"
        if frailty_reason is not None:
            record(metrics, "frailty", frailty_reason)
    if s.get("parametric") and problem is not None:
        record(metrics, "parametric_models", problem)
    elif s.get("parametric"):
        zero = (df["time_days"] == 0).to_numpy()
        # only the columns the fits read (df.assign would copy every column, kept to the end of run)
        positive = pd.DataFrame({"time_days": df["time_days"].where(~zero, ZERO_DURATION_DAYS), "event": df["event"]})
        try:
            tables["parametric_models"], tables["parametric_predictions"] = parametric(
                positive, X, s["parametric"], s["horizons_months"], s.get("reference_profiles", {}), log)
            metrics["parametric_best_by_aic"] = tables["parametric_models"].iloc[0]["model"]
        except (ValueError, np.linalg.LinAlgError) as err:
            # degenerate rows (e.g. collinear covariates): say why, in one line
            first = next((line.strip().rstrip(":") for line in str(err).splitlines() if line.strip()), "")
            record(metrics, "parametric_models", f"the fit failed ({type(err).__name__}{': ' + first if first else ''})")
        if zero.any():
            metrics["parametric_zero_durations"] = {
                "rows": int(zero.sum()) if zero.sum() >= min_count else None,
                "rule": f"zero durations moved to {ZERO_DURATION_DAYS:g} days for the parametric fits only "
                        "(they need positive times); Kaplan-Meier and Cox use them as they are"}
        say("parametric models fitted")
    if s.get("recurrent") and {"child_id", "origin_date"} <= set(df.columns):
        if problem is not None or not X.shape[1]:
            record(metrics, "recurrent_models", cox_problem)
        else:
            try:
                tables["recurrent_models"], metrics["recurrent"] = recurrent(df, X, s, log)
            except ValueError as err:   # (a CoxInputError's reason names no count)
                record(metrics, "recurrent_models", getattr(err, "reason", str(err)))
            say("recurrent models fitted")
    if s.get("competing_risks") and "event_type" in df.columns:
        if curve_problem is not None:
            record(metrics, "competing_risks", curve_problem)
        else:
            try:
                tables["competing_cif"], tables["cause_specific_hazard_ratios"], metrics["competing_events"] = \
                    competing(df, X, s, min_count, log,
                              full=model if not any(r["model"] == "cox" for r in log.records) else None)
                rr = tables["competing_cif"][tables["competing_cif"]["cause"] == "re_referral"]
                # The project's one observed risk by a horizon (competing ends a "no"), beside 1 - KM.
                metrics["cumulative_incidence"] = {
                    f"{m:g}_months": _rounded(step_read(rr["time_days"], rr["cif"], m * DAYS_PER_MONTH, 0.0, "nan")[0])
                    for m in s["horizons_months"]}
            except InputError as err:
                record(metrics, "competing_risks", str(err))
            say("competing risks done")
    if curve_problem is None:
        tables.update(plot_curves(tables))
    metrics["warnings"] = log.records
    return tables, metrics, model


def plot_curves(tables: dict[str, pd.DataFrame], months: float = 72, step: float = 0.5) -> dict[str, pd.DataFrame]:
    """Every half month, in long form for ``dvc plots`` (``pipeline.plot_tables``): the overall
    KM cumulative re-report with its CI (``plot_curves``) and, when computed, the cumulative
    incidence of each competing end (``plot_cif``), each row with the number at risk. A curve
    ends where it was cut (fewer than min_count at risk): no row there, never a zero."""
    from pipeline.plot_tables import step_series

    grid = np.arange(0, months + step / 2, step)
    km = tables["km_overall"]
    out = {"plot_curves": pd.concat([step_series(km, col, grid, "share", 0.0, col) for col in
                                     ("cumulative_rereport", "cumulative_lower", "cumulative_upper")], ignore_index=True)}
    if "competing_cif" in tables:
        cif = tables["competing_cif"]
        out["plot_cif"] = pd.concat([step_series(cif[cif["cause"] == cause], f"cif_{cause}", grid, "cumulative_incidence",
                                                 0.0, "cif") for cause in CAUSES], ignore_index=True)
    return out


def _rounded(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


def _read(cum: pd.DataFrame, months: float) -> float | None:
    row = cum[(cum["variable"] == "all") & (cum["horizon_months"] == months)]
    value = row["cumulative_rereport"].iloc[0] if len(row) else np.nan
    return None if pd.isna(value) else round(float(value), 4)


FULL_NAME = "full-data Cox model (the hazard ratios reported)"
DEVELOPMENT_NAME = "development Cox model (the predictions calibration and error rates score)"


def development_model(df: pd.DataFrame, s: dict[str, Any], params: dict[str, Any]
                      ) -> tuple[CoxPH | None, dict[str, str], str | None]:
    """The development model (``pipeline.cox_model``), or None and why it could not be fitted."""
    try:
        dev, _, _ = cox_model.development_rows(df, params["logistic"], int(params["seed"]))
        problem = model_problem(dev["time_days"], dev["event"])
        if problem is not None:
            return None, {}, f"development rows: {problem}"
        model, reference = cox_model.fit_development(dev, s)
        return model, reference, None
    except (InputError, ValueError) as err:
        return None, {}, str(err)


def main() -> None:
    params = config.load_params()
    df = read_analysis(ANALYSIS_TABLE, survival_columns(params, ANALYSIS_TABLE))
    s = survival_settings(params, df)
    truth = None
    truth_file = config.SYNTHETIC_DIR / "truth.json"
    if params["input"]["source"] == "synthetic" and truth_file.exists():
        truth = json.loads(truth_file.read_text())
    min_count = int(params["disclosure"]["min_cell_count"])
    tables, metrics, model = run(df, s, min_count, truth, progress=len(df) >= 200_000)
    for name, columns in OPTIONAL_TABLES.items():
        tables.setdefault(name, pd.DataFrame(columns=columns))
    for name, table in tables.items():
        write_csv(table, REPORTS / f"{name}.csv")
    log = FitWarnings(FIT_WARNINGS)
    with log.fitting("cox_development"):
        development, dev_reference, why = development_model(df, s, params)
    metrics["warnings"] += log.records
    write_json(metrics, Path("metrics/survival.json"))
    if model is None:   # the declared model outputs still exist, and say why they hold no model
        cox_model.save_not_estimated(cox_model.FULL, metrics["status"], s, FULL_NAME)
        write_csv(empty(["stratum", "time", "cumhaz"]), Path("models/cox_baseline.csv"))
    else:
        cox_model.save(model, s, metrics["cox"]["reference_levels"], cox_model.FULL, FULL_NAME, "every index referral")
        write_csv(model.baseline_cumulative_hazard_, Path("models/cox_baseline.csv"))
    if development is None:
        cox_model.save_not_estimated(cox_model.DEVELOPMENT, why, s, DEVELOPMENT_NAME)
    else:
        cox_model.save(development, s, dev_reference, cox_model.DEVELOPMENT, DEVELOPMENT_NAME,
                       "the development families of the validation split")
    print(f"survival: {metrics['n']:,} index referrals, {metrics['events']:,} re-referrals" +
          (f"; concordance {metrics['cox']['concordance']}" if model is not None else "") +
          (f"; truth in 95% CI for {metrics['truth_recovery']['true_value_in_95ci']} of "
           f"{metrics['truth_recovery']['covariates_with_truth']} covariates" if "truth_recovery" in metrics else "") +
          (f"; {metrics['status']}" if "status" in metrics else "") +
          (f"; {len(metrics['warnings'])} model warning(s) in metrics/survival.json" if metrics["warnings"] else ""))


if __name__ == "__main__":
    stage_entry(main)()
