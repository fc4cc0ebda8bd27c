"""The outcome at a horizon: re-referred within H days, with competing ends.

* ``binary_outcome``: re-referred within H days. A row's status at H is known if it was
  re-referred by H, followed for H days, or reached a competing end (entering care,
  turning 18) before H (a known non-event). Rows without H days of possible follow-up
  are never counted as "no event": they are excluded, or the known rows are weighted by
  the inverse probability of remaining uncensored (IPCW; Kaplan-Meier of the censoring
  times, read just before min(T, H)).

Shared by the ``logistic`` stage (its outcome) and the ``errors`` stage (the same outcome
for the error rates), so both count the same children as re-referred.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

COMPETING_ENDS = ("entered_care", "age_18")


def censoring_survival_before(at: np.ndarray, time: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """G(a-): the Kaplan-Meier curve of the censoring times just before each ``a``.

    Ties: a row that leaves by an event or a competing end at u leaves before the rows
    censored at u (the usual convention), so the risk set of the censoring at u is
    #{T > u} + #{T = u, censored}. With it the inverse-probability-of-censoring weighted
    share is exactly the Aalen-Johansen cumulative incidence (Satten and Datta 2001, The
    Kaplan-Meier estimator as an inverse-probability-of-censoring weighted average, Am Stat
    55:207-210), and the weights of the rows whose status at H is known add up to n.
    """
    time = np.asarray(time, dtype=float)
    censored = np.asarray(censored, dtype=bool)
    times, d = np.unique(time[censored], return_counts=True)
    later = len(time) - np.searchsorted(np.sort(time), times, side="right")
    surv = np.cumprod(1 - d / (later + d))
    return np.concatenate([[1.0], surv])[np.searchsorted(times, np.asarray(at, dtype=float), side="left")]


def binary_outcome(df: pd.DataFrame, horizon_days: float, method: str = "exclude",
                   extract_date: pd.Timestamp | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows with a known status at the horizon, ``y`` (0/1) and ``weight``; and counts.

    ``exclude``: drop rows whose *possible* follow-up (origin to extract date) is shorter
    than H, whatever happened to them (dropping rows *observed* to be censored early would
    keep early events and lose late non-events: biased towards events); any other row
    still censored before H is dropped too, and counted. ``ipcw``: keep every row whose
    status is known and weight it 1/G(min(T, H)-), G the Kaplan-Meier curve of censoring
    (``censoring_survival_before``): the weighted share re-referred by H is then exactly the
    Aalen-Johansen estimate with competing ends as "no", the project's one definition of
    the observed risk at a horizon.
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
        g = censoring_survival_before(np.minimum(t, horizon_days), t, censored)
        weight = np.where(known, 1 / g, 0.0)
        keep = known
        counts["censored_before_horizon"] = int((~known).sum())
        counts["handling"] = "rows censored before the horizon get weight 0; the others 1/G(min(T, H)-)"
    out = df.loc[keep].assign(y=y[keep].astype(np.int8), weight=weight[keep])
    counts.update({"kept": int(keep.sum()), "events_within_horizon": int(y[keep].sum())})
    return out, counts
