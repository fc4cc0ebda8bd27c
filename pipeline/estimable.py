"""What an analysis table lets a model estimate, and, when it does not, why (one phrase).

A stage after ``clean`` given an empty or degenerate table does not stop the pipeline: it
writes every output ``dvc.yaml`` declares for it (tables with their header and no rows)
and says in its metrics what could not be estimated and why:

* ``not_estimated``: part -> reason (e.g. ``{"cox": "no events: every row is censored"}``);
* ``status``: one line, ``"<part> could not be estimated: <reason>; ..."``.

Both keys are absent when everything was estimated. The report shows "could not be
estimated: <reason>" in each affected section. Reasons quote no counts (a count below the
disclosure threshold must not leak through a sentence).

The rules (each a necessary condition; a fit that still fails says its own reason):

* survival curves (Kaplan-Meier): at least one row with a positive duration (zero
  durations are kept as they are: an event at time 0 lowers the curve from its start);
* Cox model: events, a positive duration, and a covariate that varies;
* parametric (AFT) models: events and a positive duration. They need every time positive:
  a zero duration (legal in a prepared table: an event or censoring on the day of the
  origin) is moved to ``ZERO_DURATION_DAYS`` for these fits only, and counted;
* binary outcome at a horizon (logistic model, calibration, error rates): rows of both
  outcomes in the development data and in the validation data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: A zero duration recorded to the day is an end within the first day: for the parametric
#: fits only it is moved to the middle of that day (the usual half-unit correction for
#: times rounded down to whole units). Cox models and Kaplan-Meier curves use it as it is.
ZERO_DURATION_DAYS = 0.5

NOT_ESTIMATED = "could not be estimated"


def survival_problem(time: pd.Series | np.ndarray, event: pd.Series | np.ndarray) -> str | None:
    """Why no survival curve can be drawn from these rows, or None."""
    time = np.asarray(time, dtype=float)
    if len(time) == 0:
        return "no rows in the analysis table"
    if not (time > 0).any():
        return "every duration is zero: no follow-up time"
    return None


def model_problem(time: pd.Series | np.ndarray, event: pd.Series | np.ndarray) -> str | None:
    """Why no survival model (Cox or parametric) can be fitted to these rows, or None."""
    reason = survival_problem(time, event)
    if reason is None and not np.asarray(event).astype(bool).any():
        return "no events: every row is censored"
    if reason is None and len(np.asarray(time)) < 2:
        return "fewer than two rows"
    return reason


def binary_problem(y: pd.Series | np.ndarray, rows: str) -> str | None:
    """Why a binary-outcome model cannot be fitted to (or assessed on) these rows, or None;
    ``rows`` names them ("development rows")."""
    y = np.asarray(y)
    if len(y) == 0:
        return f"no {rows}"
    if np.unique(y).size < 2:
        return f"the {rows} all have the same outcome ({'every one an event' if y[0] else 'no events'})"
    return None


def record(metrics: dict[str, Any], part: str, reason: str) -> None:
    """Add ``part`` could not be estimated (``reason``) to a stage's metrics."""
    metrics.setdefault("not_estimated", {})[part] = reason
    metrics["status"] = "; ".join(f"{p.replace('_', ' ')} {NOT_ESTIMATED}: {r}"
                                  for p, r in metrics["not_estimated"].items())


def empty(columns: list[str]) -> pd.DataFrame:
    """A table with these columns and no rows (written with its header)."""
    return pd.DataFrame(columns=columns)
