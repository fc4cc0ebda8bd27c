"""What a reader sees for each pipeline field: labels, units and value formats from
``pipeline/field_labels.yaml`` (the one place; the report's tables and figures and the
notebooks all read it through this module).

* ``label("median_days")`` -> "median plan length (days)": the label with its unit;
  ``{outcome}``, ``{subjects}`` and ``{have_outcome}`` are replaced by the input's words
  (``pipeline.settings.Labels``). A field without an entry is shown as it is, and
  ``unlabelled`` names it (the report's test fails on a snake_case header).
* ``value_format("p")`` -> "p": how the report writes the field's values.
* ``level("age_band", "10_15")`` -> "10-15"; ``term("age_band[16_17]")`` -> "age band: 16-17"
  (a model term: a covariate, or a categorical covariate's indicator ``var[level]``);
  ``group("la_code", "LA01")`` -> "local authority: LA01".
* ``relabel(frame)``: a table with its headers labelled (for the notebooks' displays).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.settings import Labels

PATH = Path(__file__).with_name("field_labels.yaml")
SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")
TERM = re.compile(r"^(?P<variable>[^\[\]]+)\[(?P<level>[^\[\]]*)\]$")


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    loaded = yaml.safe_load(PATH.read_text(encoding="utf-8")) or {}
    fields = {str(k): (v if isinstance(v, dict) else {"label": v}) for k, v in (loaded.get("fields") or {}).items()}
    levels = {str(k): {str(a): str(b) for a, b in (v or {}).items()} for k, v in (loaded.get("levels") or {}).items()}
    return {"fields": fields, "levels": levels}


def _words(text: str, words: Labels) -> str:
    return text.format(outcome=words.outcome, subjects=words.subjects, have_outcome=words.have_outcome)


def known(field: str) -> bool:
    return str(field) in _table()["fields"]


def label(field: str, words: Labels = Labels(), note: str | None = None) -> str:
    """The field's label with its unit (and ``note``) in brackets: "median plan length (days;
    95% CI)". A field without an entry is left as it is, so that a missing label shows (and
    the report's test, which looks for snake_case headers, fails)."""
    entry = _table()["fields"].get(str(field))
    text = str(field) if entry is None else _words(str(entry["label"]), words)
    inside = "; ".join(x for x in ((entry or {}).get("unit"), note) if x)
    return f"{text} ({inside})" if inside else text


def value_format(field: str) -> str | None:
    """``p``, ``count``, ``year``, ``text`` or None (an estimate): how its values are written."""
    return (_table()["fields"].get(str(field)) or {}).get("format")


def level(variable: str, value: Any, words: Labels = Labels()) -> str:
    """A level of a variable as it reads: its entry under ``levels`` (the variable's, then
    ``"*"``'s), else "10_15" as "10-15" and any other "_" as a space."""
    text = str(value)
    levels = _table()["levels"]
    for table in (levels.get(str(variable), {}), levels.get("*", {})):
        if text in table:
            return _words(table[text], words)
    if re.fullmatch(r"\d+_\d+", text):
        return text.replace("_", "-")
    return text.replace("_", " ")


def term(name: str, words: Labels = Labels()) -> str:
    """A model term as it reads: a covariate's label, or "variable: level" for a categorical
    covariate's indicator ``var[level]``."""
    match = TERM.match(str(name))
    if match:
        return f"{label(match['variable'], words)}: {level(match['variable'], match['level'], words)}"
    return label(name, words)


def group(variable: str, value: Any, words: Labels = Labels()) -> str:
    """"local authority: LA01" (a subgroup: its variable and level); "all" for the whole."""
    if str(variable) == "all":
        return "all"
    return f"{label(variable, words)}: {level(variable, value, words)}"


def unlabelled(columns: list[str] | pd.Index) -> list[str]:
    """Columns that would be shown in snake_case: no entry in the label file."""
    return [str(c) for c in columns if not known(str(c)) and SNAKE.match(str(c))]


def relabel(frame: pd.DataFrame, words: Labels = Labels()) -> pd.DataFrame:
    """The table with labelled headers (values unchanged)."""
    return frame.rename(columns={c: label(c, words) for c in frame.columns})
