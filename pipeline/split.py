"""Development / validation splits of an analysis table, whole clusters (families) per side.

One module for the logistic stage and the Cox model's calibration, so both validate on the
same rows.

* ``temporal``: index dates before ``cutoff`` develop; clusters first seen on or after it
  validate; no cluster on both sides (rows of development clusters dated after the cut-off
  are left out, counted).
* ``random_clusters``: a seeded random ``validation_share`` of the clusters validates, the
  rest develop. Used when the table has no index dates (a prepared survival table without
  an index-date column), where a temporal split cannot be made; the metrics say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import seed_sequence

CLUSTER = "family_id"


def temporal_split(df: pd.DataFrame, cutoff: str | pd.Timestamp, family: str = CLUSTER
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Development (before ``cutoff``) and validation (families first seen on or after it)."""
    cutoff = pd.Timestamp(cutoff)
    first_seen = df.groupby(family)["index_date"].transform("min")
    dev_family = (first_seen < cutoff).to_numpy()
    before = (df["index_date"] < cutoff).to_numpy()
    dev, val = df[dev_family & before], df[~dev_family]
    counts = {"development_rows": int(len(dev)), "validation_rows": int(len(val)),
              "development_families": int(dev[family].nunique()), "validation_families": int(val[family].nunique()),
              "left_out_rows_of_development_families_after_cutoff": int((dev_family & ~before).sum())}
    return dev, val, counts


def random_cluster_split(df: pd.DataFrame, validation_share: float, seed: int, family: str = CLUSTER
                         ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """A seeded random ``validation_share`` of the clusters validates; the others develop.

    Clusters are drawn by their order of first appearance (the analysis table's order, fixed
    by the input), not by their ids: ids are keyed pseudonyms, and a split must not change
    with the secret key.
    """
    if not 0 < validation_share < 1:
        raise ValueError(f"logistic.validation_share must lie strictly between 0 and 1, not {validation_share}")
    code, clusters = pd.factorize(df[family])
    rng = np.random.default_rng(seed_sequence(seed, "validation_split"))
    chosen = rng.choice(len(clusters), size=max(1, round(validation_share * len(clusters))), replace=False)
    validate = np.isin(code, chosen)
    dev, val = df[~validate], df[validate]
    counts = {"development_rows": int(len(dev)), "validation_rows": int(len(val)),
              "development_families": int(dev[family].nunique()), "validation_families": int(val[family].nunique())}
    return dev, val, counts


def validation_split(df: pd.DataFrame, s: dict[str, Any], seed: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The split the logistic settings ``s`` ask for, falling back from ``temporal`` to
    ``random_clusters`` when the table has no index dates (stated in the counts)."""
    method = s.get("split", "temporal")
    note = None
    if method in ("temporal", "grouped_kfold") and "index_date" not in df:
        note = "the input has no index dates: a temporal split is impossible"
        method = "random_clusters" if method == "temporal" else method
    if method == "temporal":
        dev, val, counts = temporal_split(df, s["cutoff"])
        counts = {"method": method, "cutoff": s["cutoff"], **counts}
    elif method == "random_clusters":
        share = float(s.get("validation_share", 0.3))
        dev, val, counts = random_cluster_split(df, share, seed)
        counts = {"method": method, "validation_share": share, **counts}
    else:
        raise ValueError(f"no single split for logistic.split {method!r}")
    if note:
        counts["note"] = f"{note}; validated on a seeded random {float(s.get('validation_share', 0.3)):.0%} of clusters"
    return dev, val, counts
