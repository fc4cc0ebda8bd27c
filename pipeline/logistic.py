"""Logistic models of re-referral within a horizon (core functions; the stage follows).

* ``binary_outcome``: re-referred within H days. A row's status at H is known if it was
  re-referred by H, followed for H days, or reached a competing end (entering care,
  turning 18) before H (a known non-event). Rows without H days of possible follow-up
  are never counted as "no event": they are excluded, or the known rows are weighted by
  the inverse probability of remaining uncensored (IPCW; Kaplan-Meier of the censoring
  times, read just before min(T, H)).
* ``pipeline.split``: index dates before the cut-off develop, after it validate, with no
  family on both sides (``temporal``), or a seeded random share of whole clusters validates
  (``random_clusters``; also when the input has no index dates, stated).
  ``grouped_kfold_predictions`` (option): out-of-fold predictions, whole families per fold.
* ``fit_logit``: statsmodels Logit with family-cluster robust (sandwich) SEs, odds ratios
  and 95% CIs; ``prediction_pipeline``: the same model as a scikit-learn Pipeline
  (optional restricted cubic splines, then ``newton-cholesky`` with no penalty) for
  prediction. Covariates are coded once (``survival.design_matrix``) and the inference model
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
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from pipeline.cox import km_left_continuous
from pipeline.estimable import binary_problem, record
from pipeline.schema import CASE_LEVEL_GROUPS
from pipeline.split import temporal_split, validation_split  # noqa: F401 - temporal_split re-exported
from pipeline.splines import RestrictedCubicSpline
from pipeline.survival import design_matrix

COMPETING_ENDS = ("entered_care", "age_18")


def binary_outcome(df: pd.DataFrame, horizon_days: float, method: str = "exclude",
                   extract_date: pd.Timestamp | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows with a known status at the horizon, ``y`` (0/1) and ``weight``; and counts.

    ``exclude``: drop rows whose *possible* follow-up (origin to extract date) is shorter
    than H, whatever happened to them (dropping rows *observed* to be censored early would
    keep early events and lose late non-events: biased towards events); any other row
    still censored before H is dropped too, and counted. ``ipcw``: keep every row whose
    status is known and weight it 1/G(min(T, H)-), G the Kaplan-Meier curve of censoring.
    """
    if method not in ("exclude", "ipcw"):
        raise ValueError("method must be 'exclude' or 'ipcw'")
    t = df["time_days"].to_numpy(dtype=float)
    event = df["event"].to_numpy().astype(bool)
    competing = df["event_type"].isin(COMPETING_ENDS).to_numpy() if "event_type" in df else np.zeros(len(df), bool)
    y = event & (t <= horizon_days)
    known = y | (t >= horizon_days) | (competing & (t < horizon_days))
    weight = np.ones(len(df))
    counts: dict[str, Any] = {"rows": int(len(df)), "method": method}
    if method == "exclude":
        if extract_date is not None and "origin_date" in df:
            possible = (pd.Timestamp(extract_date) - df["origin_date"]).dt.days.to_numpy()
            short = possible < horizon_days
            counts["without_possible_follow_up"] = int(short.sum())
            counts["censored_before_horizon_otherwise"] = int((~short & ~known).sum())
            keep = ~short & known
        else:
            keep = known
            counts["censored_before_horizon"] = int((~known).sum())
        counts["handling"] = (f"rows with less than {horizon_days:g} days of possible follow-up excluded"
                              if extract_date is not None and "origin_date" in df
                              else "rows censored before the horizon excluded")
    else:
        censored = ~event & ~competing   # administrative censoring (extract date) only
        # G(s-): Kaplan-Meier of the censoring times, just before s = min(T, H)
        g = km_left_continuous(np.minimum(t, horizon_days), t, np.full(len(t), -np.inf), censored)
        weight = np.where(known, 1 / g, 0.0)
        keep = known
        counts["censored_before_horizon"] = int((~known).sum())
        counts["handling"] = "rows censored before the horizon get weight 0; the others 1/G(min(T, H)-)"
    out = df.loc[keep].assign(y=y[keep].astype(np.int8), weight=weight[keep])
    counts.update({"kept": int(keep.sum()), "events_within_horizon": int(y[keep].sum())})
    return out, counts


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


def sklearn_model() -> LogisticRegression:
    """The prediction model: unpenalised logistic regression by Newton-Cholesky (matches
    statsmodels to ~1e-11; the default lbfgs stops ~2e-3 away)."""
    return LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=100, tol=1e-10)  # C=inf: no penalty


def cox_snell_r2(loglik_model: float, loglik_null: float, n: int) -> float:
    """R^2_CS = 1 - exp(2 (logL_null - logL_model) / n) (Cox and Snell 1989)."""
    return float(1 - np.exp(2 * (loglik_null - loglik_model) / n))


def prediction_pipeline(splines: dict[str, int] | None = None) -> Pipeline:
    """The prediction model as a scikit-learn Pipeline: restricted cubic splines for the
    columns in ``splines`` (name: number of knots; knots learnt in fit), the other design
    columns as they are, then ``sklearn_model``."""
    spline_steps = [(f"rcs_{c}", RestrictedCubicSpline(k), [c]) for c, k in (splines or {}).items()]
    design = ColumnTransformer(spline_steps, remainder="passthrough", verbose_feature_names_out=False)
    return Pipeline([("design", design), ("model", sklearn_model())])


def grouped_kfold_predictions(X: pd.DataFrame, y: np.ndarray, weight: np.ndarray, family: pd.Series,
                              splines: dict[str, int] | None, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predicted risk for every row, each from the whole pipeline (splines'
    knots included) refitted without the row's family (scikit-learn ``GroupKFold``,
    families shuffled by ``seed``); and each row's fold."""
    p, fold = np.full(len(y), np.nan), np.zeros(len(y), dtype=int)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(splitter.split(X, y, groups=family)):
        if np.unique(y[train]).size < 2:
            raise ValueError(f"fold {k + 1} of {folds}: the other folds hold only one outcome; use fewer folds")
        model = prediction_pipeline(splines).fit(X.iloc[train], y[train], model__sample_weight=weight[train])
        p[test], fold[test] = model.predict_proba(X.iloc[test])[:, 1], k + 1
    return p, fold


def run(df: pd.DataFrame, s: dict[str, Any], extract_date: pd.Timestamp | None = None, seed: int = 0
        ) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]]:
    """Outcome, split, fit, validation predictions (pure: analysis table and settings in).

    ``split: temporal`` validates on families first seen after ``cutoff``;
    ``split: grouped_kfold`` validates on out-of-fold predictions for every row
    (``folds`` folds of whole families), the reported model being fitted to all rows.
    """
    from pipeline.samplesize import riley_binary

    data, outcome_counts = binary_outcome(df, float(s["horizon_days"]), s["censoring"], extract_date)
    split = s.get("split", "temporal")
    splines = dict(s.get("splines") or {})
    unknown = sorted(set(splines) - set(s["covariates"]))
    if unknown:
        raise ValueError(f"logistic.splines names {', '.join(unknown)}, not in logistic.covariates")
    if data.empty:
        return not_estimated("no rows with a known outcome at the horizon", s, outcome_counts, {"method": split})
    if split in ("temporal", "random_clusters"):
        dev, val, split_counts = validation_split(data, s, seed)
        split = split_counts.pop("method")
    elif split == "grouped_kfold":
        dev = val = data
        split_counts = {"folds": int(s["folds"]), "rows": int(len(data)), "families": int(data["family_id"].nunique())}
    else:
        raise ValueError(f"logistic.split must be temporal, random_clusters or grouped_kfold, not {split!r}")
    problem = binary_problem(dev["y"], "development rows") or binary_problem(val["y"], "validation rows")
    if problem is not None and split == "temporal":
        problem += " (move logistic.cutoff)"
    X_dev, reference = design_matrix(dev, s["covariates"], s.get("categorical", []))
    if problem is None and X_dev.shape[1] == 0:
        problem = "no covariate varies in the development rows"
    if problem is None and X_dev.shape[1] + 1 >= len(dev):
        problem = "as many model parameters as development rows (a categorical covariate with a level per row?)"
    if problem is not None:
        return not_estimated(problem, s, outcome_counts, {"method": split, **split_counts})
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
            return not_estimated(str(err), s, outcome_counts, {"method": split, **split_counts})
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
    return ({"odds_ratios": odds.reset_index()}, metrics,
            {"predictions": predictions, "development": development, "model": model_json})


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
    return {"odds_ratios": odds}, metrics, {"predictions": predictions, "development": development, "model": model_json}


def main() -> None:
    from pathlib import Path

    from pipeline import config
    from pipeline.cli import InputError
    from pipeline.io import write_csv, write_json, write_parquet

    from pipeline.settings import labels, logistic_settings

    params = config.load_params()
    df = pd.read_parquet("data/analysis/rereport.parquet")
    s = logistic_settings(params, df)
    try:
        tables, metrics, out = run(df, s, config.extract_date(params), int(params["seed"]))
    except ValueError as err:
        raise InputError(f"logistic: {err}") from None
    for name, table in tables.items():
        write_csv(table, Path("reports/logistic") / f"{name}.csv")
    write_parquet(out["predictions"], Path("data/predictions/validation.parquet"))
    write_parquet(out["development"], Path("data/predictions/development.parquet"))
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


def fit_model(X: np.ndarray, y: np.ndarray, weight: np.ndarray, start: LogisticRegression | None = None
              ) -> LogisticRegression:
    """The modelling step the bootstrap repeats: the prediction model fitted to a design.

    The design (indicator coding, spline knots) is built once, before resampling, as rms's
    ``validate`` reuses the fitted design matrix; ``start``: a fit to begin from (warm start).
    """
    model = sklearn_model()
    if start is not None:
        model.set_params(warm_start=True)
        model.coef_, model.intercept_, model.classes_ = start.coef_.copy(), start.intercept_.copy(), start.classes_
    return model.fit(X, y, sample_weight=weight)


def score_model(model: LogisticRegression, X: np.ndarray, y: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Performance of a fitted model on (weighted) data: C, calibration slope, CITL, Brier, ICI."""
    from pipeline.calibration import val_prob

    p = np.clip(model.predict_proba(X)[:, 1], 1e-10, 1 - 1e-10)
    v = val_prob(p, y, weight, intervals=False)
    return {"c": v["c"], "slope": v["slope"], "citl": v["citl"], "brier": v["brier"], "ici": v["eavg"]}
