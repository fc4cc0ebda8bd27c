"""The project's two Cox models of re-referral, each with one name, fitted once and saved.

* **full-data model** (``models/cox.json``): every index referral; its hazard ratios are
  the ones the report and ``reports/survival/hazard_ratios.csv`` give.
* **development model** (``models/cox_development.json``): the development families of the
  split the logistic model uses (``pipeline.split``; a grouped k-fold logistic split is
  validated in time here); its predicted risks for the validation families are what the
  Cox calibration and the Cox error rates score. A model judged on the rows it was fitted
  to would look better than it is, so these two must not be confused.

Both are fitted by the ``survival`` stage and saved as JSON (coefficients, variances,
covariate means, the coding of the covariates and the baseline cumulative hazard per
stratum at full precision); ``load`` gives back a ``CoxPH`` that predicts exactly as the
fitted one did, so a stage that scores the model reads it and never refits it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import InputError
from pipeline.cox import CoxInputError, CoxPH
from pipeline.design import design_matrix
from pipeline.io import write_json
from pipeline.split import validation_split

FULL = Path("models/cox.json")
DEVELOPMENT = Path("models/cox_development.json")


def fit_cox(df: pd.DataFrame, X: pd.DataFrame, s: dict[str, Any], event: pd.Series | None = None,
            what: str = "Cox model of re-referral") -> CoxPH:
    """Cox model of ``df`` on design ``X`` with the survival settings ``s`` (ties, LA strata,
    family-cluster robust variance)."""
    if X.shape[1] == 0:
        raise InputError(f"{what}: no covariate varies in these rows")
    try:
        return CoxPH(ties=s["ties"]).fit(
            X, df["time_days"], df["event"] if event is None else event,
            strata=df[s["strata"]] if s.get("strata") else None,
            cluster=df[s["cluster"]] if s.get("cluster") else None)
    except ValueError as err:
        # No row count in the message: it becomes a metrics status, and a small count must not leak.
        reason = err.reason if isinstance(err, CoxInputError) else str(err)
        raise InputError(f"{what} with covariates {', '.join(X.columns)}: {reason}") from None


def single_split_settings(logistic: dict[str, Any]) -> dict[str, Any]:
    """The logistic settings' split, as one development / validation split (a grouped k-fold
    logistic model is validated out of fold; the Cox model is then split in time)."""
    split = logistic.get("split", "temporal")
    return {**logistic, "split": "temporal" if split == "grouped_kfold" else split}


def development_rows(rereport: pd.DataFrame, logistic: dict[str, Any], seed: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Development and validation rows of the analysis table (whole families per side)."""
    return validation_split(rereport, single_split_settings(logistic), seed)


def fit_development(dev: pd.DataFrame, s: dict[str, Any]) -> tuple[CoxPH, dict[str, str]]:
    """The development model, fitted on the development rows ``dev`` only."""
    X_dev, reference = design_matrix(dev, s["covariates"], s.get("categorical", []))
    return fit_cox(dev, X_dev, s, what="Cox model of re-referral (development families)"), reference


def to_dict(model: CoxPH, s: dict[str, Any], reference: dict[str, str], name: str, rows: str) -> dict[str, Any]:
    """Everything needed to predict from ``model`` and to say what it is."""
    base = model.baseline_cumulative_hazard_
    baseline = [{"stratum": None if pd.isna(level) else str(level),
                 "time": part["time"].astype(float).tolist(), "cumhaz": part["cumhaz"].astype(float).tolist()}
                for level, part in base.groupby("stratum", sort=False, dropna=False)]
    return {"name": name, "rows": rows, "names": list(model.names_), "coef": model.coef_.tolist(),
            "robust_vcov": None if model.robust_var_ is None else model.robust_var_.tolist(),
            "model_vcov": model.var_.tolist(), "center": model._center.tolist(), "ties": model.ties,
            "strata_column": s.get("strata"), "cluster_column": s.get("cluster"), "reference_levels": reference,
            "covariates": s["covariates"], "categorical": s.get("categorical", []),
            "n": int(model.n_obs_), "events": int(model.n_events_), "baseline_cumulative_hazard": baseline}


def save(model: CoxPH, s: dict[str, Any], reference: dict[str, str], path: Path, name: str, rows: str) -> None:
    write_json(to_dict(model, s, reference, name, rows), path)


def save_not_estimated(path: Path, status: str, s: dict[str, Any], name: str) -> None:
    """The declared model output exists, and says why it holds no model."""
    write_json({"name": name, "status": status, "names": [], "coef": [], "ties": s["ties"],
                "strata_column": s.get("strata"), "covariates": s["covariates"],
                "categorical": s.get("categorical", [])}, path)


def load(path: Path) -> tuple[CoxPH | None, dict[str, Any]]:
    """The saved model as a ``CoxPH`` that predicts (None when it could not be estimated), and
    the saved description."""
    saved = json.loads(Path(path).read_text())
    if not saved.get("coef"):
        return None, saved
    model = CoxPH(ties=saved["ties"])
    model.names_ = saved["names"]
    model.coef_ = np.asarray(saved["coef"], dtype=float)
    model._center = np.asarray(saved["center"], dtype=float)
    model.var_ = np.asarray(saved["model_vcov"], dtype=float)
    model.robust_var_ = None if saved.get("robust_vcov") is None else np.asarray(saved["robust_vcov"], dtype=float)
    model.baseline_cumulative_hazard_ = pd.concat(
        [pd.DataFrame({"stratum": part["stratum"], "time": part["time"], "cumhaz": part["cumhaz"]})
         for part in saved["baseline_cumulative_hazard"]], ignore_index=True)
    model.strata_levels_ = np.array([part["stratum"] for part in saved["baseline_cumulative_hazard"]], dtype=object)
    return model, saved


def predict_risks(model: CoxPH, saved: dict[str, Any], rows: pd.DataFrame, days: list[float]) -> np.ndarray:
    """Predicted risk 1 - S(t | x) for ``rows`` at each of ``days`` (rows x days), from the
    baseline of each row's stratum; NaN for a row whose stratum the model never saw."""
    X = design_matrix(rows, saved["covariates"], saved.get("categorical", []), saved["reference_levels"],
                      drop_constant=False)[0]
    X = X.reindex(columns=saved["names"], fill_value=0.0)
    risks = np.full((len(rows), len(days)), np.nan)
    column = saved.get("strata_column")
    strata = rows[column].astype(str).to_numpy() if column else np.full(len(rows), None)
    known = set(model.strata_levels_)
    for level in pd.unique(strata):
        at = np.flatnonzero(strata == level) if level is not None else np.arange(len(rows))
        if level in known:
            risks[at] = 1 - model.predict_survival(X.iloc[at], days, stratum=level)
    return risks
