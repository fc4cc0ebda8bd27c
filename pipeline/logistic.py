"""Logistic models of re-referral within a horizon (core functions; the stage follows).

* ``pipeline.outcome.binary_outcome``: re-referred within H days (competing ends a known
  "no"; rows without H days of possible follow-up excluded or IPCW-weighted).
* ``pipeline.split``: index dates before the cut-off develop, after it validate, with no
  family on both sides (``temporal``), or a seeded random share of whole clusters validates
  (``random_clusters``; also when the input has no index dates, stated).
  ``grouped_kfold_predictions`` (option): out-of-fold predictions, whole families per fold.
* ``fit_logit``: statsmodels Logit with family-cluster robust (sandwich) SEs, odds ratios
  and 95% CIs; ``pipeline.logistic_model.prediction_pipeline``: the same model as a scikit-learn Pipeline
  (optional restricted cubic splines, then ``newton-cholesky`` with no penalty) for
  prediction. Covariates are coded once (``pipeline.design``) and the inference model
  is fitted to the pipeline's own design, so their coefficients agree (tested to 1e-6).

When the table gives no rows of known outcome, or the development or validation rows all
have the same outcome, or no covariate varies (``pipeline.estimable``), the stage still
writes its declared outputs (headed, no rows; an empty model) and its metrics say why the
model could not be estimated (``status``), so calibration, errors and the report say so too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from sklearn.model_selection import GroupKFold

from pipeline.compute import map_tasks
from pipeline.logistic_model import prediction_pipeline
from pipeline.outcome import binary_outcome
from pipeline.config import seed_sequence
from pipeline.estimable import binary_problem, record
from pipeline.schema import CASE_LEVEL_GROUPS
from pipeline.split import validation_split
from pipeline.design import design_matrix
from pipeline import table_one

def fit_logit(X: pd.DataFrame, y: pd.Series, cluster: pd.Series | None = None,
              weight: np.ndarray | None = None) -> pd.DataFrame:
    """Odds ratios with Wald 95% CIs from family-cluster robust SEs (statsmodels)."""
    exog = sm.add_constant(X, has_constant="add")
    if weight is not None and not np.allclose(weight, 1):
        model = sm.GLM(y, exog, family=sm.families.Binomial(), freq_weights=None, var_weights=weight)
    else:
        model = sm.Logit(y, exog)
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": pd.factorize(cluster)[0]}} if cluster is not None else {}
    fit = model.fit(disp=0, **kw) if isinstance(model, sm.Logit) else model.fit(**kw)
    z = stats.norm.ppf(0.975)
    out = pd.DataFrame({"coef": fit.params, "se": fit.bse, "or": np.exp(fit.params),
                        "or_lower": np.exp(fit.params - z * fit.bse), "or_upper": np.exp(fit.params + z * fit.bse),
                        "p": fit.pvalues})
    out.index.name = "term"
    return out


def cox_snell_r2(loglik_model: float, loglik_null: float, n: int) -> float:
    """R^2_CS = 1 - exp(2 (logL_null - logL_model) / n) (Cox and Snell 1989)."""
    return float(1 - np.exp(2 * (loglik_null - loglik_model) / n))


def grouped_kfold_predictions(X: pd.DataFrame, y: np.ndarray, weight: np.ndarray, family: pd.Series,
                              splines: dict[str, int] | None, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predicted risk for every row, each from the whole pipeline (splines'
    knots included) refitted without the row's family (scikit-learn ``GroupKFold``,
    families shuffled by the named stream "grouped_kfold" of ``seed``); and each row's fold."""
    p, fold = np.full(len(y), np.nan), np.zeros(len(y), dtype=int)
    shuffle = np.random.RandomState(np.random.MT19937(seed_sequence(seed, "grouped_kfold")))   # sklearn's RNG type
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=shuffle)
    splits = list(splitter.split(X, y, groups=family))
    for k, (train, _) in enumerate(splits):
        if np.unique(y[train]).size < 2:
            raise ValueError(f"fold {k + 1} of {folds}: the other folds hold only one outcome; use fewer folds")
    # One task per fold (pipeline.compute: here in turn, or on the Dask cluster of compute.scheduler).
    for k, ((_, test), risk) in enumerate(zip(splits, map_tasks(fold_risk, splits, (X, y, weight, splines)))):
        p[test], fold[test] = risk, k + 1
    return p, fold


def fold_risk(X: pd.DataFrame, y: np.ndarray, weight: np.ndarray, splines: dict[str, int] | None,
              split: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One fold of ``grouped_kfold_predictions``: the pipeline fitted to the training rows,
    its predicted risk for the held-out rows."""
    train, test = split
    model = prediction_pipeline(splines).fit(X.iloc[train], y[train], model__sample_weight=weight[train])
    return model.predict_proba(X.iloc[test])[:, 1]


def run(df: pd.DataFrame, s: dict[str, Any], extract_date: pd.Timestamp | None = None, seed: int = 0,
        min_count: int = 10) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]]:
    """Outcome, split, fit, validation predictions (pure: analysis table and settings in).

    ``split: temporal`` validates on families first seen after ``cutoff``;
    ``split: grouped_kfold`` validates on out-of-fold predictions for every row
    (``folds`` folds of whole families), the reported model being fitted to all rows.
    Table 1 (``table1``: ``pipeline.table_one``) describes the rows split and by outcome,
    counts below ``min_count`` withheld; it is written whether or not a model can be fitted.
    """
    from pipeline.samplesize import riley_binary

    data, outcome_counts = binary_outcome(df, float(s["horizon_days"]), s["censoring"], extract_date)
    split = s.get("split", "temporal")
    splines = dict(s.get("splines") or {})
    unknown = sorted(set(splines) - set(s["covariates"]))
    if unknown:
        raise ValueError(f"logistic.splines names {', '.join(unknown)}, not in logistic.covariates")
    if data.empty:
        return with_table_one(not_estimated("no rows with a known outcome at the horizon", s, outcome_counts,
                                            {"method": split}), table_one.empty())
    if split in ("temporal", "random_clusters"):
        dev, val, split_counts = validation_split(data, s, seed)
        split = split_counts.pop("method")
    elif split == "grouped_kfold":
        dev = val = data
        split_counts = {"folds": int(s["folds"]), "rows": int(len(data)), "families": int(data["family_id"].nunique())}
    else:
        raise ValueError(f"logistic.split must be temporal, random_clusters or grouped_kfold, not {split!r}")
    described = table_one.describe_split(dev, val, s, min_count)
    problem = binary_problem(dev["y"], "development rows") or binary_problem(val["y"], "validation rows")
    if problem is not None and split == "temporal":
        problem += " (move logistic.cutoff)"
    X_dev, reference = design_matrix(dev, s["covariates"], s.get("categorical", []))
    if problem is None and X_dev.shape[1] == 0:
        problem = "no covariate varies in the development rows"
    if problem is None and X_dev.shape[1] + 1 >= len(dev):
        problem = "as many model parameters as development rows (a categorical covariate with a level per row?)"
    if problem is not None:
        return with_table_one(not_estimated(problem, s, outcome_counts, {"method": split, **split_counts}), described)
    X_val, _ = design_matrix(val, s["covariates"], s.get("categorical", []), reference)
    X_val = X_val.reindex(columns=X_dev.columns, fill_value=0.0)
    y_dev, w_dev = dev["y"].to_numpy(), dev["weight"].to_numpy()
    model = prediction_pipeline(splines).fit(X_dev, y_dev, model__sample_weight=w_dev)
    # The inference model is fitted to the pipeline's own design, so the two agree.
    design = pd.DataFrame(model["design"].transform(X_dev), columns=model["design"].get_feature_names_out(),
                          index=X_dev.index)
    odds = fit_logit(design, dev["y"], cluster=dev["family_id"], weight=w_dev)
    fold = None
    if split == "grouped_kfold":
        # Families as first-seen codes, not their pseudonyms: folds must not depend on the secret key.
        try:
            p_val, fold = grouped_kfold_predictions(X_dev, y_dev, w_dev, pd.factorize(dev["family_id"])[0], splines,
                                                    int(s["folds"]), seed)
        except ValueError as err:   # too few families or one outcome in a fold's training rows
            return with_table_one(not_estimated(str(err), s, outcome_counts, {"method": split, **split_counts}),
                                  described)
    else:
        p_val = model.predict_proba(X_val)[:, 1]
    p_dev = model.predict_proba(X_dev)[:, 1]
    ll = float(np.sum(y_dev * np.log(p_dev) + (1 - y_dev) * np.log(1 - p_dev)))
    rate = y_dev.mean()
    ll0 = float(len(y_dev) * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))
    r2 = cox_snell_r2(ll, ll0, len(y_dev))
    n_params = design.shape[1]
    size = riley_binary(r2, n_params, float(rate))
    groups = [c for c in s.get("groups", CASE_LEVEL_GROUPS) if c in val.columns]
    predictions = pd.DataFrame({
        "p": p_val, "y": val["y"].to_numpy(), "weight": val["weight"].to_numpy(),
        # families as anonymous integers: for resampling whole families, never to identify one
        "family": pd.factorize(val["family_id"])[0],
        **({"index_date": val["index_date"].to_numpy()} if "index_date" in val else {}),
        **({"fold": fold} if fold is not None else {}),
        **{g: val[g].astype(str).to_numpy() for g in groups},
    })
    lr = model["model"]
    model_json = {"terms": ["(intercept)", *design.columns], "coef": [float(lr.intercept_[0]), *map(float, lr.coef_[0])],
                  "reference_levels": reference, "covariates": s["covariates"], "categorical": s.get("categorical", []),
                  "spline_knots": {c: [float(k) for k in model["design"].named_transformers_[f"rcs_{c}"].knots_[0]]
                                   for c in splines},
                  "horizon_days": s["horizon_days"]}
    metrics = {
        "horizon_days": s["horizon_days"], "outcome": outcome_counts, "split": {"method": split, **split_counts},
        "covariates_not_recorded_in_this_input": s.get("not_recorded", []),
        "development": {"n": int(len(dev)), "events": int(y_dev.sum()), "event_rate": round(float(rate), 4),
                        "parameters": int(n_params), "events_per_parameter": round(float(y_dev.sum() / n_params), 1),
                        "r2_cox_snell": round(r2, 4)},
        "validation": {"n": int(len(val)), "events": int(val["y"].sum())},
        "sample_size": {"riley_minimum_n": size["minimum_n"], "criteria": size["criteria"],
                        "adequate": bool(len(dev) >= size["minimum_n"]),
                        "basis": "Riley et al. BMJ 2020;368:m441, with the development model's own R^2_CS"},
    }
    development = design.assign(y=y_dev, weight=w_dev, family=pd.factorize(dev["family_id"])[0]).reset_index(drop=True)
    # The validation rows in the same design (rows as predictions; no identifiers): the errors
    # stage refits the model on resampled development families and predicts these.
    validation_design = pd.DataFrame(model["design"].transform(X_val), columns=design.columns)
    return ({"odds_ratios": odds.reset_index(), "table1": described}, metrics,
            {"predictions": predictions, "development": development, "validation_design": validation_design,
             "model": model_json})


def with_table_one(result: tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]], table1: pd.DataFrame
                   ) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]]:
    """``run``'s result with Table 1 among its tables."""
    tables, metrics, out = result
    return {**tables, "table1": table1}, metrics, out


def not_estimated(reason: str, s: dict[str, Any], outcome_counts: dict[str, Any], split_counts: dict[str, Any]
                  ) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]]:
    """``run``'s outputs when no model can be fitted or validated: headed tables and predictions
    with no rows, an empty model, and metrics saying why."""
    groups = list(s.get("groups", CASE_LEVEL_GROUPS))
    metrics: dict[str, Any] = {
        "horizon_days": s["horizon_days"], "outcome": outcome_counts, "split": split_counts,
        "covariates_not_recorded_in_this_input": s.get("not_recorded", [])}
    record(metrics, "logistic_model", reason)
    predictions = pd.DataFrame({"p": pd.Series(dtype=float), "y": pd.Series(dtype=np.int8),
                                "weight": pd.Series(dtype=float), "family": pd.Series(dtype=np.int64),
                                **{g: pd.Series(dtype=str) for g in groups}})
    development = pd.DataFrame({"y": pd.Series(dtype=np.int8), "weight": pd.Series(dtype=float),
                                "family": pd.Series(dtype=np.int64)})
    model_json = {"status": metrics["status"], "terms": [], "coef": [], "covariates": s["covariates"],
                  "categorical": s.get("categorical", []), "horizon_days": s["horizon_days"]}
    odds = pd.DataFrame(columns=["term", "coef", "se", "or", "or_lower", "or_upper", "p"])
    return {"odds_ratios": odds}, metrics, {"predictions": predictions, "development": development,
                                            "validation_design": pd.DataFrame(), "model": model_json}


ANALYSIS_TABLE = "data/analysis/rereport.parquet"


def logistic_columns(params: dict[str, Any]) -> list[str]:
    """The analysis table's columns this stage reads (``pipeline.analysis_read``): the core
    ones, those its settings name (resolved on the table's schema) and those Table 1
    describes whenever present (``table_one.PREFERRED_ORDER``)."""
    from pipeline.analysis_read import columns_used, settings_frame
    from pipeline.settings import logistic_settings

    schema = settings_frame(ANALYSIS_TABLE)
    s = logistic_settings(params, schema)
    return columns_used(schema.columns, s["covariates"], s.get("categorical", []), s.get("groups", CASE_LEVEL_GROUPS),
                        table_one.PREFERRED_ORDER)


def main() -> None:
    from pathlib import Path

    from pipeline import compute, config
    from pipeline.cli import InputError
    from pipeline.analysis_read import read_analysis
    from pipeline.io import write_csv, write_json, write_parquet

    from pipeline.settings import labels, logistic_settings

    params = config.load_params()
    compute.use(params)      # compute.scheduler: the tasks below run on that Dask cluster
    df = read_analysis(ANALYSIS_TABLE, logistic_columns(params))
    s = logistic_settings(params, df)
    try:
        tables, metrics, out = run(df, s, config.extract_date(params), int(params["seed"]),
                                   int(params["disclosure"]["min_cell_count"]))
    except ValueError as err:
        raise InputError(f"logistic: {err}") from None
    for name, table in tables.items():
        write_csv(table, Path("reports/logistic") / f"{name}.csv")
    write_parquet(out["predictions"], Path("data/predictions/validation.parquet"))
    write_parquet(out["development"], Path("data/predictions/development.parquet"))
    write_parquet(out["validation_design"], Path("data/predictions/validation_design.parquet"))
    write_json(out["model"], Path("models/logistic.json"))
    write_json(metrics, Path("metrics/logistic.json"))
    if "status" in metrics:
        print(f"logistic: {metrics['status']} (outputs written without rows)")
        return
    d, v = metrics["development"], metrics["validation"]
    print(f"logistic: {labels(params).outcome} within {s['horizon_days']} days; development {d['n']:,} ({d['events']:,} events), "
          f"validation {v['n']:,} ({v['events']:,} events); Riley minimum n {metrics['sample_size']['riley_minimum_n']:,}")


if __name__ == "__main__":
    from pipeline.cli import stage_entry

    stage_entry(main)()
