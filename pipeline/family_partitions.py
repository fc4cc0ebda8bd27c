"""The ``episodes`` derivation run on partitions of whole families, with the one-piece result.

With ``compute.scheduler`` set (``pipeline.compute``), ``derive.derive_rereport`` and
``derive.derive_cpp_durations`` run once per partition, as Dask tasks, and the parts are
put back together exactly as the single-machine derivation orders its rows:

* **Partitions.** Families in order of first appearance in the children table, cut into
  ``pieces`` consecutive runs of near-equal family count; a child goes with its family (a
  missing family id is one family), a referral or plan with its child. Every rule of the
  derivation (episodes, next episode start, prior referrals, first plan, plan number) looks
  only at one child's rows, and a child's rows are all in one partition, so each partition's
  rows are exactly the rows the whole derivation gives for its children.
* **Order.** The derivation orders rows by child (first appearance in the table), then date,
  ties in input order (``derive.order_by_child``). A partition keeps the input's relative
  order, so its output is the whole output's rows for its children in the whole output's
  order; each part carries the position of each of its rows in the whole sorted input
  (``derive.order_by_child`` on the whole table, integer sorts only), and the parts are
  merged on it. The analysis table finds its rows' positions through ``index_referral_id``
  (unique in the clean tables: ``schema``'s contract); one row per plan needs no key.
* **Counts** (exclusions by reason, events) are sums over the partitions.

Anything the partitions cannot reproduce exactly runs as one piece instead (the same
function on the whole tables, so the same answer, errors included): a referral or plan of a
child not in the children table, a repeated child or referral id, or no row in any partition.
The tests show the result equal to the single-machine derivation, column for column and
byte for byte in Parquet (``tests/test_dask.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline import compute
from pipeline.derive import derive_cpp_durations, derive_rereport, order_by_child

#: At most this many referrals per partition (more partitions than worker threads when the
#: extract is large, so that one partition's rows fit in a worker's memory).
MAX_PARTITION_REFERRALS = 500_000


def family_partition(children: pd.DataFrame, pieces: int) -> pd.Series:
    """Partition number of each child (indexed by ``child_id``): families in order of first
    appearance, ``pieces`` consecutive runs of near-equal family count."""
    family = pd.factorize(children["family_id"], use_na_sentinel=False)[0]
    n_families = int(family.max()) + 1 if len(family) else 0
    pieces = max(1, min(int(pieces), n_families))
    return pd.Series(family * pieces // max(n_families, 1), index=children["child_id"].to_numpy())


def sorted_position(child_id: pd.Series, dates: pd.Series) -> np.ndarray:
    """Each row's position in the derivation's order of the whole table (``order_by_child``)."""
    order = order_by_child(child_id, dates)[0]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return position


def _split(table: pd.DataFrame, part_of_child: pd.Series, pieces: int) -> list[np.ndarray] | None:
    """Row numbers of ``table`` in each partition (input order kept); None when a row's child
    is not in the children table."""
    part = part_of_child.reindex(table["child_id"].to_numpy()).to_numpy()
    if pd.isna(part).any():
        return None
    part = part.astype(np.int64)
    return [np.flatnonzero(part == k) for k in range(pieces)]


def _rereport_part(rules: dict[str, Any], tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
                   ) -> tuple[pd.DataFrame, dict[str, int]]:
    return derive_rereport(*tables, **rules)


def _durations_part(extract_date: pd.Timestamp, tables: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return derive_cpp_durations(*tables, extract_date=extract_date)


def _merged(parts: list[pd.DataFrame], positions: list[np.ndarray]) -> pd.DataFrame:
    """The parts' rows in the order of their positions in the whole output."""
    kept = [k for k, part in enumerate(parts) if len(part)]
    table = pd.concat([parts[k] for k in kept], ignore_index=True)
    order = np.argsort(np.concatenate([positions[k] for k in kept]), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def pieces_for(referrals: int, dask_client=None) -> int:
    """Partitions: two per worker thread, more when a partition would exceed
    ``MAX_PARTITION_REFERRALS`` referrals."""
    return max(2 * compute.slots(1, dask_client), -(-int(referrals) // MAX_PARTITION_REFERRALS))


def rereport_by_family(children: pd.DataFrame, referrals: pd.DataFrame, plans: pd.DataFrame, *,
                       pieces: int | None = None, dask_client=None, **rules: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """``derive_rereport(children, referrals, plans, **rules)``, in partitions of whole
    families when a Dask client is in use (``compute.using`` / ``compute.use``) or ``pieces``
    is given; the same table and counts (module docstring)."""
    dask_client = dask_client if dask_client is not None else compute.active()
    if pieces is None and dask_client is None:
        return derive_rereport(children, referrals, plans, **rules)
    if not children["child_id"].is_unique:
        return derive_rereport(children, referrals, plans, **rules)
    pieces = pieces or pieces_for(len(referrals), dask_client)
    part_of_child = family_partition(children, pieces)
    pieces = int(part_of_child.max()) + 1 if len(part_of_child) else 1
    referral_rows, plan_rows = _split(referrals, part_of_child, pieces), _split(plans, part_of_child, pieces)
    if referral_rows is None or plan_rows is None or not referrals["referral_id"].is_unique:
        return derive_rereport(children, referrals, plans, **rules)
    child_part = part_of_child.to_numpy()
    # A partition without referrals adds no row and no count.
    items = [(children[child_part == k], referrals.iloc[referral_rows[k]], plans.iloc[plan_rows[k]])
             for k in range(pieces) if len(referral_rows[k])]
    found = compute.map_tasks(_rereport_part, items, (rules,), dask_client=dask_client)
    position = pd.Series(sorted_position(referrals["child_id"], referrals["referral_date"]),
                         index=referrals["referral_id"].to_numpy())
    parts = [table for table, _ in found]
    if not any(len(part) for part in parts):
        return derive_rereport(children, referrals, plans, **rules)
    table = _merged(parts, [position.reindex(part["index_referral_id"].to_numpy()).to_numpy() for part in parts])
    counts = {key: int(sum(c[key] for _, c in found)) for key in found[0][1]}
    return table, counts


def cpp_durations_by_family(children: pd.DataFrame, plans: pd.DataFrame, *, extract_date: pd.Timestamp,
                            pieces: int | None = None, dask_client=None) -> pd.DataFrame:
    """``derive_cpp_durations(children, plans, extract_date=...)``, in partitions of whole
    families as ``rereport_by_family``; the same table."""
    dask_client = dask_client if dask_client is not None else compute.active()
    if pieces is None and dask_client is None:
        return derive_cpp_durations(children, plans, extract_date=extract_date)
    if not children["child_id"].is_unique:
        return derive_cpp_durations(children, plans, extract_date=extract_date)
    pieces = pieces or pieces_for(len(plans), dask_client)
    part_of_child = family_partition(children, pieces)
    pieces = int(part_of_child.max()) + 1 if len(part_of_child) else 1
    plan_rows = _split(plans, part_of_child, pieces)
    if plan_rows is None or not len(plans):
        return derive_cpp_durations(children, plans, extract_date=extract_date)
    child_part = part_of_child.to_numpy()
    plan_rows = [(k, rows) for k, rows in enumerate(plan_rows) if len(rows)]
    items = [(children[child_part == k], plans.iloc[rows]) for k, rows in plan_rows]
    parts = compute.map_tasks(_durations_part, items, (extract_date,), dask_client=dask_client)
    position = sorted_position(plans["child_id"], plans["start_date"])
    # One output row per plan, in the whole order restricted to the partition's plans.
    return _merged(parts, [np.sort(position[rows]) for _, rows in plan_rows])
