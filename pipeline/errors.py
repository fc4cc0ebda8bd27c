"""How often the model is wrong: error rates by rule, by group, and net benefit.

On the validation predictions, for each rule (flag when the predicted risk is at least
a threshold, for each threshold of ``errors.thresholds``; or flag the highest-risk k% of
referrals, for each k of ``errors.top_percents``):

* TP, FP, FN, TN (flagged and re-referred, flagged and not, missed, correctly not
  flagged); sensitivity TP/(TP+FN), specificity TN/(TN+FP), false-positive rate
  FP/(FP+TN), false-negative rate FN/(TP+FN), PPV TP/(TP+FP), NPV TN/(TN+FN), each with a
  Wilson 95% interval (Wilson 1927; ``statsmodels.stats.proportion.proportion_confint``);
* the same as natural frequencies per 1,000 referrals: the four cells rounded by largest
  remainders so they add up to exactly 1,000 (Gigerenzer and Hoffrage 1995).

"Top k%" flags exactly round(k% of n) referrals, highest predicted risk first (ties in
input order). By group (sex, ethnicity, age band, LA), the headline rule's rates within
each group, with differences and ratios against the largest group and 95% percentile
intervals from resampling whole families. Decision curve: net benefit
TP/n - FP/n * t/(1-t) of the model, of flagging everyone and of flagging no one, at each
threshold t (Vickers and Elkin 2006).

The headline rule's figures (per 1,000 and rates) also get 95% percentile intervals from a
family bootstrap that refits the model on resampled development families and resamples the
validation families (``pipeline.headline_bootstrap``): ``headline_intervals.csv``, the
headline statement and ``reports/errors/default_rule.json``'s ``_lower``/``_upper``. The Wilson intervals of
the rules table hold the fitted model fixed (``reports/errors/default_rule.json``: ``_wilson_lower``/``_upper``);
they leave out the refit's uncertainty and are too narrow for the expected performance.

For the Cox model at ``errors.survival_horizon_months``: the same rules on predicted risk
1 - S(H | x), with each status at H weighted by the inverse probability of remaining
uncensored (IPCW; Kaplan-Meier of the censoring times; rows censored before H weigh 0;
Blanche, Dartigues and Jacqmin-Gadda 2013), Wilson intervals on the Kish effective sample
size (sum w)^2 / sum w^2.

Without validation predictions (the logistic model could not be estimated) or without
the Cox model's risks, the stage writes those tables with their header and no rows, and
``status`` / ``not_estimated`` in the metrics (and the headline sentence) say why. The headline
sentence is report text (``reports/errors/headline.txt``), not a metric.

Disclosure: the four cells of any table with a cell below ``disclosure.min_cell_count``
are withheld together, with every rate and frequency computed from them (the margins
then cannot recover a withheld cell).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from pipeline.disclosure import complementary_suppression
from pipeline.schema import group_columns
from pipeline.settings import Labels, labels

#: The headline sentence ("Of 1,000 referrals, ..."), for the report and the terminal.
HEADLINE = "reports/errors/headline.txt"
#: Every figure of the headline rule (counts, rates, per 1,000; Wilson and bootstrap intervals).
DEFAULT_RULE = "reports/errors/default_rule.json"


def headline_metrics(rule: str | None, at_rule: dict[str, Any]) -> dict[str, Any]:
    """The headline rule's figures as short-named metrics (per 1,000 and two rates)."""
    return {"rule": rule, **{k: at_rule.get(f"{k}_per_1000") for k in ("events", "flagged", "tp", "fp", "fn")},
            "sensitivity": at_rule.get("sensitivity"), "ppv": at_rule.get("ppv")}
CELLS = ("tp", "fp", "fn", "tn")
RATES = {  # name: (numerator cells, denominator cells)
    "sensitivity": (("tp",), ("tp", "fn")),
    "specificity": (("tn",), ("tn", "fp")),
    "false_positive_rate": (("fp",), ("fp", "tn")),
    "false_negative_rate": (("fn",), ("tp", "fn")),
    "ppv": (("tp",), ("tp", "fp")),
    "npv": (("tn",), ("tn", "fn")),
}
PER_1000 = ("flagged", "events", *CELLS)


def top_percent_flags(p: np.ndarray, percent: float, weight: np.ndarray | None = None) -> np.ndarray:
    """Flag round(percent% of n) rows (halves up), highest p first (ties in input order). With
    weights (IPCW), percent% of the weighted population: rows in order of risk while the
    weight before a row's midpoint is below percent% of the total."""
    order = np.argsort(-np.asarray(p), kind="stable")
    flags = np.zeros(len(p), dtype=bool)
    if weight is None:
        flags[order[:int(np.floor(len(p) * percent / 100 + 0.5))]] = True   # half up, as the weighted rule
    else:
        w = np.asarray(weight, dtype=float)[order]
        midpoint = np.cumsum(w) - w / 2
        flags[order[midpoint < w.sum() * percent / 100]] = True
    return flags


def per_thousand(cells: dict[str, float]) -> dict[str, int]:
    """The four cells per 1,000 referrals, rounded by largest remainders to sum to 1,000."""
    total = sum(cells[c] for c in CELLS)
    exact = np.array([1000 * cells[c] / total for c in CELLS])
    counts = np.floor(exact).astype(int)
    short = 1000 - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    out = dict(zip(CELLS, map(int, counts)))
    out["flagged"], out["events"] = out["tp"] + out["fp"], out["tp"] + out["fn"]
    return out


def headline_measures(p: np.ndarray, y: np.ndarray, weight: np.ndarray, percent: float) -> dict[str, float]:
    """The top-``percent``% rule's four cells per 1,000 (unrounded: the percentiles of a
    bootstrap should not carry the rounding of each replicate) and its rates, on weighted rows."""
    flags, y = top_percent_flags(p, percent, weight), np.asarray(y).astype(bool)
    cells = {"tp": weight[flags & y].sum(), "fp": weight[flags & ~y].sum(), "fn": weight[~flags & y].sum(),
             "tn": weight[~flags & ~y].sum()}
    total = sum(cells.values())
    out = {f"{c}_per_1000": 1000 * cells[c] / total for c in CELLS}
    out["flagged_per_1000"] = out["tp_per_1000"] + out["fp_per_1000"]
    out["events_per_1000"] = out["tp_per_1000"] + out["fn_per_1000"]
    return {**out, **dict(zip(RATES, rate_values(cells)))}


def confusion(y: np.ndarray, flagged: np.ndarray, weight: np.ndarray | None = None) -> dict[str, Any]:
    """Cells, rates with Wilson 95% intervals, and natural frequencies per 1,000.

    With weights (IPCW) the cells are weighted sums and the intervals use the Kish
    effective sample size of each rate's denominator."""
    y, flagged = np.asarray(y).astype(bool), np.asarray(flagged).astype(bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    masks = {"tp": flagged & y, "fp": flagged & ~y, "fn": ~flagged & y, "tn": ~flagged & ~y}
    cells = {c: float(w[m].sum()) for c, m in masks.items()}
    out: dict[str, Any] = {"n": float(w.sum()), "flagged": cells["tp"] + cells["fp"],
                           "events": cells["tp"] + cells["fn"], **cells}
    if weight is not None:   # rows behind each weighted cell: what disclosure control counts
        out.update({f"{c}_rows": int(m.sum()) for c, m in masks.items()})
    for rate, (num, den) in RATES.items():
        num_mask = np.logical_or.reduce([masks[c] for c in num])
        den_mask = np.logical_or.reduce([masks[c] for c in den])
        x, n = w[num_mask].sum(), w[den_mask].sum()
        if n == 0:
            out[rate] = out[f"{rate}_lower"] = out[f"{rate}_upper"] = np.nan
            continue
        n_eff = n**2 / np.sum(w[den_mask] ** 2)
        lower, upper = proportion_confint(x / n * n_eff, n_eff, alpha=0.05, method="wilson")
        out[rate], out[f"{rate}_lower"], out[f"{rate}_upper"] = x / n, float(lower), float(upper)
    for key, value in per_thousand(cells).items():
        out[f"{key}_per_1000"] = value
    return out


def withhold_small(row: dict[str, Any], min_count: int) -> dict[str, Any]:
    """Withhold the four cells together, and everything derived from them, when any cell
    (or the table) is below ``min_count``; margins (n, flagged, events) are withheld too
    when themselves small. For weighted cells the rule applies to the rows behind them."""
    out = dict(row)
    rows = {c: out.pop(f"{c}_rows", out[c]) for c in CELLS}
    if min(rows.values()) < min_count:
        for key in list(out):
            if key in CELLS or key.endswith("_per_1000") or any(key.startswith(r) for r in RATES):
                out[key] = np.nan
    for margin in ("n", "flagged", "events"):
        if margin in out and not np.isnan(out[margin]) and out[margin] < min_count:
            out[margin] = np.nan
    return out


def rules_table(p: np.ndarray, y: np.ndarray, thresholds: list[float], top_percents: list[float],
                min_count: int, weight: np.ndarray | None = None) -> pd.DataFrame:
    rows = []
    for t in thresholds:
        rows.append({"rule": f"risk >= {t:g}", "kind": "threshold", "threshold": t,
                     **withhold_small(confusion(y, p >= t, weight), min_count)})
    for k in top_percents:
        flags = top_percent_flags(p, k, weight)
        rows.append({"rule": f"top {k:g}%", "kind": "top_percent", "threshold": float(np.min(p[flags])) if flags.any()
                     else np.nan, "top_percent": k, **withhold_small(confusion(y, flags, weight), min_count)})
    return pd.DataFrame(rows)


def decision_curve(p: np.ndarray, y: np.ndarray, thresholds: np.ndarray, weight: np.ndarray | None = None,
                   min_count: int = 0) -> pd.DataFrame:
    """Net benefit of the model, of flagging all and of flagging none (Vickers and Elkin 2006):
    NB(t) = TP/n - FP/n * t / (1 - t). Withheld where the threshold's table has a cell below
    ``min_count``: with n, the flagged count and the events published, NB_model - NB_all
    would give back TN and FN."""
    y = np.asarray(y).astype(bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    n = w.sum()
    prevalence = w[y].sum() / n
    rows = []
    for t in thresholds:
        odds = t / (1 - t)
        flag = p >= t
        small = min(np.sum(flag & y), np.sum(flag & ~y), np.sum(~flag & y), np.sum(~flag & ~y)) < min_count
        rows.append({"threshold": t,
                     "net_benefit_model": np.nan if small else w[flag & y].sum() / n - w[flag & ~y].sum() / n * odds,
                     "net_benefit_flag_all": prevalence - (1 - prevalence) * odds,
                     "net_benefit_flag_none": 0.0})
    return pd.DataFrame(rows)


GROUP_RATES = tuple(RATES)


def rate_values(cells: dict[str, float]) -> np.ndarray:
    """The six rates of ``RATES`` from the four cells (NaN where a denominator is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.array([sum(cells[c] for c in num) / sum(cells[c] for c in den) for num, den in RATES.values()])


def _rates(y: np.ndarray, flags: np.ndarray, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The six rates within ``mask`` from its weighted cells."""
    return rate_values({"tp": np.float64(w[mask & flags & y].sum()), "fp": np.float64(w[mask & flags & ~y].sum()),
                        "fn": np.float64(w[mask & ~flags & y].sum()), "tn": np.float64(w[mask & ~flags & ~y].sum())})


def _replicate_rates(y: np.ndarray, flags: np.ndarray, w0: np.ndarray, family_code: np.ndarray,
                     masks: np.ndarray, seeds: list) -> np.ndarray:
    """The rates within each group (a row of ``masks``) in the family-bootstrap replicates of
    ``seeds`` (``bootstrap.family_draws``'s draws): shape (replicates, groups, rates). One task."""
    from pipeline.bootstrap import family_multiplicity

    n_families = int(family_code.max()) + 1
    out = np.empty((len(seeds), len(masks), len(RATES)))
    for i, seed in enumerate(seeds):
        w = w0 * family_multiplicity(np.random.default_rng(seed), family_code, n_families)
        for j, mask in enumerate(masks):
            out[i, j] = _rates(y, flags, mask, w)
    return out


def group_rates(pred: pd.DataFrame, flags: np.ndarray, min_count: int, replicates: int, seed: int) -> pd.DataFrame:
    """The rule's rates within each group; difference and ratio against the largest group,
    with 95% percentile intervals from resampling whole families (groups withheld when a
    cell is small; their differences too). The replicates run as tasks (``pipeline.compute``:
    here, or on the Dask cluster of ``compute.scheduler``), each drawing its own families."""
    from pipeline import compute
    from pipeline.bootstrap import seed_chunks

    y = pred["y"].to_numpy().astype(bool)
    w0 = pred["weight"].to_numpy(dtype=float) if "weight" in pred else np.ones(len(pred))
    groups = [(var, level) for var in group_columns(pred) for level in sorted(pred[var].astype(str).unique())]
    masks = np.array([pred[var].astype(str).to_numpy() == level for var, level in groups]).reshape(len(groups), len(pred))
    family_code = pd.factorize(pred["family"].to_numpy())[0]
    parts = compute.map_tasks(_replicate_rates, seed_chunks(replicates, seed, "group_rates"),
                              (y, flags, w0, family_code, masks))
    boot_all = np.concatenate(parts) if parts else np.empty((0, len(groups), len(RATES)))
    column = {group: j for j, group in enumerate(groups)}

    def rates(mask: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _rates(y, flags, mask, w)

    rows = []
    for var in group_columns(pred):
        levels = pred[var].astype(str).to_numpy()
        sizes = pd.Series(levels).value_counts()
        reference = sizes.index[0]
        ref_mask = levels == reference
        ref_point = rates(ref_mask, w0)
        ref_boot = boot_all[:, column[(var, reference)]]
        for level in sorted(sizes.index):
            mask = levels == level
            row = withhold_small({"variable": var, "level": level, "reference_level": reference,
                                  **confusion(y[mask], flags[mask], w0[mask])}, min_count)
            row = {k: v for k, v in row.items() if not k.endswith("_per_1000")}
            if not np.isnan(row["tp"]) and level != reference:
                point = rates(mask, w0)
                boot = boot_all[:, column[(var, level)]]
                with np.errstate(invalid="ignore", divide="ignore"):
                    diff, ratio = boot - ref_boot, boot / ref_boot
                for j, name in enumerate(GROUP_RATES):
                    row[f"{name}_difference"] = point[j] - ref_point[j]
                    row[f"{name}_difference_lower"], row[f"{name}_difference_upper"] = np.nanquantile(
                        diff[:, j], [0.025, 0.975])
                    row[f"{name}_ratio"] = point[j] / ref_point[j] if ref_point[j] else np.nan
                    row[f"{name}_ratio_lower"], row[f"{name}_ratio_upper"] = np.nanquantile(
                        ratio[:, j], [0.025, 0.975])
            rows.append(row)
    table = pd.DataFrame(rows)
    # A single withheld level would follow from the overall table minus the other levels.
    derived = ["flagged", "events"] + [c for c in table.columns if c in CELLS or any(c.startswith(r) for r in RATES)]
    table = complementary_suppression(table, ["variable"], "tp", derived)
    for margin in ("flagged", "events"):
        table = complementary_suppression(table, ["variable"], margin, [margin])
    return complementary_suppression(table, ["variable"], "n", ["n", "flagged", "events"])


def horizon_words(days: float) -> str:
    years = days / 365
    return "a year" if days == 365 else f"{years:g} years" if days % 365 == 0 else f"{days:g} days"


def headline(row: pd.Series | dict[str, Any], horizon_days: float, rule_words: str,
             words: Labels = Labels(), intervals: dict[str, tuple[float, float]] | None = None) -> str:
    """The natural-frequency statement for one rule ("of 1,000 referrals, ..."); with
    ``intervals`` ({"tp_per_1000": (lower, upper), ...}) each figure but the flagged
    (fixed by a top-k% rule) carries its 95% interval, rounded half up."""
    r = dict(row)
    if any(pd.isna(r.get(f"{c}_per_1000")) for c in CELLS):
        return f"For {rule_words}, a cell of the table is below the disclosure threshold, so no figures are shown."
    f = {k: int(r[f"{k}_per_1000"]) for k in PER_1000}

    def ci(key: str, first: bool = False) -> str:
        bounds = (intervals or {}).get(f"{key}_per_1000")
        if bounds is None or any(pd.isna(b) for b in bounds):
            return ""
        lower, upper = (int(np.floor(b + 0.5)) for b in bounds)
        return f" ({'95% CI ' if first else ''}{lower}-{upper})"

    return (f"Of 1,000 {words.subjects}, {f['events']}{ci('events', True)} {words.have_outcome} within "
            f"{horizon_words(horizon_days)}. Flagging {rule_words} flags {f['flagged']}: {f['tp']}{ci('tp')} of them "
            f"{words.have_outcome} and {f['fp']}{ci('fp')} {words.have_not}; {f['fn']}{ci('fn')} {words.missed} "
            "are not flagged.")


#: The headline rule's figures that get intervals from the bootstrap that refits the model.
HEADLINE_MEASURES = (*(f"{c}_per_1000" for c in ("events", "flagged", *CELLS)), *RATES)


def headline_uncertainty(pred: pd.DataFrame, design: tuple[pd.DataFrame, pd.DataFrame] | None, head: pd.Series,
                         percent: float, s: dict[str, Any], seed: int) -> pd.DataFrame:
    """measure, estimate, lower, upper: the headline figures (per 1,000 as published, rounded
    by largest remainders) with 95% percentile intervals from the family bootstrap that
    refits the model (``pipeline.headline_bootstrap``; replicates' per-1,000 values
    unrounded). Withheld (NaN) with the figures; no bootstrap without the design matrices."""
    from functools import partial

    from pipeline import headline_bootstrap

    estimate = {m: float(head[m]) for m in HEADLINE_MEASURES}
    if design is None or any(pd.isna(head[f"{c}_per_1000"]) for c in CELLS):
        table = pd.DataFrame({"measure": list(estimate), "estimate": np.nan, "lower": np.nan, "upper": np.nan,
                              "replicates": 0})
        return table
    dev, val, folds = headline_bootstrap.design_rows(*design, pred)
    draws = headline_bootstrap.refit_replicates(dev, val, partial(headline_measures, percent=percent),
                                                int(s["bootstrap_replicates"]), seed, folds=folds,
                                                n_jobs=int(s.get("n_jobs", 1)), progress=True)
    table = headline_bootstrap.percentile_intervals(draws, estimate)
    table.attrs["method"] = headline_bootstrap.describe(folds, len(draws), draws.attrs["failed_replicates"])
    return table


def _metric(value: Any, whole: bool) -> int | float | None:
    if pd.isna(value):
        return None
    return int(round(float(value))) if whole else round(float(value), 4)


def run(pred: pd.DataFrame, cox: pd.DataFrame | None, s: dict[str, Any], horizon_days: float, min_count: int,
        seed: int, words: Labels = Labels(), design: tuple[pd.DataFrame, pd.DataFrame] | None = None
        ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """All error-rate tables and the headline metrics (pure: predictions and settings in).

    ``design``: the development rows (design columns, y, weight, family) and the validation
    design matrix (rows as ``pred``), for the headline's intervals from the bootstrap that
    refits the model; without it the headline has no intervals."""
    from pipeline.outcome import binary_outcome
    from pipeline.nonparametric import DAYS_PER_MONTH
    from pipeline.plot_tables import long_form

    p, y = pred["p"].to_numpy(), pred["y"].to_numpy()
    weight = pred["weight"].to_numpy(dtype=float)
    weight = None if np.all(weight == 1) else weight
    thresholds = [float(t) for t in s["thresholds"]]
    rules = rules_table(p, y, thresholds, [float(k) for k in s["top_percents"]], min_count, weight)
    default_k = float(s["default_top_percent"])
    flags = top_percent_flags(p, default_k, weight)
    default_rule = f"top {default_k:g}%"
    if default_rule not in set(rules["rule"]):
        rules = pd.concat([rules, rules_table(p, y, [], [default_k], min_count, weight)], ignore_index=True)
    head = rules.loc[rules["rule"] == default_rule].iloc[0]
    groups = group_rates(pred, flags, min_count, int(s["bootstrap_replicates"]), seed)
    grid = np.round(np.arange(float(s["decision_curve"]["from"]), float(s["decision_curve"]["to"]) + 1e-9,
                              float(s["decision_curve"]["step"])), 6)
    curve = decision_curve(p, y, grid, weight, min_count)
    by_threshold = rules[rules["kind"] == "threshold"]
    plot = pd.DataFrame({"threshold": by_threshold["threshold"], "false_positives_per_1000": by_threshold["fp_per_1000"],
                         "false_negatives_per_1000": by_threshold["fn_per_1000"]})
    uncertainty = headline_uncertainty(pred, design, head, default_k, s, seed)
    bounds = {r.measure: (r.lower, r.upper) for r in uncertainty.itertuples()}
    replicates = int(uncertainty["replicates"].max())
    # Long form for dvc plots (pipeline.plot_tables): a withheld value has no row, never a zero.
    tables = {"rules": rules, "by_group": groups, "decision_curve": curve,
              "plot_fp_fn": long_form(plot, "threshold", list(plot.columns[1:]), "per_1000"),
              "plot_decision_curve": long_form(curve, "threshold", list(curve.columns[1:]), "net_benefit"),
              "headline_intervals": uncertainty}
    metrics: dict[str, Any] = {
        "default_rule": default_rule, "horizon_days": horizon_days,
        "statement": headline(head, horizon_days,
                              f"the {default_k:g}% of {words.subjects} with the highest predicted risk", words, bounds)
        + (f" (95% intervals from {replicates} bootstrap resamples, each refitting the model.)" if replicates else "")
        + (f" (Weighted by the inverse probability of censoring: figures for the {words.subjects} as if all were followed "
           "for the whole horizon.)" if weight is not None else ""),
        "validation_referrals": int(len(pred)) if len(pred) >= min_count else None,
        "weighting": "IPCW" if weight is not None else "none",
        "at_default_rule": {k: _metric(head[k], whole=k in CELLS and weight is None or k.endswith("_per_1000"))
                            for k in ("threshold", *CELLS, *RATES, *(f"{r}_lower" for r in RATES),
                                      *(f"{r}_upper" for r in RATES), *(f"{c}_per_1000" for c in PER_1000))},
    }
    # Intervals at the headline rule: the refitting bootstrap's; the fixed-model Wilson ones kept, named so.
    at = metrics["at_default_rule"]
    for r in RATES:
        at[f"{r}_wilson_lower"], at[f"{r}_wilson_upper"] = at.pop(f"{r}_lower"), at.pop(f"{r}_upper")
    for measure, (lower, upper) in bounds.items():
        whole = measure.endswith("_per_1000")
        at[f"{measure}_lower"] = None if pd.isna(lower) else int(np.floor(lower + 0.5)) if whole else round(lower, 4)
        at[f"{measure}_upper"] = None if pd.isna(upper) else int(np.floor(upper + 0.5)) if whole else round(upper, 4)
    metrics["headline_intervals"] = (uncertainty.attrs["method"] if replicates
                                     else "not computed (figures withheld, or no design matrices)")
    metrics["wilson_intervals"] = "*_wilson_lower/_upper: Wilson 95% intervals holding the fitted model fixed"
    if cox is not None and len(cox):
        months = float(s["survival_horizon_months"])
        column = f"risk_{months:g}m"
        horizon = months * DAYS_PER_MONTH
        known, counts = binary_outcome(cox, horizon, "ipcw")
        risk = known[column].to_numpy()
        table = rules_table(risk, known["y"].to_numpy(), thresholds, [float(k) for k in s["top_percents"]],
                            min_count, known["weight"].to_numpy())
        table.insert(0, "horizon_months", months)
        tables["survival_ipcw"] = table
        metrics["survival_model"] = {
            "horizon_months": months, "method": "IPCW (Kaplan-Meier of censoring); Wilson intervals on Kish effective n",
            "rows": counts["rows"] if counts["rows"] >= min_count else None,
            "censored_before_horizon": counts["censored_before_horizon"]
            if counts["censored_before_horizon"] >= min_count else None}
    return tables, metrics


RULE_COLUMNS = ["rule", "kind", "threshold", "n", "flagged", "events", *CELLS,
                *(f"{r}{end}" for r in RATES for end in ("", "_lower", "_upper")),
                *(f"{c}_per_1000" for c in (*CELLS, "flagged", "events")), "top_percent"]
#: Headers of the declared tables, written with no rows when they cannot be estimated.
TABLES = {
    "rules": RULE_COLUMNS,
    "by_group": ["variable", "level", "reference_level", "n", "flagged", "events", *CELLS,
                 *(f"{r}{end}" for r in RATES for end in ("", "_lower", "_upper"))],
    "decision_curve": ["threshold", "net_benefit_model", "net_benefit_flag_all", "net_benefit_flag_none"],
    "plot_fp_fn": ["threshold", "series", "per_1000"],
    "plot_decision_curve": ["threshold", "series", "net_benefit"],
    "headline_intervals": ["measure", "estimate", "lower", "upper", "replicates"],
    "survival_ipcw": ["horizon_months", *RULE_COLUMNS],
}


def not_estimated(reason: str, s: dict[str, Any], horizon_days: float) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """``run``'s outputs without validation predictions: headed tables, and metrics saying why."""
    from pipeline.estimable import empty, record

    metrics: dict[str, Any] = {
        "default_rule": f"top {float(s['default_top_percent']):g}%", "horizon_days": horizon_days,
        "statement": f"How often the model is wrong could not be estimated: {reason}."}
    record(metrics, "error_rates", reason)
    return {name: empty(columns) for name, columns in TABLES.items() if name != "survival_ipcw"}, metrics


def check_settings(s: dict[str, Any], cox: pd.DataFrame | None) -> None:
    """One-line errors for settings the stage cannot use (params.yaml: errors)."""
    from pipeline.cli import InputError

    for t in s["thresholds"]:
        if not 0 < float(t) < 1:
            raise InputError(f"params.yaml: errors.thresholds: {t} is not a probability strictly between 0 and 1")
    for k in [*s["top_percents"], s["default_top_percent"]]:
        if not 0 < float(k) < 100:
            raise InputError(f"params.yaml: errors.top_percents / default_top_percent: {k} is not between 0 and 100")
    grid = s["decision_curve"]
    if not 0 < float(grid["from"]) <= float(grid["to"]) < 1 or float(grid["step"]) <= 0:
        raise InputError("params.yaml: errors.decision_curve: need 0 < from <= to < 1 and step > 0")
    if cox is not None and f"risk_{float(s['survival_horizon_months']):g}m" not in cox:
        months = [c[5:-1] for c in cox.columns if c.startswith("risk_")]
        raise InputError(f"params.yaml: errors.survival_horizon_months is {s['survival_horizon_months']}; "
                         f"the Cox model's risks are at {', '.join(months)} months")


def main() -> None:
    import json
    from pathlib import Path

    from pipeline import compute, config
    from pipeline.io import write_csv, write_json, write_text

    params = config.load_params()
    compute.use(params)      # compute.scheduler: the tasks below run on that Dask cluster
    s = params["errors"]
    min_count = int(params["disclosure"]["min_cell_count"])
    pred = pd.read_parquet("data/predictions/validation.parquet")
    cox_path = Path("data/predictions/cox_validation.parquet")
    cox = pd.read_parquet(cox_path) if cox_path.exists() else None
    check_settings(s, cox)
    from pipeline.cli import InputError
    from pipeline.estimable import binary_problem, empty, record

    logistic_path = Path("metrics/logistic.json")
    problem = (json.loads(logistic_path.read_text()).get("not_estimated", {}).get("logistic_model")
               if logistic_path.exists() else None) or binary_problem(pred["y"], "validation rows")
    horizon_days = float(params["logistic"]["horizon_days"])
    if problem is None:
        design = (pd.read_parquet("data/predictions/development.parquet"),
                  pd.read_parquet("data/predictions/validation_design.parquet"))
        try:
            tables, metrics = run(pred, cox, s, horizon_days, min_count, int(params["seed"]), labels(params), design)
        except ValueError as err:   # design files that do not match the predictions
            raise InputError(f"errors: {err}") from None
    else:
        tables, metrics = not_estimated(problem, s, horizon_days)
    if cox is None or not len(cox):
        tables["survival_ipcw"] = empty(TABLES["survival_ipcw"])   # never leave an earlier run's table behind
        record(metrics, "survival_model_error_rates", "no validation risks from the Cox model "
               "(see metrics/calibration.json)")
    for name, table in tables.items():
        if not len(table.columns) and name in TABLES:   # no groups to describe: still a headed table
            table = pd.DataFrame(columns=TABLES[name])
        write_csv(table, Path("reports/errors") / f"{name}.csv")
    # The sentence is report text, not a metric: `dvc metrics diff` and `dvc exp show` stay
    # narrow; its figures are the metrics' short "headline" block and reports/errors/default_rule.json.
    statement = metrics.pop("statement")
    write_text(statement + "\n", HEADLINE)
    # Every figure of the headline rule with its intervals is a report table; the metrics keep
    # the few a one-parameter experiment is judged by, so `dvc exp show` fits a terminal.
    at_rule = metrics.pop("at_default_rule", {})
    write_json(at_rule, DEFAULT_RULE)
    metrics = {"headline": headline_metrics(metrics.get("default_rule"), at_rule), **metrics}
    write_json(metrics, Path("metrics/errors.json"))
    print(f"errors: {statement}")


if __name__ == "__main__":
    from pipeline.cli import stage_entry

    stage_entry(main)()
