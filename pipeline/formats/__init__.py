"""Adapters from the formats users hold to the canonical three-table extract.

Every route ends in the same canonical tables (``pipeline.schema``: children, referrals,
plans), which ``clean`` then validates, quarantines, reconciles and pseudonymises exactly
as it does a three-table extract; every stage after ``clean`` reads only those.

An adapter is a module ``pipeline/formats/<source>.py`` with a function
``read(input_dir, *, dayfirst, progress) -> Adapted`` and a documented field map
``pipeline/formats/<source>.yaml`` (field names, code lists, factor map): a new code or a
renamed field is a change to that file, not to code.

Contract of ``Adapted.tables`` (one frame per canonical table):

* columns named as in ``pipeline.schema`` (``CHILDREN``, ``REFERRALS``, ``PLANS``), values
  as text: canonical codes (or spellings ``schema``'s aliases map), ISO dates, flags
  ``"1"``/``"0"``; a code the field map does not know is passed on verbatim, so that
  ``clean`` quarantines the row as ``unknown_code`` with its field and value;
* identifiers unique only within an LA or state are keyed by it (``"<la>/<id>"``);
* ``family_id`` absent when the format has none (each child is then its own cluster);
* a factor column absent when the format does not record that factor (never invented
  as 0); ``Adapted.not_recorded`` lists them;
* ``source_location``: where each row came from, e.g. ``"LA201_2023.xml:
  /Message/Children/Child[3]/CINdetails[2]"`` or ``"child_file_2021.csv: row 17"``;
  ``clean`` reports rejected rows by it.

``Adapted.rejects`` holds records the adapter itself could not turn into a canonical row
(columns ``pipeline.clean.REJECT_COLUMNS``: table, source_row, field, value, reason);
``Adapted.metrics`` counts records in, kept, rejected and merged (the same record in
several returns), with ``records_in == kept + rejected + merged`` per record kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

FORMATS_DIR = Path(__file__).parent


@dataclass
class Adapted:
    """Canonical tables made from one source format, with what was rejected and counted."""

    tables: dict[str, pd.DataFrame]
    rejects: pd.DataFrame
    metrics: dict[str, Any]
    not_recorded: list[str] = field(default_factory=list)


def field_map(source: str) -> dict[str, Any]:
    """The documented field map and code lists of one format (``<source>.yaml``)."""
    with (FORMATS_DIR / f"{source}.yaml").open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


#: Input sources read through an adapter (``input.source`` values).
ADAPTERS = ("cin_census", "ncands")


def read(source: str, input_dir: Path, **options: Any) -> Adapted:
    """The canonical tables of ``input_dir`` in format ``source`` (one of ``ADAPTERS``)."""
    import importlib

    from pipeline.cli import InputError

    if source not in ADAPTERS:
        raise ValueError(f"no adapter for input.source '{source}'")
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input.dir is not a folder (input.source: {source})")
    return importlib.import_module(f"pipeline.formats.{source}").read(input_dir, **options)
