"""Model settings resolved against the analysis table the input actually produced.

``params.yaml`` names covariates, groups, strata and reference profiles for the case-level
routes. Two things change them, always stated in the stage's metrics, never silently:

* a **prepared analysis table** (``input.source: analysis_table``) brings its own: the
  covariates, KM groups, strata and reference profiles named in ``input.analysis_table``
  (numeric covariates as they are, text covariates as categorical);
* a source that does not record a factor (the CIN census has no financial-problems
  factor, say) leaves that column out of the analysis table: the factor is dropped from
  every list and profile that names it. A name that is neither a column nor such a factor
  is a one-line error (a typo, not a missing factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.cli import InputError
from pipeline.schema import CASE_LEVEL_GROUPS, FACTORS


def _resolve(names: list[str], df: pd.DataFrame, where: str, dropped: set[str]) -> list[str]:
    kept = []
    for name in names:
        if name in df.columns:
            kept.append(name)
        elif name in FACTORS:
            dropped.add(name)
        else:
            raise InputError(f"params.yaml: {where} names '{name}', which is not a column of the analysis table")
    return kept


def _split_by_type(df: pd.DataFrame, names: list[str]) -> tuple[list[str], list[str]]:
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(df[c])]
    return numeric, [c for c in names if c not in numeric]


def survival_settings(params: dict[str, Any], df: pd.DataFrame) -> dict[str, Any]:
    """The ``survival`` settings for this analysis table; ``not_recorded`` lists dropped factors."""
    s = dict(params["survival"])
    dropped: set[str] = set()
    if params["input"]["source"] == "analysis_table":
        spec = params["input"]["analysis_table"]
        numeric, categorical = _split_by_type(df, _resolve(list(spec.get("covariates") or []), df,
                                                           "input.analysis_table.covariates", dropped))
        s.update(covariates=numeric, categorical=categorical,
                 strata=(_resolve([spec["strata"]], df, "input.analysis_table.strata", dropped) or [None])[0]
                 if spec.get("strata") else None,
                 km_groups=_resolve(list(spec.get("km_groups") or []), df, "input.analysis_table.km_groups", dropped),
                 cluster="family_id", recurrent=False, competing_risks=False,
                 reference_profiles=dict(spec.get("reference_profiles") or {}))
    else:
        s["covariates"] = _resolve(list(s["covariates"]), df, "survival.covariates", dropped)
        s["categorical"] = _resolve(list(s.get("categorical") or []), df, "survival.categorical", dropped)
        derived = {"prior_referrals_band": "prior_referrals"}   # made by the survival stage from its source
        s["km_groups"] = [g for g in s.get("km_groups") or []
                          if _resolve([derived.get(g, g)], df, "survival.km_groups", dropped)]
    profiles, profiles_dropped = {}, []
    for name, profile in (s.get("reference_profiles") or {}).items():
        missing = [k for k in profile if k not in df.columns]
        if any(k not in FACTORS for k in missing):
            raise InputError(f"params.yaml: reference profile '{name}' names '{missing[0]}', "
                             "which is not a column of the analysis table")
        if missing:
            dropped.update(missing)   # a profile defined by an unrecorded factor cannot be drawn
            profiles_dropped.append(name)
        else:
            profiles[name] = profile
    s["reference_profiles"] = profiles
    s["not_recorded"], s["reference_profiles_dropped"] = sorted(dropped), profiles_dropped
    return s


def logistic_settings(params: dict[str, Any], df: pd.DataFrame) -> dict[str, Any]:
    """The ``logistic`` settings for this analysis table (the prepared table's covariates on
    that route); ``not_recorded`` lists dropped factors."""
    s = dict(params["logistic"])
    dropped: set[str] = set()
    if params["input"]["source"] == "analysis_table":
        names = _resolve(list(params["input"]["analysis_table"].get("covariates") or []), df,
                         "input.analysis_table.covariates", dropped)
        s["covariates"], s["categorical"] = _split_by_type(df, names)
        s["groups"] = _resolve(list(params["input"]["analysis_table"].get("km_groups") or []), df,
                               "input.analysis_table.km_groups", dropped)
    else:
        # null: the survival model's lists, so one edit changes both models (no YAML anchors:
        # `dvc exp run -S` rewrites params.yaml and would split an anchored list in two)
        for key in ("covariates", "categorical"):
            if s.get(key) is None:
                s[key] = params["survival"].get(key) or []
        s["groups"] = [g for g in CASE_LEVEL_GROUPS if g in df.columns]
        s["covariates"] = _resolve(list(s["covariates"]), df, "logistic.covariates", dropped)
        s["categorical"] = _resolve(list(s.get("categorical") or []), df, "logistic.categorical", dropped)
    s["splines"] = {k: v for k, v in (s.get("splines") or {}).items() if k not in dropped}
    s["not_recorded"] = sorted(dropped)
    return s


@dataclass(frozen=True)
class Labels:
    """Words the reports use for a row and its outcome ("referrals", "re-referred")."""

    subjects: str = "referrals"
    outcome: str = "re-referral"
    have_outcome: str = "are re-referred"
    have_not: str = "are not"
    missed: str = "re-referred children"


def labels(params: dict[str, Any]) -> Labels:
    """The case-level routes speak of referrals and re-referral; a prepared table of its
    own ``subject_label`` (plural, e.g. "people") and ``outcome_label`` (e.g. "re-arrest")."""
    if params["input"]["source"] != "analysis_table":
        return Labels()
    spec = params["input"]["analysis_table"]
    subjects = str(spec.get("subject_label") or "subjects")
    outcome = str(spec.get("outcome_label") or "event")
    article = "an" if outcome[:1].lower() in "aeiou" else "a"
    return Labels(subjects=subjects, outcome=outcome, have_outcome=f"have {article} {outcome}", have_not="do not",
                  missed=f"{subjects} with {article} {outcome}")
