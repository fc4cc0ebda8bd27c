"""Reading the analysis table lean: only the columns a stage uses, identifiers as integers.

``data/analysis/rereport.parquet`` holds one row per index referral with three text
identifiers and a dozen columns no model reads. Read whole with ``pd.read_parquet``, a
million children's table (1.34M rows) takes about 0.8 GB, two thirds of it the identifiers'
Python strings (about 70 bytes a row each, plus Arrow's buffers). Here:

* ``columns_used``: the columns a stage needs, worked out from its settings (the rest are
  never read);
* ``read_analysis``: those columns only, with each identifier column (``IDENTIFIERS``:
  ``family_id``, ``child_id``) of text without a missing value replaced by its rank among
  the column's distinct values (int64, 0 = the smallest), computed in Arrow (no Python
  string is made). The ranks keep everything a model uses an identifier for: equality
  (clusters, groups of rows), order of first appearance (``pd.factorize``: robust variance,
  split and fold assignment) and sort order (``pd.factorize(sort=True)``, sorting rows by
  child), since Arrow orders text by its UTF-8 bytes, which is Python's order of code
  points. An identifier with a missing value is left as text, so the stage's own checks
  still see the gap and say so.
* ``settings_frame``: the table's columns and types with no rows, for resolving settings
  before deciding what to read.

No identifier value ever leaves a stage either way; the ranks are as confidential as the
pseudonyms (they order them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Identifier columns read as ranks (their values are only compared, never shown).
IDENTIFIERS = ("family_id", "child_id")
#: Columns the survival and logistic stages read whenever the table has them: time, event,
#: its type (competing ends), the dates (recurrent rows, temporal split, possible follow-up)
#: and the identifiers (clusters, children).
CORE = ("time_days", "event", "event_type", "origin_date", "index_date", "family_id", "child_id")
#: Derived grouping columns and the column each is made from (``pipeline.design.with_groups``).
DERIVED = {"prior_referrals_band": "prior_referrals"}


def settings_frame(path: str | Path) -> pd.DataFrame:
    """The table's columns with their pandas types, and no rows (reads only the schema)."""
    return pq.read_schema(path).empty_table().to_pandas()


def columns_used(columns: Iterable[str], *names: Iterable[Any]) -> list[str]:
    """``CORE`` and every column named in ``names`` (lists of names; None ignored; a derived
    group brings its source column), those of ``columns`` only, in ``columns``' order."""
    wanted = set(CORE)
    for group in names:
        for name in group:
            if name is not None:
                wanted.add(name)
                wanted.add(DERIVED.get(name, name))
    return [c for c in columns if c in wanted]


def identifier_ranks(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each value's rank among the distinct values (0 = smallest, by UTF-8 bytes = Python's
    string order), as int64."""
    encoded = (values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values).dictionary_encode()
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[encoded.indices.to_numpy()]


def read_analysis(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """``columns`` of the table (as ``pd.read_parquet(path, columns=columns)`` gives them),
    each text identifier without a missing value as its rank (module docstring)."""
    table = pq.read_table(path, columns=columns)
    for name in IDENTIFIERS:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if column.null_count == 0 and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            table = table.set_column(table.column_names.index(name), name, pa.array(identifier_ranks(column)))
    frame = table.to_pandas()
    del table
    # Arrow's allocator keeps the pages it freed (decompression buffers, the text before
    # ranking: about 0.2 GB here) for its next read; this stage makes none, numpy takes
    # its memory elsewhere.
    pa.default_memory_pool().release_unused()
    return frame
