"""Covariates as model columns: one coding for the Cox, logistic and AFT models.

* ``design_matrix``: numeric covariates as they are; each categorical one as 0/1 indicators
  ``var[level]`` against a reference level (the commonest, ties by sorted level), so a
  level's effect reads against the largest group; constant columns are dropped.
* ``profile_row``: a reference profile (``{domestic_violence: 1, sex: F}``) as a design row.
* ``with_groups``: derived grouping columns (``prior_referrals_band``) for curves and
  subgroup tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import InputError


def design_matrix(df: pd.DataFrame, numeric: list[str], categorical: list[str],
                  reference: dict[str, str] | None = None, drop_constant: bool = True
                  ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Numeric covariates as they are; each categorical as 0/1 indicators named
    ``var[level]``, leaving out the reference level (default: the commonest).

    Constant columns are dropped for fitting (``drop_constant``); for scoring rows with a
    fitted model keep them, since a column constant in these rows may be 1, not 0."""
    missing = [c for c in (*numeric, *categorical) if c not in df.columns]
    if missing:
        raise InputError(f"params.yaml: survival covariate '{missing[0]}' is not a column of the analysis table")
    cols = {c: df[c].astype(float).to_numpy() for c in numeric}
    ref = dict(reference or {})
    for var in categorical:
        values = df[var].astype(str)
        if values.empty:   # no rows: no levels, no indicators (and no commonest level)
            continue
        ref.setdefault(var, values.value_counts().sort_index().idxmax())
        for level in sorted(values.unique()):
            if level != ref[var]:
                cols[f"{var}[{level}]"] = (values == level).to_numpy(dtype=float)
    X = pd.DataFrame(cols, index=df.index)
    if not drop_constant:
        return X, ref
    constant = [c for c in X.columns if X[c].nunique() < 2]
    return X.drop(columns=constant), ref


def with_groups(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the derived grouping columns; a new frame sharing ``df``'s columns (a
    shallow copy: ``assign`` would copy every column, 0.5 GB at a million rows)."""
    if "prior_referrals" in df and "prior_referrals_band" not in df:
        # each distinct count's text made once (not a string per row: 70 MB at a million rows)
        codes, counts = pd.factorize(df["prior_referrals"], use_na_sentinel=False)
        distinct = pd.Series(counts)
        band = np.where(distinct >= 3, "3+", distinct.astype(str)).astype(object)[codes]
        df = df.copy(deep=False)
        df["prior_referrals_band"] = band
    return df


def profile_row(columns: pd.Index, name: str, profile: dict[str, Any]) -> dict[str, float]:
    """A reference profile as a design row: numeric covariates take their value, a
    categorical one (``{sex: F}``) its level's indicator; covariates not named are 0 (numeric)
    or the reference level."""
    row = dict.fromkeys(columns, 0.0)
    for key, value in profile.items():
        if key in row:
            row[key] = float(value)
        elif f"{key}[{value}]" in row:
            row[f"{key}[{value}]"] = 1.0
        elif not any(c.startswith(f"{key}[") for c in columns) and key not in columns:
            raise InputError(f"params.yaml: reference profile '{name}' names '{key}', not a model covariate")
        # else: the reference level of a categorical covariate (all its indicators 0)
    return row
