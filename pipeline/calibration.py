"""``calibration`` stage: calibration and discrimination of the logistic and Cox models on
the validation families (measures in ``pipeline.scoring``, checked against rms ``val.prob``):
optimism-corrected measures (Harrell's bootstrap, whole families), lowess calibration curve
with a family-bootstrap band, deciles, subgroups and LAs, recalibration, and the
development Cox model's calibration at each horizon.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from pipeline import cox_model
from pipeline.disclosure import complementary_suppression
from pipeline.nonparametric import DAYS_PER_MONTH
from pipeline.config import seed_sequence
from pipeline.outcome import COMPETING_ENDS
from pipeline.schema import group_columns
from pipeline.scoring import c_statistic, logistic_recalibration, lowess_calibration, val_prob
from pipeline.time_dependent import horizon_scores


def decile_table(p: np.ndarray, y: np.ndarray, min_count: int, groups: int = 10,
                 weights: np.ndarray | None = None) -> pd.DataFrame:
    """Observed against expected by tenth of predicted risk (counts below min_count withheld).
    With weights (IPCW), the observed rate and mean prediction are weighted means and the
    observed and expected events are both those rates times the tenth's rows (so they can
    be compared); suppression still counts rows."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    tenth = pd.qcut(pd.Series(p).rank(method="first"), groups, labels=False) + 1
    frame = pd.DataFrame({"tenth": tenth, "y": y, "w": w, "wp": w * p, "wy": w * y})
    out = frame.groupby("tenth").agg(n=("y", "size"), observed_events=("y", "sum"), w=("w", "sum"),
                                     wp=("wp", "sum"), wy=("wy", "sum")).reset_index()
    out["mean_predicted"] = out["wp"] / out["w"]
    out["observed_rate"] = out["wy"] / out["w"]
    out["expected_events"] = out["mean_predicted"] * out["n"]
    small = out["observed_events"] < min_count          # the rule counts rows, weighted or not
    if weights is not None and not np.all(w == 1):
        # comparable with expected_events: the weighted observed rate over the tenth's rows
        out["observed_events"] = out["observed_rate"] * out["n"]
    out = out[["tenth", "n", "observed_events", "mean_predicted", "observed_rate", "expected_events"]]
    out.loc[small, ["observed_events", "observed_rate"]] = np.nan
    out.loc[out["n"] < min_count, ["n", "expected_events"]] = np.nan
    return out


def c_interval_bootstrap(p: np.ndarray, y: np.ndarray, weights: np.ndarray, family: np.ndarray,
                         replicates: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the (weighted) C statistic over family bootstrap
    replicates: DeLong's variance has no weighted form, so IPCW results use this."""
    from pipeline.bootstrap import family_draws

    draws = [c_statistic(p, y, weights * times) for times in family_draws(family, replicates, seed, stream="c_interval")]
    lower, upper = np.quantile(draws, [0.025, 0.975])
    return float(lower), float(upper)


def curve(p: np.ndarray, y: np.ndarray, family: np.ndarray | None = None, replicates: int = 200,
          seed: int = 0, points: int = 101, weights: np.ndarray | None = None, n_jobs: int = 1) -> pd.DataFrame:
    """The lowess calibration curve on a grid of predicted risk, the ideal diagonal, and a
    95% percentile band from resampling whole families (when ``family`` is given; the
    replicates of ``bootstrap.family_draws``, run in ``n_jobs`` processes)."""
    from pipeline.bootstrap import family_seeds
    from pipeline.calibration_uncertainty import in_chunks

    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    grid = np.linspace(np.quantile(p, 0.01), np.quantile(p, 0.99), points)
    out = pd.DataFrame({"predicted": grid, "observed": _curve_on_grid(p, y, grid, w), "ideal": grid})
    if family is not None and replicates:
        code = pd.factorize(np.asarray(family))[0]          # as family_draws: the same multiplicities
        draws = np.array(in_chunks(_curve_replicates, (p, y, grid, w, code),
                                   family_seeds(replicates, seed, "calibration_curve_band"), n_jobs))
        out["lower"], out["upper"] = np.quantile(draws, [0.025, 0.975], axis=0)
    return out


def _curve_on_grid(p: np.ndarray, y: np.ndarray, grid: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The lowess smooth of y on p (weights w; rows weighted 0 left out) read on ``grid``."""
    used = w > 0
    pp = p[used]
    order = np.argsort(pp, kind="stable")
    return np.interp(grid, pp[order], lowess_calibration(pp, y[used], w[used])[order])


def _curve_replicates(p: np.ndarray, y: np.ndarray, grid: np.ndarray, w: np.ndarray, family_code: np.ndarray,
                      seeds: list) -> list:
    """``_curve_on_grid`` of the family-bootstrap replicates of ``seeds`` (one task)."""
    from pipeline.bootstrap import family_multiplicity

    n_families = int(family_code.max()) + 1
    return [_curve_on_grid(p, y, grid, w * family_multiplicity(np.random.default_rng(s), family_code, n_families))
            for s in seeds]


def survival_calibration(risk: np.ndarray, rows: pd.DataFrame, horizon: float
                         ) -> tuple[dict[str, float], pd.DataFrame]:
    """Calibration of predicted risks of re-referral by the horizon, 1 - S(horizon | x).

    Observed risk has one definition throughout the project (``pipeline.outcome``): the
    status at the horizon with competing ends (entering care, turning 18) a "no", each
    row weighted by the inverse probability of remaining uncensored, so that the weighted
    share re-referred is exactly the Aalen-Johansen cumulative incidence (Satten and Datta
    2001). ``rows``: ``time_days``, ``event`` and (when there are competing ends)
    ``event_type``.

    On those weighted statuses, the measures of ``val_prob``: calibration-in-the-large and
    slope (weighted logistic recalibration), and ICI, E50, E90 (mean, median and 90th
    percentile of |predicted - lowess smooth of the status on the prediction|; Austin and
    Steyerberg 2019). ``mean_observed`` is the Aalen-Johansen estimate at the horizon and
    ``observed_expected`` its ratio to the mean predicted risk. A model of the cause-specific
    hazard (competing ends censored) predicts the risk in a world without competing ends,
    so it overstates the real risk where competing ends are common: the calibration shows it.
    """
    from pipeline.estimable import binary_problem
    from pipeline.outcome import binary_outcome

    risk = np.clip(np.asarray(risk, dtype=float), 1e-8, 1 - 1e-8)
    known, _ = binary_outcome(rows.reset_index(drop=True).assign(_risk=risk), horizon, "ipcw")
    p, y, w = known["_risk"].to_numpy(), known["y"].to_numpy(), known["weight"].to_numpy()
    problem = binary_problem(y[w > 0], f"validation rows with a known status at {horizon:g} days")
    if problem is not None:
        raise ValueError(problem)
    v = val_prob(p, y, w, intervals=False)
    observed = float((y * w).sum() / len(rows))
    smooth = lowess_calibration(p, y, w)
    order = np.argsort(p, kind="stable")
    grid = np.quantile(risk, np.linspace(0.01, 0.99, 99))
    summary = {"ici": v["eavg"], "e50": v["e50"], "e90": v["e90"], "citl": v["citl"], "slope": v["slope"],
               "mean_predicted": float(risk.mean()), "mean_observed": observed,
               "observed_expected": observed / float(risk.mean())}
    return summary, pd.DataFrame({"predicted": grid, "observed": np.interp(grid, p[order], smooth[order]),
                                  "ideal": grid})


def observed_by_risk_tenth(risk: np.ndarray, rows: pd.DataFrame, horizon: float, min_count: int) -> pd.DataFrame:
    """Mean predicted risk against the observed risk (Aalen-Johansen, competing ends a "no";
    95% CI) at the horizon, per tenth of predicted risk."""
    from pipeline.nonparametric import aalen_johansen, step_read

    tenth = pd.qcut(pd.Series(risk).rank(method="first"), 10, labels=False).to_numpy() + 1
    time = rows["time_days"].to_numpy(dtype=float)
    cause = np.where(rows["event"].to_numpy() == 1, 1, 0)
    if "event_type" in rows:
        cause = np.where(rows["event_type"].isin(COMPETING_ENDS).to_numpy(), 2, cause)
    out = []
    for d in range(1, 11):
        m = tenth == d
        aj = aalen_johansen(time[m], cause[m], 1)
        observed, lo, hi = (float(step_read(aj["time"], aj[c], horizon, 0.0)[0]) for c in ("cif", "lower", "upper"))
        n = int(m.sum())
        out.append({"tenth": d, "n": n if n >= min_count else np.nan, "mean_predicted": float(risk[m].mean()),
                    "observed": observed, "observed_lower": lo, "observed_upper": hi})
    return pd.DataFrame(out)


def cox_validation_risks(rereport: pd.DataFrame, params: dict[str, Any], months: list[float],
                         model_path: Path = cox_model.DEVELOPMENT) -> tuple[pd.DataFrame, dict[str, int]]:
    """Predicted risks 1 - S(t | x) at each horizon for the validation families, from the
    development Cox model the survival stage saved (``pipeline.cox_model``; LA strata
    baselines). Raises ValueError with the saved reason when it could not be estimated."""
    model, saved = cox_model.load(model_path)
    if model is None:
        raise ValueError(saved.get("status", "the development Cox model could not be estimated"))
    _, val, _ = cox_model.development_rows(rereport, params["logistic"], int(params["seed"]))
    risks = cox_model.predict_risks(model, saved, val, [m * DAYS_PER_MONTH for m in months])
    keep = ~np.isnan(risks[:, 0])
    out = pd.DataFrame(risks[keep], columns=[risk_column(m) for m in months])
    out["time_days"], out["event"] = val["time_days"].to_numpy()[keep], val["event"].to_numpy()[keep]
    if "event_type" in val:
        out["event_type"] = val["event_type"].to_numpy()[keep]
    out["family"] = pd.factorize(val["family_id"])[0][keep]          # anonymous: for resampling only
    return out, {"model": saved["name"], "validation_rows": int(keep.sum()),
                 "rows_in_strata_unseen_in_development": int((~keep).sum())}


def subgroup_calibration(pred: pd.DataFrame, min_count: int, replicates: int = 0, seed: int = 0, n_jobs: int = 1
                         ) -> pd.DataFrame:
    """O/E, calibration-in-the-large, slope and ICI within each subgroup and LA, with 95%
    intervals and the noise floor of ICI and E90 (``calibration_uncertainty``; none when
    ``replicates`` is 0). Groups with fewer than ``min_count`` events or non-events are
    withheld (counts and measures)."""
    from pipeline import compute
    from pipeline.calibration_uncertainty import with_intervals

    rows, measured, groups = [], [], []
    for var in group_columns(pred):
        for level, g in pred.groupby(pred[var].astype(str), sort=True):
            events = int(g["y"].sum())
            row = {"variable": var, "level": level, "n": len(g), "events": events}
            if min(events, len(g) - events) < max(min_count, 2):
                row.update(n=np.nan, events=np.nan)
            else:
                v = val_prob(g["p"], g["y"], g["weight"] if "weight" in g else None)
                measured.append((row, dict(observed_expected=v["observed_expected"], citl=v["citl"], slope=v["slope"],
                                           ici=v["eavg"], e90=v["e90"], c=v["c"])))
                groups.append((g["p"].to_numpy(), g["y"].to_numpy(),
                               g["weight"].to_numpy() if "weight" in g else np.ones(len(g)), g["family"].to_numpy(),
                               f"calibration_subgroup/{var}={level}"))
            rows.append(row)
    # One task per group (here in n_jobs processes, or on the Dask cluster of compute.scheduler).
    found = compute.map_tasks(_group_uncertainty, groups, (replicates, seed), n_jobs) if replicates else [{}] * len(groups)
    for (row, values), intervals in zip(measured, found):
        row.update(with_intervals(values, intervals))
    return complementary_suppression(pd.DataFrame(rows), ["variable"], "n", ["n", "events"])


def _group_uncertainty(replicates: int, seed: int, group: tuple) -> dict[str, Any]:
    """``calibration_uncertainty.binary_uncertainty`` for one subgroup (one task)."""
    from pipeline.calibration_uncertainty import binary_uncertainty

    p, y, w, family, stream = group
    return binary_uncertainty(p, y, w, family, replicates, seed, stream)


def fold_calibration(pred: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """Grouped k-fold split: the measures within each fold's out-of-fold predictions."""
    rows = []
    for fold, g in pred.groupby("fold", sort=True):
        events = int(g["y"].sum())
        v = val_prob(g["p"], g["y"], g["weight"])
        small = min(events, len(g) - events) < min_count
        rows.append({"fold": int(fold), "n": np.nan if small else len(g), "events": np.nan if small else events,
                     "observed_expected": v["observed_expected"], "citl": v["citl"], "slope": v["slope"],
                     "ici": v["eavg"], "brier": v["brier"], "c": v["c"]})
    return pd.DataFrame(rows)


def recalibration(pred: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Logistic (intercept and slope) and isotonic recalibration, each fitted on one half
    of the validation families and assessed, with the original, on the other half."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed_sequence(seed, "recalibration_split"))
    families = pred["family"].unique()
    fit_half = np.isin(pred["family"], rng.choice(families, size=len(families) // 2, replace=False))
    a, b = pred[fit_half], pred[~fit_half]
    w_a = a["weight"].to_numpy() if "weight" in a else np.ones(len(a))
    w_b = b["weight"].to_numpy() if "weight" in b else None
    lp_a, lp_b = special.logit(a["p"].to_numpy()), special.logit(b["p"].to_numpy())
    intercept, slope = logistic_recalibration(lp_a, w_a * a["y"].to_numpy(), w_a)
    logistic_p = special.expit(intercept + slope * lp_b)
    iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip").fit(a["p"], a["y"], sample_weight=w_a)
    isotonic_p = np.clip(iso.predict(b["p"]), 1e-6, 1 - 1e-6)
    rows = []
    for name, p in (("original", b["p"].to_numpy()), ("logistic_recalibration", logistic_p),
                    ("isotonic_recalibration", isotonic_p)):
        v = val_prob(p, b["y"], w_b)
        rows.append({"method": name, "observed_expected": v["observed_expected"], "citl": v["citl"],
                     "slope": v["slope"], "ici": v["eavg"], "e90": v["e90"], "brier": v["brier"], "c": v["c"]})
    out = pd.DataFrame(rows)
    out.attrs["fitted_on"], out.attrs["assessed_on"] = int(fit_half.sum()), int((~fit_half).sum())
    out.attrs["logistic"] = {"intercept": float(intercept), "slope": float(slope)}
    return out


#: Declared outputs' headers, written with no rows when a part could not be estimated.
TABLES = {
    "optimism": ["measure", "apparent", "optimism", "corrected"],
    "subgroups": ["variable", "level", "n", "events"],
    "folds": ["fold", "n", "events"],
    "recalibration": ["method", "observed_expected", "citl", "slope", "ici", "e90", "brier", "c"],
    "intervals": ["measure", "value", "lower", "upper", "interval", "noise_floor_p50", "noise_floor_p95", "reading"],
    "deciles": ["tenth", "n", "observed_events", "mean_predicted", "observed_rate", "expected_events"],
    "curve": ["predicted", "observed", "ideal", "lower", "upper"],
    "cox_calibration": ["horizon_months", "ici", "e50", "e90", "citl", "slope", "mean_predicted", "mean_observed",
                        "observed_expected", "auc", "auc_lower", "auc_upper", "brier", "brier_lower", "brier_upper",
                        "null_brier", "ipa"],
    "cox_curves": ["predicted", "observed", "ideal", "horizon_months"],
    "cox_by_tenth": ["tenth", "n", "mean_predicted", "observed", "observed_lower", "observed_upper", "horizon_months"],
}


def risk_column(months: float) -> str:
    """The column of predicted risk by ``months`` in ``cox_validation.parquet``."""
    return f"risk_{float(months):g}m"


def logistic_calibration(pred: pd.DataFrame, dev: pd.DataFrame, params: dict[str, Any], min_count: int
                         ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The logistic model's calibration on the validation predictions, with the bootstrap
    optimism of its development fit (whole families resampled)."""
    from pipeline import bootstrap, logistic_model

    weights = pred["weight"].to_numpy()
    weighted = not np.all(weights == 1)
    c = params["calibration"]
    replicates = int(c["bootstrap_replicates"])
    validation = val_prob(pred["p"], pred["y"], weights)
    if weighted:   # IPCW: DeLong has no weighted form; a family-bootstrap percentile interval instead
        validation["c_lower"], validation["c_upper"] = c_interval_bootstrap(
            pred["p"].to_numpy(), pred["y"].to_numpy(), weights, pred["family"].to_numpy(), replicates,
            int(params["seed"]))
    from pipeline import calibration_uncertainty as uncertainty

    found = uncertainty.binary_uncertainty(pred["p"], pred["y"], weights, pred["family"], replicates,
                                           int(params["seed"]), "calibration_validation", int(c["n_jobs"]))
    validation = uncertainty.with_intervals(validation, found, flat=False, names={"eavg": "ici"})
    metrics = {"weighting": ("inverse probability of censoring weights: every measure weighted; C interval by "
                             "family bootstrap percentiles; Spiegelhalter z not defined" if weighted else "none"),
               "validation": validation,
               "intervals": {k: v.format(replicates=replicates) for k, v in uncertainty.INTERVAL_METHODS.items()}}
    columns = [c for c in dev.columns if c not in ("y", "weight", "family")]
    table = bootstrap.optimism(dev[columns].to_numpy(dtype=float), dev["y"].to_numpy(), dev["weight"].to_numpy(),
                               dev["family"].to_numpy(), logistic_model.fit_model, logistic_model.score_model,
                               replicates=replicates, seed=int(params["seed"]),
                               n_jobs=int(c["n_jobs"]), progress=True)
    tables = {"optimism": table.reset_index(), "subgroups": subgroup_calibration(pred, min_count, replicates,
                                                                                int(params["seed"]), int(c["n_jobs"])),
              "intervals": uncertainty.interval_table(validation, replicates, "family bootstrap percentile" if weighted
                                                      else "DeLong")}
    if "fold" in pred:
        tables["folds"] = fold_calibration(pred, min_count)
    recal = recalibration(pred, int(params["seed"]))
    tables["recalibration"] = recal
    metrics["recalibration"] = {"fitted_on_rows": recal.attrs["fitted_on"], "assessed_on_rows": recal.attrs["assessed_on"],
                                "logistic": recal.attrs["logistic"]}
    metrics["optimism_corrected"] = {k: round(float(v), 4) for k, v in table["corrected"].items()}
    metrics["bootstrap_replicates"] = int(c["bootstrap_replicates"])
    tables["deciles"] = decile_table(pred["p"], pred["y"], min_count, weights=weights)
    tables["curve"] = curve(pred["p"], pred["y"], pred["family"], replicates, int(params["seed"]), weights=weights,
                            n_jobs=int(c["n_jobs"]))
    return tables, metrics


def cox_calibration(risks: pd.DataFrame, months: list[float], min_count: int, replicates: int = 0, seed: int = 0,
                    n_jobs: int = 1) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The Cox model's calibration at each horizon (``calibration.cox_horizons_months``) on
    the validation families, with AUC(t), Brier(t), the null model's Brier and IPA
    (``pipeline.time_dependent``, as riskRegression's Score), and the calibration measures'
    intervals and noise floor (``calibration_uncertainty``; none when ``replicates`` is 0)."""
    from pipeline.calibration_uncertainty import horizon_uncertainty, rounded, with_intervals

    surv_rows, curves, tenths = [], [], []
    for m in months:
        horizon = m * DAYS_PER_MONTH
        summary, grid = survival_calibration(risks[risk_column(m)].to_numpy(), risks, horizon)
        competing = risks["event_type"].isin(COMPETING_ENDS) if "event_type" in risks else None
        found = horizon_uncertainty(risks[risk_column(m)].to_numpy(), risks, horizon, summary["observed_expected"],
                                    replicates, seed, f"cox_calibration/{m:g}", n_jobs) if replicates else {}
        surv_rows.append({"horizon_months": m, **with_intervals({**summary, **horizon_scores(  # AUC(t), Brier(t), IPA as Score
            risks[risk_column(m)], risks["time_days"], risks["event"], horizon, competing)}, found)})
        curves.append(grid.assign(horizon_months=m))
        tenths.append(observed_by_risk_tenth(risks[risk_column(m)].to_numpy(), risks, horizon, min_count
                                             ).assign(horizon_months=m))
    metrics = {f"{r['horizon_months']:g}_months": rounded({k: v for k, v in r.items() if k != "horizon_months"})
               for r in surv_rows}
    return ({"cox_calibration": pd.DataFrame(surv_rows), "cox_curves": pd.concat(curves, ignore_index=True),
             "cox_by_tenth": pd.concat(tenths, ignore_index=True)}, metrics)


def main() -> None:
    """Calibration of the logistic model on the validation data, and of the Cox model.

    Each part that cannot be estimated (no validation predictions because the logistic
    model could not be fitted; a Cox model without events, say) writes its tables with
    their header and no rows, and ``status`` / ``not_estimated`` in the metrics say why."""
    from pipeline import compute, config
    from pipeline.cli import InputError
    from pipeline.estimable import binary_problem, empty, model_problem, record
    from pipeline.io import write_csv, write_json, write_parquet

    params = config.load_params()
    compute.use(params)      # compute.scheduler: the tasks below run on that Dask cluster
    min_count = int(params["disclosure"]["min_cell_count"])
    pred = pd.read_parquet("data/predictions/validation.parquet")
    dev = pd.read_parquet("data/predictions/development.parquet")
    metrics: dict[str, Any] = {"horizon_days": params["logistic"]["horizon_days"],
                               "censoring": params["logistic"]["censoring"]}
    logistic_status = json.loads(Path("metrics/logistic.json").read_text()).get("not_estimated", {}).get(
        "logistic_model") if Path("metrics/logistic.json").exists() else None
    problem = logistic_status or binary_problem(pred["y"], "validation rows")
    tables: dict[str, pd.DataFrame] = {}
    if problem is None:
        tables, found = logistic_calibration(pred, dev, params, min_count)
        metrics.update(found)
    else:
        record(metrics, "logistic_calibration", problem)
        tables = {name: empty(TABLES[name]) for name in ("optimism", "subgroups", "recalibration", "deciles", "curve",
                                                         "intervals")}
    # The development Cox model's predicted risks at each horizon, on the validation families.
    rereport = pd.read_parquet("data/analysis/rereport.parquet")
    months = [float(m) for m in params["calibration"]["cox_horizons_months"]]
    risk_columns = {risk_column(m): float for m in months}
    risks = pd.DataFrame({**{c: pd.Series(dtype=t) for c, t in risk_columns.items()},
                          "time_days": pd.Series(dtype=float), "event": pd.Series(dtype=np.int8),
                          "family": pd.Series(dtype=np.int64)})
    problem = model_problem(rereport["time_days"], rereport["event"])
    if problem is None:
        try:
            risks, counts = cox_validation_risks(rereport, params, months)
            metrics["cox"] = counts
            problem = model_problem(risks["time_days"], risks["event"])
            if problem is not None:
                problem = f"validation rows with predicted risks: {problem}"
        except (InputError, ValueError) as err:
            problem = str(err)
    if problem is None:
        try:
            found_tables, found = cox_calibration(risks, months, min_count,
                                                  int(params["calibration"]["bootstrap_replicates"]), int(params["seed"]),
                                                  int(params["calibration"]["n_jobs"]))
            tables.update(found_tables)
            metrics["cox"].update(found)
        except (ValueError, np.linalg.LinAlgError) as err:   # e.g. too few validation rows for the smooth
            problem = str(err)
    if problem is not None:
        record(metrics, "cox_calibration", problem)
        tables.update({name: empty(TABLES[name]) for name in ("cox_calibration", "cox_curves", "cox_by_tenth")})
    write_parquet(risks, Path("data/predictions/cox_validation.parquet"))   # for the errors stage
    for name, table in tables.items():
        if not len(table.columns) and name in TABLES:   # no groups to describe: still a headed table
            table = pd.DataFrame(columns=TABLES[name])
        write_csv(table, Path("reports/calibration") / f"{name}.csv")
    order = ["horizon_days", "censoring", "weighting", "validation", "cox", "recalibration", "optimism_corrected"]
    metrics = {**{k: metrics[k] for k in order if k in metrics}, **metrics}   # the usual order of the keys
    write_json(metrics, Path("metrics/calibration.json"))
    v = metrics.get("validation")
    print("calibration: " + "; ".join(
        ([f"validation O/E {v['observed_expected']:.3f}, slope {v['slope']:.3f}, ICI {v['eavg']:.4f}, C {v['c']:.3f}"]
         if v else []) + ([metrics["status"]] if "status" in metrics else [])))


if __name__ == "__main__":
    from pipeline.cli import stage_entry

    stage_entry(main)()
