"""``clean`` stage: validate, normalise, quarantine, reconcile and pseudonymise.

For each table (children, referrals, plans), every field is normalised (whitespace
stripped, code spellings mapped to one code, dates read from ISO ``2021-03-04``, UK
``04/03/2021`` or Excel serial ``44259``), then each row is checked against the rules in
``pipeline.schema.REJECT_REASONS``, in that order; a row failing any rule goes to
``data/clean/rejects.csv`` with the first reason, the field and the raw value. Rows in =
rows kept + rows rejected, per table, is asserted. Kept rows are checked once more
against the pandera contract in ``pipeline.schema``.

Identifiers are replaced by a keyed BLAKE2b hash (RFC 7693; 64-bit digest) whose key comes
from the environment variable named in ``input.pseudonym_key_env``; only synthetic input
may fall back to a fixed, public key.

A fault that makes the whole file unusable (missing file or column, unreadable encoding,
empty table, a column of the wrong type) stops the stage with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import config, formats
from pipeline.cli import InputError, stage_entry
from pipeline.io import atomic_path, file_sha256, iter_table, read_table, write_csv, write_json, write_parquet
from pipeline.schema import (CHILDREN, DAYS_PER_YEAR, DURATION_UNITS, FLAG, PLANS, REFERRALS, REJECT_COLUMNS,
                             REJECT_REASONS, Field, Table, analysis_table_schema, clean_schema)

CLEAN_DIR = Path("data/clean")
METRICS_FILE = Path("metrics/clean.json")
SYNTHETIC_KEY = b"synthetic-data-only-not-a-secret"
EXCEL_EPOCH = np.datetime64("1899-12-30", "D")
# A time and a zone may follow the date; the date is read as written (the record's own zone).
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")
#: Year-only or month-only values: partial dates, never Excel serials or a guessed day.
_PARTIAL = re.compile(r"^(?:1[89]\d{2}|2[01]\d{2})(?:\.0+|[-/](?:0?[1-9]|1[0-2]))?$"
                      r"|^(?:0?[1-9]|1[0-2])[-/](?:1[89]\d{2}|2[01]\d{2})$")
#: Spellings of "no value" that real extracts carry (case-insensitive; ``clean.missing_values``).
MISSING_VALUES = ("NULL", "N/A", "NA", "NaN", "#N/A", "None")
#: Dates systems write for "unknown" or "no end" (``clean.sentinel_dates``): read as missing.
SENTINEL_DATES = ("1900-01-01", "9999-12-31")
_SLASH = re.compile(r"^\d{1,2}/\d{1,2}/\d{4}$")
_SERIAL = re.compile(r"^\d{1,5}(?:\.0+)?$")


class Quarantine:
    """Per row: the first rule it fails, the field, and the raw value (None while kept).

    Rules are applied in order; ``flag`` only marks rows no earlier rule has taken, so
    every rejected row carries exactly one reason and the counts reconcile.
    """

    def __init__(self, raw_text: dict[str, pd.Series]):
        self.raw_text = raw_text
        n = len(next(iter(raw_text.values()))) if raw_text else 0
        self.reason = np.full(n, None, dtype=object)
        self.field = np.full(n, None, dtype=object)
        self.value = np.full(n, None, dtype=object)

    @property
    def kept(self) -> np.ndarray:
        return self.reason == None  # noqa: E711 - elementwise on an object array

    def flag(self, rule: str, field: str, mask: np.ndarray, values: np.ndarray | None = None) -> None:
        """Quarantine rows in ``mask`` not already taken; value defaults to the raw field."""
        hit = np.asarray(mask, dtype=bool) & self.kept
        self.reason[hit] = rule
        self.field[hit] = field
        self.value[hit] = (self.raw_text[field].to_numpy() if values is None else values)[hit]

    def repeats(self, keys: np.ndarray) -> np.ndarray:
        """Among kept rows, those whose key an earlier kept row already has."""
        dup = np.zeros(len(keys), dtype=bool)
        dup[self.kept] = pd.Series(keys[self.kept]).duplicated().to_numpy()
        return dup

    def first_row_of(self, keys: np.ndarray) -> np.ndarray:
        """For each kept row, the index of the first kept row with its key."""
        kept = self.kept
        first = np.zeros(len(keys), dtype=np.int64)
        first[kept] = pd.Series(np.arange(len(keys))[kept]).groupby(keys[kept]).transform("min").to_numpy()
        return first

    def rejects(self, table: str, locations: np.ndarray | None = None) -> pd.DataFrame:
        """Rejected rows; ``source_row`` is the data row number, or where an adapter found
        the row (``locations``, e.g. a file and XML element path)."""
        bad = np.flatnonzero(~self.kept)
        where = bad + 1 if locations is None else np.asarray(locations, dtype=object)[bad]
        return pd.DataFrame({"table": table, "source_row": where, "field": self.field[bad],
                             "value": self.value[bad], "reason": self.reason[bad]}, columns=REJECT_COLUMNS)


def as_text(series: pd.Series, whole: bool | None = None) -> pd.Series:
    """Any input column as stripped text, with missing values as NA (Parquet numbers too).
    Floats are written as whole numbers when every value of the column is whole (``whole``:
    that verdict for the whole column, when ``series`` is one block of it)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        days = series.to_numpy().astype("datetime64[D]")
        return pd.Series(np.datetime_as_string(days, unit="D"), index=series.index).where(series.notna())
    if pd.api.types.is_float_dtype(series):
        if whole is None:
            whole = series.dropna().eq(series.dropna().round()).all()
        text = series.map(lambda v: f"{v:.0f}" if whole else repr(v), na_action="ignore")
        return text.astype(object)
    s = series.astype(object).where(series.notna())
    if pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
        s = s.map(str, na_action="ignore")  # Parquet ints, bools, mixed objects
    return s


def _calendar_text(value: str, dayfirst: bool) -> str | None:
    """An ISO or slash date's calendar date as YYYY-MM-DD text (any time or zone dropped), for
    comparing with the sentinel dates: 31/12/9999 and 9999-12-31 00:00:00 are 9999-12-31."""
    if _ISO.match(value):
        return value[:10]
    if _SLASH.match(value):
        a, b, year = value.split("/")
        day, month = (a, b) if dayfirst else (b, a)
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return None


def parse_dates(text: pd.Series, dayfirst: bool) -> tuple[pd.Series, dict[str, np.ndarray]]:
    """Dates from ISO, day/month/year (or month/day/year) and Excel serial text.

    Returns the parsed dates (NaT where missing or unreadable) and, per format, a boolean
    mask of the values read in it; ``partial`` marks year-only or month-only values
    (``2006``, ``2006-05``, ``05/2006``), which are never read as an Excel serial or given a
    guessed day. ``other_order`` marks slash dates that can only be read in the other
    day/month order than ``dayfirst`` says (``05/13/2020`` when day first), ``ambiguous``
    those readable either way.
    """
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    present = text.notna().to_numpy()
    # Fast path (C-level) for the common exact ISO date; only the rest is classified by regex.
    fast = pd.to_datetime(text[present], format="%Y-%m-%d", errors="coerce")
    out[fast.index] = fast
    fast_mask = np.zeros(len(text), dtype=bool)
    fast_mask[present] = fast.notna().to_numpy()
    rest = present & ~fast_mask
    t = text[rest].astype(str)
    masks = {}
    iso = t.str.match(_ISO)
    out[iso[iso].index] = pd.to_datetime(t[iso].str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    slash = t.str.match(_SLASH)
    fmt = "%d/%m/%Y" if dayfirst else "%m/%d/%Y"
    out[slash[slash].index] = pd.to_datetime(t[slash], format=fmt, errors="coerce")
    parts = t[slash].str.split("/", expand=True)
    first, second = (parts[0].astype(int), parts[1].astype(int)) if len(parts) else (pd.Series(dtype=int),) * 2
    # as declared, the month is `second` (day first) or `first`; the other reading swaps them
    declared, other = (first, second) if dayfirst else (second, first)
    partial = t.str.match(_PARTIAL)
    serial = t.str.match(_SERIAL) & ~partial
    if serial.any():
        n = t[serial].astype(float).astype(np.int64).to_numpy()
        plausible = (n >= 1) & (n <= 80_000)  # 1900 to 2119
        days = EXCEL_EPOCH + n.astype("timedelta64[D]")
        out[serial[serial].index] = pd.Series(days.astype("datetime64[ns]"), index=serial[serial].index).where(plausible)

    def full(mask: pd.Series) -> np.ndarray:
        m = np.zeros(len(text), dtype=bool)
        m[np.flatnonzero(rest)[mask.to_numpy()]] = True
        return m

    masks["iso"] = fast_mask | full(iso)
    masks["day_month_year" if dayfirst else "month_day_year"] = full(slash)
    masks["excel_serial"] = full(serial)
    masks["partial"] = full(partial)
    in_slash = np.zeros(len(t), dtype=bool)
    masks["other_order"], masks["ambiguous"] = in_slash.copy(), in_slash.copy()
    if len(parts):
        rows = np.flatnonzero(slash.to_numpy())
        masks["other_order"][rows] = ((other > 12) & (declared <= 12)).to_numpy()
        masks["ambiguous"][rows] = ((first <= 12) & (second <= 12) & (first != second)).to_numpy()
        masks["other_order"], masks["ambiguous"] = full(pd.Series(masks["other_order"])), \
            full(pd.Series(masks["ambiguous"]))
    return out, masks


def _wrong_type(path: Path, f: Field, bad: pd.Series, text: pd.Series, n_present: int,
                max_share: float, expected: str, locations: pd.Series | None = None,
                deferred: "DeferredChecks | None" = None) -> None:
    if deferred is not None:
        deferred.wrong_type(f, bad, text, n_present, expected)
        return
    if n_present and bad.sum() / n_present > max_share:
        first = int(np.flatnonzero(bad.to_numpy())[0])
        where = f"row {first + 1}" if locations is None else str(locations.iloc[first])
        raise InputError(_wrong_type_message(path, f.name, where, expected, text.iloc[first], int(bad.sum()),
                                             n_present))


def _wrong_type_message(path: Path, name: str, where: str, expected: str, value: Any, bad: int, present: int) -> str:
    return (f"{path}: column {name}, {where}: wrong type, expected {expected}, got "
            f"{value!r} ({bad:,} of {present:,} values unreadable)")


def _mixed_order_message(path: Path, name: str, first_other: int, first_ambiguous: int, dayfirst: bool) -> str:
    return (f"{path}: column {name}: day and month orders are mixed: row {first_other + 1} can only be "
            f"{'month' if dayfirst else 'day'} first, so row {first_ambiguous + 1} and the like cannot "
            f"be read safely (input.dayfirst is {str(dayfirst).lower()}): fix the column's format")


class DeferredChecks:
    """The whole-column checks of a table read in blocks (``clean_streamed``): counted over
    every block, then raised, as ``validate_table`` raises them on the whole table, by
    ``raise_first`` after the last block (rows named in the whole file)."""

    def __init__(self, path: Path, max_share: float, dayfirst: bool):
        self.path, self.max_share, self.dayfirst = path, max_share, dayfirst
        self.rows_before = 0
        self.checks: dict[tuple[str, str], list[Any]] = {}   # in the order validate_table makes them

    def wrong_type(self, f: Field, bad: pd.Series, text: pd.Series, n_present: int, expected: str) -> None:
        state = self.checks.setdefault((f.name, "type"), [0, 0, None, None, expected])
        bad = bad.to_numpy()
        state[0] += int(bad.sum())
        state[1] += int(n_present)
        if state[2] is None and bad.any():
            first = int(np.flatnonzero(bad)[0])
            state[2], state[3] = self.rows_before + first, text.iloc[first]

    def day_month_order(self, f: Field, other_order: np.ndarray, ambiguous: np.ndarray, codes: np.ndarray) -> None:
        """``other_order`` and ``ambiguous`` mark distinct values (``parse_dates``); ``codes`` maps rows to them."""
        state = self.checks.setdefault((f.name, "order"), [None, None])
        for k, mask in enumerate((other_order, ambiguous)):
            if state[k] is None and mask.any():
                state[k] = self.rows_before + int(np.flatnonzero(mask[codes])[0])

    def raise_first(self) -> None:
        for (name, kind), state in self.checks.items():
            if kind == "order" and state[0] is not None and state[1] is not None:
                raise InputError(_mixed_order_message(self.path, name, state[0], state[1], self.dayfirst))
            if kind == "type" and state[1] and state[0] / state[1] > self.max_share:
                raise InputError(_wrong_type_message(self.path, name, f"row {state[2] + 1}", state[4], state[3],
                                                     state[0], state[1]))


#: Column an adapter (``pipeline.formats``) adds: where in its source files each row came from.
SOURCE_LOCATION = "source_location"


def columns_present(raw: pd.DataFrame, table: Table) -> tuple[pd.DataFrame, Table, dict[str, list[str]]]:
    """Apply each field's ``if_absent`` rule to the columns an input lacks.

    Returns the frame (absent "empty" columns as all missing; absent ``family_id`` as a copy
    of ``child_id``), the table without the fields the source does not record, and which
    fields took which rule.
    """
    absent: dict[str, list[str]] = {}
    for f in table.fields:
        if f.if_absent and f.name not in raw.columns:
            absent.setdefault(f.if_absent, []).append(f.name)
    fill = {name: None for name in absent.get("empty", [])}
    fill.update({name: raw["child_id"] for name in absent.get("child_id", []) if "child_id" in raw.columns})
    return raw.assign(**fill), table.without(absent.get("not_recorded", [])), absent


def validate_table(raw: pd.DataFrame, table: Table, path: Path, *, extract_date: pd.Timestamp,
                   dayfirst: bool, max_unparseable_share: float, missing_values: tuple[str, ...] = MISSING_VALUES,
                   sentinel_dates: tuple[str, ...] = SENTINEL_DATES) -> tuple[pd.DataFrame, dict[str, Any], dict]:
    """Normalise one table and find each row's first reject reason (relational rules excepted).

    Returns the typed frame (all rows), its ``Quarantine`` and normalisation counts.
    """
    frame, raw_text, masks, norm = table_masks(
        raw, table, path, extract_date=extract_date, dayfirst=dayfirst, max_unparseable_share=max_unparseable_share,
        missing_values=missing_values, sentinel_dates=sentinel_dates)
    q = Quarantine(raw_text)
    for rule in REJECT_REASONS:
        if rule == "duplicate_row":
            keys = row_keys(frame)
            dup, first = q.repeats(keys), q.first_row_of(keys)
            q.flag(rule, "(row)", dup, same_as_notes(dup, first))
        elif rule == "duplicate_id":
            q.flag(rule, table.id_field, q.repeats(frame[table.id_field].to_numpy()))
        else:
            for fname, mask in masks.get(rule, []):
                q.flag(rule, fname, mask)
    return frame, q, finished(norm, table)


def row_keys(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each typed row: equal rows, equal keys."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def same_as_notes(dup: np.ndarray, first: np.ndarray) -> np.ndarray:
    note = np.full(len(dup), None, dtype=object)
    note[dup] = [f"same as row {r + 1}" for r in first[dup]]
    return note


def finished(norm: dict[str, Any], table: Table) -> dict[str, Any]:
    """Normalisation counts as reported: fields in table order, formats never used left out."""
    order = {f.name: k for k, f in enumerate(table.fields)}
    out = {}
    for key, by_field in norm.items():
        fields = sorted(by_field, key=order.__getitem__)
        out[key] = {name: ({k: v for k, v in by_field[name].items() if v} if key == "date_formats"
                           else by_field[name]) for name in fields}
    return out


def table_masks(raw: pd.DataFrame, table: Table, path: Path, *, extract_date: pd.Timestamp,
                dayfirst: bool, max_unparseable_share: float, missing_values: tuple[str, ...] = MISSING_VALUES,
                sentinel_dates: tuple[str, ...] = SENTINEL_DATES, deferred: "DeferredChecks | None" = None,
                whole_floats: dict[str, bool] | None = None,
                ) -> tuple[pd.DataFrame, dict[str, pd.Series], dict[str, list[tuple[str, np.ndarray]]], dict]:
    """Normalise one table: the typed frame, each field's raw text, each rule's row masks
    (the rules that look at one row at a time) and normalisation counts (``finished`` orders
    them). With ``deferred``, whole-column checks (wrong type, mixed day/month order) are
    recorded there instead of raised, for a table read in blocks (``clean_streamed``)."""
    missing = [c for c in table.columns if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: header (line 1): missing column '{missing[0]}'"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    n = len(raw)
    locations = raw[SOURCE_LOCATION].reset_index(drop=True) if SOURCE_LOCATION in raw.columns else None
    typed: dict[str, pd.Series] = {}
    masks: dict[str, list[tuple[str, np.ndarray]]] = {r: [] for r in REJECT_REASONS}
    norm: dict[str, Any] = {"whitespace_stripped": {}, "recoded": {}, "date_formats": {}}
    missing = {m.lower() for m in missing_values}
    raw_text: dict[str, pd.Series] = {}
    for f in table.fields:
        original = as_text(raw[f.name], (whole_floats or {}).get(f.name)).reset_index(drop=True)
        raw_text[f.name] = original
        # Normalise each distinct value once, then broadcast: extracts repeat codes and dates.
        codes, uniques = pd.factorize(original, use_na_sentinel=True)
        counts_u = np.bincount(codes[codes >= 0], minlength=len(uniques))
        trimmed = [u.strip() for u in uniques]
        said_missing = np.array([v.lower() in missing or (f.kind == "date" and _calendar_text(v, dayfirst)
                                                          in sentinel_dates) for v in trimmed], dtype=bool)
        stripped_u = np.array([None if (not v or gone) else v for v, gone in zip(trimmed, said_missing)] + [None],
                              dtype=object)
        changed = int(counts_u[np.array([u != v for u, v in zip(uniques, trimmed)], dtype=bool)].sum()) \
            if len(uniques) else 0
        if changed:
            norm["whitespace_stripped"][f.name] = changed
        if said_missing.any():   # "NULL", "N/A", 9999-12-31 ...: missing, never a value (counted)
            found: dict[str, int] = {}
            for v, c, gone in zip(trimmed, counts_u, said_missing):
                if gone:   # " NULL" and "NULL" are one spelling once trimmed: their counts add up
                    found[str(v)] = found.get(str(v), 0) + int(c)
            norm.setdefault("read_as_missing", {})[f.name] = found
        stripped = pd.Series(stripped_u[codes], dtype=object)
        present = stripped.notna()
        if f.kind in ("id", "text"):
            typed[f.name] = stripped
            masks["missing_id" if f.kind == "id" else "missing_value"].append((f.name, (~present).to_numpy()))
        elif f.kind in ("code", "flag"):
            aliases = f.alias_map()
            mapped_u = np.array([aliases.get(v.lower()) if v is not None else None for v in stripped_u],
                                dtype=object)
            mapped = pd.Series(mapped_u[codes], dtype=object)
            bad = present & mapped.isna()
            _wrong_type(path, f, bad, stripped, int(present.sum()), max_unparseable_share,
                        "one of " + "/".join(str(c) for c in f.codes), locations, deferred)
            recoded_u = np.array([m is not None and str(m) != v for m, v in zip(mapped_u, stripped_u)])
            recoded = int(np.bincount(codes[codes >= 0], minlength=len(stripped_u))[recoded_u].sum())
            if recoded:
                norm["recoded"][f.name] = recoded
            if f.kind == "flag":
                typed[f.name] = pd.Series(np.array([-1 if m is None else m for m in mapped_u],
                                                   dtype=np.int8)[codes])
            else:
                typed[f.name] = mapped
            masks["unknown_code"].append((f.name, bad.to_numpy()))
            if f.required:
                masks["missing_value"].append((f.name, (~present).to_numpy()))
        elif f.kind == "date":
            partial = np.zeros(n, dtype=bool)
            if pd.api.types.is_datetime64_any_dtype(raw[f.name]):
                parsed = pd.to_datetime(raw[f.name]).dt.normalize().reset_index(drop=True).astype("datetime64[ns]")
                counts = {"typed": int(parsed.notna().sum())}
            else:
                parsed_u, counts_by_format = parse_dates(pd.Series(stripped_u, dtype=object), dayfirst)
                parsed = pd.Series(parsed_u.to_numpy()[codes], dtype="datetime64[ns]")
                weights = np.append(counts_u, 0)
                partial = counts_by_format.pop("partial")[codes]
                other_order, ambiguous = counts_by_format.pop("other_order"), counts_by_format.pop("ambiguous")
                if deferred is not None:
                    deferred.day_month_order(f, other_order, ambiguous, codes)
                elif other_order.any() and ambiguous.any():
                    raise InputError(_mixed_order_message(path, f.name, int(np.flatnonzero(other_order[codes])[0]),
                                                          int(np.flatnonzero(ambiguous[codes])[0]), dayfirst))
                counts = {k: int(weights[mask].sum()) for k, mask in counts_by_format.items()}
                masks["partial_date"].append((f.name, partial))
            bad = present & parsed.isna()
            _wrong_type(path, f, bad, stripped, int(present.sum()), max_unparseable_share,
                        "dates like 2021-03-04", locations, deferred)
            norm["date_formats"][f.name] = counts
            typed[f.name] = parsed
            masks["unparseable_date"].append((f.name, bad.to_numpy() & ~partial))
            masks["date_after_extract"].append((f.name, (parsed > extract_date).to_numpy()))
            if f.required:
                masks["missing_value"].append((f.name, (~present).to_numpy()))
    frame = pd.DataFrame(typed)
    for later, earlier, reason in table.date_order:
        masks[reason].append((later, (frame[later] < frame[earlier]).to_numpy()))
    return frame, raw_text, masks, norm


def relational_rules(children: pd.DataFrame, child_kept: np.ndarray, other: pd.DataFrame,
                     q: Quarantine, date_field: str, before_birth: str) -> None:
    """Rules across tables, applied to a referrals or plans table's quarantine.

    ``unknown_child``: the child id is in no row of the children table;
    ``child_rejected``: it is, but that child row was quarantined;
    ``referral_before_birth`` / ``plan_before_birth``: the date precedes the date of birth.
    """
    ids = other["child_id"]
    kept_children = children.loc[child_kept]  # kept ids are unique
    known = ids.isin(children["child_id"].dropna().unique()).to_numpy()
    pos = pd.Index(kept_children["child_id"]).get_indexer(ids)
    kept = pos >= 0
    dob = pd.Series(np.where(kept, kept_children["date_of_birth"].to_numpy()[np.maximum(pos, 0)],
                             np.datetime64("NaT")), index=other.index)
    q.flag("unknown_child", "child_id", ~known & ids.notna().to_numpy())
    q.flag("child_rejected", "child_id", known & ~kept)
    q.flag(before_birth, date_field, (other[date_field] < dob).to_numpy())


def overlapping_plans(plans: pd.DataFrame, q: Quarantine) -> None:
    """Quarantine a plan that starts before an earlier plan of the same child has ended.

    Earlier plans are compared by start date; an open plan (no end date) never ends.
    """
    alive = np.flatnonzero(q.kept)
    p = plans.iloc[alive]
    order = np.lexsort((p["start_date"].to_numpy(), p["child_id"].to_numpy()))
    rows = alive[order]
    child = plans["child_id"].to_numpy()[rows]
    start = plans["start_date"].to_numpy()[rows].astype("datetime64[D]").astype(np.int64)
    end = plans["end_date"].to_numpy()[rows].astype("datetime64[D]")
    end = np.where(np.isnat(end), np.iinfo(np.int64).max, end.astype(np.int64))
    running_end = pd.Series(end).groupby(child).cummax()
    prev_end = running_end.groupby(child).shift(1).to_numpy()  # NaN for a child's first plan
    mask = np.zeros(len(plans), dtype=bool)
    mask[rows[start < np.nan_to_num(prev_end, nan=-np.inf)]] = True
    q.flag("overlapping_plan", "start_date", mask)


def pseudonymise(values: pd.Series, key: bytes) -> pd.Series:
    """Keyed BLAKE2b (RFC 7693), 64-bit digest as 16 hex characters; hashes each distinct value once."""
    codes, uniques = pd.factorize(values)
    keyed = hashlib.blake2b(digest_size=8, key=key)  # copying a keyed state skips re-keying per value

    def digest(value: object) -> str:
        h = keyed.copy()
        h.update(str(value).encode("utf-8"))
        return h.hexdigest()

    digests = np.array([digest(u) for u in uniques], dtype=object)
    return pd.Series(np.where(codes >= 0, digests[np.maximum(codes, 0)], None), index=values.index)


def pseudonym_key(params: dict[str, Any]) -> bytes:
    """The keyed hash's key: the secret in ``input.pseudonym_key_env``; without one, the fixed
    public key, but only for the very files ``simulate`` wrote (checked against the SHA-256
    sums it recorded), so real data never meet the public key."""
    env = params["input"]["pseudonym_key_env"]
    key = os.environ.get(env)
    if key:
        return hashlib.blake2b(key.encode("utf-8"), digest_size=32).digest()  # any length -> 32 bytes
    if params["input"]["source"] == "synthetic":
        folder = Path(params["input"]["dir"])
        marker = folder / config.SIMULATED_MARKER
        recorded = json.loads(marker.read_text()) if marker.exists() else {}
        for table in ("children", "referrals", "plans"):
            path = config.input_path(params, table)
            if path.parent != folder or recorded.get(path.name) != (file_sha256(path) if path.exists() else None):
                raise InputError(
                    f"{path}: input.source is synthetic, but this is not the file simulate wrote "
                    f"({'no ' + str(marker) if not recorded else 'its SHA-256 differs from ' + str(marker)}): "
                    f"for real data set input.source: extract and a secret key in {env}")
        return SYNTHETIC_KEY
    raise InputError(f"environment variable {env} is not set: give it a secret key to pseudonymise identifiers")


def clean_extract(raw: dict[str, pd.DataFrame], paths: dict[str, Path], *, extract_date: pd.Timestamp,
                  dayfirst: bool = True, max_unparseable_share: float = 0.5, key: bytes = SYNTHETIC_KEY,
                  progress: bool = False, missing_values: tuple[str, ...] = MISSING_VALUES,
                  sentinel_dates: tuple[str, ...] = SENTINEL_DATES,
                  ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, Any]]:
    """Clean the three tables (pure: raw frames in; kept tables, rejects and metrics out)."""
    frames, quarantine, norms, tables, absent = {}, {}, {}, {}, {}
    for table in (CHILDREN, REFERRALS, PLANS):
        t0 = time.perf_counter()
        raw_table, tables[table.name], absent[table.name] = columns_present(raw[table.name], table)
        frames[table.name], quarantine[table.name], norms[table.name] = validate_table(
            raw_table, tables[table.name], paths[table.name], extract_date=extract_date, dayfirst=dayfirst,
            max_unparseable_share=max_unparseable_share, missing_values=missing_values, sentinel_dates=sentinel_dates)
        if progress:
            print(f"clean: {table.name}: {len(raw[table.name]):,} rows validated in "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    child_kept = quarantine["children"].kept
    relational_rules(frames["children"], child_kept, frames["referrals"], quarantine["referrals"],
                     "referral_date", "referral_before_birth")
    relational_rules(frames["children"], child_kept, frames["plans"], quarantine["plans"],
                     "start_date", "plan_before_birth")
    overlapping_plans(frames["plans"], quarantine["plans"])

    kept, rejects, metrics = {}, [], {"extract_date": extract_date.date().isoformat(), "tables": {}}
    for name in ("children", "referrals", "plans"):
        table = tables[name]
        frame = kept_contract(frames[name].loc[quarantine[name].kept].reset_index(drop=True), table, key,
                              extract_date)
        kept[name] = frame
        locations = raw[name][SOURCE_LOCATION].to_numpy() if SOURCE_LOCATION in raw[name].columns else None
        rej = quarantine[name].rejects(name, locations)
        rejects.append(rej)
        metrics["tables"][name] = table_metrics(
            paths[name], len(raw[name]), len(frame), rej, norms[name],
            [c for c in raw[name].columns if c not in table.columns and c != SOURCE_LOCATION], absent[name], name)
    return kept, pd.concat(rejects, ignore_index=True), extract_metrics(metrics, absent)


def kept_contract(frame: pd.DataFrame, table: Table, key: bytes, extract_date: pd.Timestamp) -> pd.DataFrame:
    """Kept rows with their identifiers pseudonymised, checked against the clean contract."""
    for f in table.fields:
        if f.kind == "id":
            frame[f.name] = pseudonymise(frame[f.name], key)
    try:
        return clean_schema(table, extract_date).validate(frame)
    except pandera.errors.SchemaError as err:  # a bug in the rules above, not bad input
        raise RuntimeError(f"clean {table.name} broke its own contract: {err}") from err


def table_metrics(path: Path, rows_in: int, rows_kept: int, rejects: pd.DataFrame, normalised: dict[str, Any],
                  ignored: list[str], absent: dict[str, list[str]], name: str) -> dict[str, Any]:
    """One table's entry of metrics/clean.json; rows in = kept + rejected is asserted."""
    if rows_in != rows_kept + len(rejects):
        raise RuntimeError(f"{name}: rows in {rows_in} != kept {rows_kept} + rejected {len(rejects)}")
    by_reason = rejects["reason"].value_counts()
    out = {"file": str(path), "rows_in": int(rows_in), "rows_kept": int(rows_kept), "rows_rejected": int(len(rejects)),
           "rejected_by_reason": {r: int(by_reason.get(r, 0)) for r in REJECT_REASONS if by_reason.get(r, 0)},
           "normalised": normalised, "ignored_columns": ignored}
    if absent:
        out["absent_columns"] = absent
    return out


def extract_metrics(metrics: dict[str, Any], absent: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    """The three-table extract's closing entries of metrics/clean.json."""
    metrics["reconciled"] = True
    metrics["not_recorded"] = absent["referrals"].get("not_recorded", [])
    metrics["cluster"] = ("child (the input has no family id: each child is its own cluster)"
                          if "family_id" in absent["children"].get("child_id", []) else "family")
    return metrics


class _BlockQuarantine(Quarantine):
    """A ``Quarantine`` over every row of a table read in blocks: the raw values of the few
    fields the whole-table rules name are read back from the blocks only for the rows they
    quarantine, so no whole column of raw text is held."""

    def __init__(self, reason: np.ndarray, field: np.ndarray, value: np.ndarray, raw_value):
        self.reason, self.field, self.value, self._raw_value = reason, field, value, raw_value

    def flag(self, rule: str, field: str, mask: np.ndarray, values: np.ndarray | None = None) -> None:
        hit = np.asarray(mask, dtype=bool) & self.kept
        self.reason[hit] = rule
        self.field[hit] = field
        self.value[hit] = values[hit] if values is not None else self._raw_value(field, np.flatnonzero(hit))


#: The row rules ``validate_table`` applies before the whole-table duplicate rules, and after.
_RULES_BEFORE_DUPLICATES = REJECT_REASONS[:REJECT_REASONS.index("duplicate_row")]
_RULES_AFTER_DUPLICATES = REJECT_REASONS[REJECT_REASONS.index("duplicate_id") + 1:]
#: Raw text kept beside each block for the whole-table rules' rejects (their ``value``).
_RAW = "__raw__"


def _first_reasons(raw_text: dict[str, pd.Series], masks: dict[str, list[tuple[str, np.ndarray]]],
                   rules: tuple[str, ...]) -> Quarantine:
    q = Quarantine(raw_text)
    for rule in rules:
        for fname, mask in masks.get(rule, []):
            q.flag(rule, fname, mask)
    return q


def _whole_floats(path: Path) -> dict[str, bool]:
    """For a Parquet file's float columns: is every value (NaN and missing aside) whole? The
    verdict ``as_text`` makes on a whole column, made once for a file read in blocks."""
    if path.suffix.lower() != ".parquet":
        return {}
    import pyarrow.compute as pc

    out = {}
    schema = pq.read_schema(path)
    for field in schema:
        if pa.types.is_floating(field.type):
            column = pq.read_table(path, columns=[field.name]).column(field.name)
            values = column.filter(pc.invert(pc.fill_null(pc.is_nan(column), True)))
            out[field.name] = bool(pc.all(pc.equal(values, pc.round(values))).as_py() in (True, None))
    return out


def _arrow_schema(table: Table) -> pa.Schema:
    kinds = {"date": pa.timestamp("ns"), "flag": pa.int8()}
    return pa.schema([(f.name, kinds.get(f.kind, pa.string())) for f in table.fields])


def clean_streamed(paths: dict[str, Path], out_dir: Path, *, extract_date: pd.Timestamp, dayfirst: bool = True,
                   max_unparseable_share: float = 0.5, key: bytes = SYNTHETIC_KEY, encoding: str = "utf-8",
                   missing_values: tuple[str, ...] = MISSING_VALUES, sentinel_dates: tuple[str, ...] = SENTINEL_DATES,
                   block_bytes: int = 128 * 2**20, progress: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``clean_extract`` for files larger than memory: the same kept rows, rejects and metrics,
    with memory bounded by the blocks and a few columns of the whole tables.

    Each file is read in blocks (``io.iter_table``: the same checks and errors). Pass 1
    normalises a block and finds each row's first reason among the row rules before and
    after the duplicate rules (``table_masks``), and writes the typed block to a work
    folder. Then, over the whole table, in ``REJECT_REASONS`` order: the duplicate-row rule
    (64-bit row keys), the duplicate-id rule (the typed ids), the later row rules, the rules
    across tables (``relational_rules``) and overlapping plans (``overlapping_plans``), each
    the very function ``clean_extract`` uses. Pass 2 writes the kept rows of each block,
    pseudonymised and checked against the contract, as row groups of
    ``out_dir/<table>.parquet`` (atomically; the id's uniqueness is checked on the whole
    column). Writes the kept tables; returns the rejects and the metrics.
    """
    import polars as pl

    out_dir = Path(out_dir)
    metrics: dict[str, Any] = {"extract_date": extract_date.date().isoformat(), "tables": {}}
    absent_by_table: dict[str, dict[str, list[str]]] = {}
    rejects: list[pd.DataFrame] = []
    work = tempfile.TemporaryDirectory(prefix=".clean-work-", dir=out_dir.parent)
    work_dir = Path(work.name)
    blocks: dict[str, list[Path]] = {}
    quarantines: dict[str, _BlockQuarantine] = {}
    norms_of: dict[str, list[dict[str, Any]]] = {}
    column_of: dict[str, Any] = {}
    tables: dict[str, Table] = {}
    ignored: dict[str, list[str]] = {}
    try:
        for table in (CHILDREN, REFERRALS, PLANS):
            t0 = time.perf_counter()
            path = paths[table.name]
            deferred = DeferredChecks(path, max_unparseable_share, dayfirst)
            raw_fields = [table.id_field] + [name for name in ("child_id", "referral_date", "start_date")
                                             if name != table.id_field and name in table.columns]
            reasons: list[tuple[np.ndarray, ...]] = []
            keys, norms, files = [], [], []
            whole_floats = _whole_floats(path)
            rows = 0
            for rows_before, raw in iter_table(path, encoding=encoding, allow_empty=table is PLANS,
                                               block_bytes=block_bytes):
                raw = raw.reset_index(drop=True)
                if table.name not in tables:
                    ignored[table.name] = [c for c in raw.columns if c not in table.columns and c != SOURCE_LOCATION]
                raw_table, tables[table.name], absent_by_table[table.name] = columns_present(raw, table)
                deferred.rows_before = rows_before
                frame, raw_text, masks, norm = table_masks(
                    raw_table, tables[table.name], path, extract_date=extract_date, dayfirst=dayfirst,
                    max_unparseable_share=max_unparseable_share, missing_values=missing_values,
                    sentinel_dates=sentinel_dates, deferred=deferred, whole_floats=whole_floats)
                before = _first_reasons(raw_text, masks, _RULES_BEFORE_DUPLICATES)
                after = _first_reasons(raw_text, masks, _RULES_AFTER_DUPLICATES)
                reasons.append((before.reason, before.field, before.value, after.reason, after.field, after.value))
                keys.append(row_keys(frame))
                norms.append(norm)
                block = pa.Table.from_pandas(frame, schema=_arrow_schema(tables[table.name]), preserve_index=False)
                for name in raw_fields:
                    if name in raw_text:
                        block = block.append_column(_RAW + name, pa.array(raw_text[name], pa.string(), from_pandas=True))
                file = work_dir / f"{table.name}-{len(files):05d}.parquet"
                pq.write_table(block, file, compression="zstd")
                files.append(file)
                rows += len(frame)
                if progress:
                    print(f"clean: {table.name}: {rows:,} rows normalised ({time.perf_counter() - t0:.0f}s)",
                          file=sys.stderr)
                del frame, raw_text, masks, raw, raw_table, block
            deferred.raise_first()
            blocks[table.name] = files
            tables.setdefault(table.name, table)
            absent_by_table.setdefault(table.name, {})
            ignored.setdefault(table.name, [])

            def column(name: str, files: list[Path] = files) -> pa.ChunkedArray:
                """One column of the whole table, from its blocks."""
                return pa.concat_tables([pq.read_table(f, columns=[name]) for f in files]).column(name)

            def raw_value(name: str, rows: np.ndarray, column=column) -> np.ndarray:
                return column(_RAW + name).take(pa.array(rows, pa.int64())).to_numpy(zero_copy_only=False)

            stacked = [np.concatenate([r[k] for r in reasons]) for k in range(6)]
            del reasons
            q = _BlockQuarantine(*stacked[:3], raw_value)
            later = stacked[3:]
            del stacked
            row_key = np.concatenate(keys) if keys else np.array([], dtype=np.uint64)
            del keys
            dup, first = q.repeats(row_key), q.first_row_of(row_key)
            q.flag("duplicate_row", "(row)", dup, same_as_notes(dup, first))
            del row_key, dup, first
            ids = column(table.id_field).to_pandas().to_numpy()
            q.flag("duplicate_id", table.id_field, q.repeats(ids))
            del ids
            take = q.kept & (later[0] != None)  # noqa: E711 - elementwise on an object array
            q.reason[take], q.field[take], q.value[take] = later[0][take], later[1][take], later[2][take]
            del later, take
            quarantines[table.name] = q
            norms_of[table.name], column_of[table.name] = norms, column
            if progress:
                print(f"clean: {table.name}: {rows:,} rows validated in {time.perf_counter() - t0:.1f}s",
                      file=sys.stderr)

        children_col = column_of["children"]
        children = pd.DataFrame({"child_id": children_col("child_id").to_pandas(),
                                 "date_of_birth": children_col("date_of_birth").to_pandas()})
        child_kept = quarantines["children"].kept
        for name, date_field, before_birth in (("referrals", "referral_date", "referral_before_birth"),
                                               ("plans", "start_date", "plan_before_birth")):
            col = column_of[name]
            other = pd.DataFrame({"child_id": col("child_id").to_pandas(), date_field: col(date_field).to_pandas()})
            relational_rules(children, child_kept, other, quarantines[name], date_field, before_birth)
            del other
        del children
        col = column_of["plans"]
        plans = pd.DataFrame({c: col(c).to_pandas() for c in ("child_id", "start_date", "end_date")})
        overlapping_plans(plans, quarantines["plans"])
        del plans

        for table_name in ("children", "referrals", "plans"):
            table = tables[table_name]
            q = quarantines[table_name]
            kept = q.kept
            ids_seen = []
            target = out_dir / f"{table_name}.parquet"
            n_kept, start = 0, 0
            with atomic_path(target) as tmp:
                writer = pq.ParquetWriter(tmp, _arrow_schema(table), compression="zstd")
                for file in blocks[table_name]:
                    block = pq.read_table(file, columns=table.columns)
                    keep = kept[start:start + block.num_rows]
                    start += block.num_rows
                    frame = kept_contract(block.filter(pa.array(keep)).to_pandas().reset_index(drop=True), table,
                                          key, extract_date)
                    writer.write_table(pa.Table.from_pandas(frame, schema=_arrow_schema(table), preserve_index=False))
                    ids_seen.append(pa.array(frame[table.id_field].to_numpy(), pa.string()))
                    n_kept += len(frame)
                writer.close()
                all_ids = pl.Series(pa.chunked_array(ids_seen, pa.string()))
                if all_ids.n_unique() != len(all_ids):
                    raise RuntimeError(f"clean {table_name} broke its own contract: {table.id_field} not unique")
            rej = q.rejects(table_name)
            rejects.append(rej)
            metrics["tables"][table_name] = table_metrics(
                paths[table_name], len(kept), n_kept, rej, _merged_norms(norms_of[table_name], table),
                ignored[table_name], absent_by_table[table_name], table_name)
    finally:
        work.cleanup()
    return pd.concat(rejects, ignore_index=True), extract_metrics(metrics, absent_by_table)


def _merged_norms(norms: list[dict[str, Any]], table: Table) -> dict[str, Any]:
    """The normalisation counts of a table's blocks as ``validate_table`` counts the whole:
    counts summed, values in order of first appearance (``finished`` orders the fields)."""
    merged: dict[str, Any] = {}
    for norm in norms:
        for key, by_field in norm.items():
            target = merged.setdefault(key, {})
            for name, value in by_field.items():
                if isinstance(value, dict):
                    inner = target.setdefault(name, {})
                    for k, v in value.items():
                        inner[k] = inner.get(k, 0) + v
                else:
                    target[name] = target.get(name, 0) + value
    return finished(merged, table)


def clean_analysis_table(raw: pd.DataFrame, spec: dict[str, Any], path: Path, *, key: bytes,
                         dayfirst: bool = True, missing_values: tuple[str, ...] = MISSING_VALUES,
                         max_duration_years: float = 120) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Validate a prepared one-row-per-subject table (second entry point).

    Values are handed on unchanged but for pseudonymised identifiers and the parsed index
    date; rows with a missing or duplicate id, a negative, infinite or unreadable duration (in
    ``duration_unit``), an event other than 0/1, a missing covariate, group or stratum, or
    a missing or unreadable index date (when ``index_date`` names a column) are quarantined.
    """
    id_col, cluster, duration, event = spec["id"], spec.get("cluster"), spec["duration"], spec["event"]
    unit = spec.get("duration_unit", "days")
    if unit not in DURATION_UNITS:
        raise InputError(f"params.yaml: input.analysis_table.duration_unit '{unit}' must be one of "
                         + ", ".join(DURATION_UNITS))
    index_date = spec.get("index_date")
    covariates = list(spec.get("covariates") or [])
    grouping = [c for c in (*(spec.get("km_groups") or []), spec.get("strata")) if c and c not in covariates]
    needed = list(dict.fromkeys([id_col, duration, event, *covariates, *grouping]
                                + ([cluster] if cluster else []) + ([index_date] if index_date else [])))
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: header (line 1): missing column '{missing[0]}' (named in input.analysis_table)")
    n = len(raw)
    text = {c: as_text(raw[c]).reset_index(drop=True).str.strip() for c in needed}
    missing = {m.lower() for m in missing_values}
    text = {c: s.where((s != "") & ~s.str.lower().isin(missing)) for c, s in text.items()}
    q = Quarantine({c: as_text(raw[c]).reset_index(drop=True) for c in needed})
    dur = pd.to_numeric(text[duration], errors="coerce")
    ev = text[event].str.lower().map(Field(event, "flag", codes=FLAG).alias_map())
    for col, bad, expected in ((duration, text[duration].notna() & dur.isna(), f"a number of {unit}"),
                               (event, text[event].notna() & ev.isna(), "0 or 1")):
        _wrong_type(path, Field(col, "flag"), bad, text[col], int(text[col].notna().sum()), 0.5, expected)
    q.flag("missing_id", id_col, text[id_col].isna().to_numpy())
    if cluster:
        q.flag("missing_id", cluster, text[cluster].isna().to_numpy())
    for col in (duration, event, *covariates, *grouping, *([index_date] if index_date else [])):
        q.flag("missing_value", col, text[col].isna().to_numpy())
    # Not finite (inf, nan) or negative: no survival time (an infinite duration is no censoring time either);
    # longer than a lifetime (clean.max_duration_years): a unit or entry error, never a follow-up time.
    too_long = dur * DURATION_UNITS[unit] > float(max_duration_years) * DAYS_PER_YEAR
    q.flag("invalid_value", duration, (~np.isfinite(dur) | (dur < 0) | too_long).to_numpy())
    if index_date:
        dates, _ = parse_dates(text[index_date], dayfirst)
        _wrong_type(path, Field(index_date, "date"), text[index_date].notna() & dates.isna(), text[index_date],
                    int(text[index_date].notna().sum()), 0.5, "dates like 2021-03-04")
        q.flag("unparseable_date", index_date, (text[index_date].notna() & dates.isna()).to_numpy())
    q.flag("unknown_code", event, ev.isna().to_numpy())
    frame = raw.reset_index(drop=True).copy()
    row_keys = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    q.flag("duplicate_row", "(row)", q.repeats(row_keys), np.full(n, None, dtype=object))
    q.flag("duplicate_id", id_col, q.repeats(text[id_col].to_numpy()))

    ok = q.kept
    rejects = q.rejects("analysis_table")
    kept = frame.loc[ok].reset_index(drop=True)
    kept[id_col] = pseudonymise(text[id_col][ok].reset_index(drop=True), key)
    if cluster:
        kept[cluster] = pseudonymise(text[cluster][ok].reset_index(drop=True), key)
    kept[duration] = dur[ok].to_numpy(dtype=float)
    kept[event] = ev[ok].to_numpy(dtype=np.int8)
    if index_date:
        kept[index_date] = dates[ok].to_numpy()
    for col in covariates:
        as_number = pd.to_numeric(kept[col], errors="coerce")
        if as_number.notna().all():
            kept[col] = as_number
    analysis_table_schema(id_col, cluster, duration, event, covariates).validate(kept)
    by_reason = rejects["reason"].value_counts()
    metrics = {"tables": {"analysis_table": {
        "file": str(path), "rows_in": n, "rows_kept": int(len(kept)), "rows_rejected": int(len(rejects)),
        "rejected_by_reason": {r: int(c) for r, c in by_reason.items()}}}, "reconciled": True}
    if n != len(kept) + len(rejects):
        raise RuntimeError("analysis table: rows do not reconcile")
    return kept, rejects, metrics


def main() -> None:
    params = config.load_params()
    inp = params["input"]
    extract_date = config.extract_date(params)
    key = pseudonym_key(params)
    if inp["source"] == "analysis_table":
        path = config.input_path(params, "analysis_table")
        kept, rejects, metrics = clean_analysis_table(read_table(path, encoding=inp["encoding"]),
                                                      inp["analysis_table"], path, key=key,
                                                      dayfirst=bool(inp["dayfirst"]),
                                                      missing_values=tuple(params["clean"].get("missing_values",
                                                                                               MISSING_VALUES)),
                                                      max_duration_years=float(
                                                          params["clean"].get("max_duration_years", 120)))
        write_parquet(kept, CLEAN_DIR / "analysis_table.parquet")
    else:
        adapted = None
        if inp["source"] in formats.ADAPTERS:
            adapted = formats.read(inp["source"], Path(inp["dir"]), dayfirst=bool(inp["dayfirst"]), progress=True,
                                   min_count=int(params["disclosure"]["min_cell_count"]), encoding=inp["encoding"])
            raw = adapted.tables
            paths = {t: Path(inp["dir"]) / f"({inp['source']}: {t})" for t in raw}
        else:
            paths = {t: config.input_path(params, t) for t in ("children", "referrals", "plans")}
            in_memory_bytes = float(params["clean"].get("in_memory_max_mb", 512)) * 2**20
            if any(p.exists() and p.stat().st_size > in_memory_bytes for p in paths.values()):
                # Larger than memory allows whole: in blocks, the same result (clean_streamed).
                rejects, metrics = clean_streamed(
                    paths, CLEAN_DIR, extract_date=extract_date, dayfirst=bool(inp["dayfirst"]),
                    max_unparseable_share=float(params["clean"]["max_unparseable_share"]), key=key,
                    encoding=inp["encoding"], missing_values=tuple(params["clean"].get("missing_values", MISSING_VALUES)),
                    sentinel_dates=tuple(str(d) for d in params["clean"].get("sentinel_dates", SENTINEL_DATES)),
                    block_bytes=int(float(params["clean"].get("block_mb", 32)) * 2**20), progress=True)
                _finish(rejects, metrics)
                return
            # An authority with no plans in the window is real: only the plans table may be empty.
            raw = {t: read_table(p, encoding=inp["encoding"], allow_empty=t == "plans") for t, p in paths.items()}
        big = len(raw["referrals"]) >= 500_000
        kept, rejects, metrics = clean_extract(
            raw, paths, extract_date=extract_date, dayfirst=bool(inp["dayfirst"]),
            max_unparseable_share=float(params["clean"]["max_unparseable_share"]), key=key, progress=big,
            missing_values=tuple(params["clean"].get("missing_values", MISSING_VALUES)),
            sentinel_dates=tuple(str(d) for d in params["clean"].get("sentinel_dates", SENTINEL_DATES)))
        if adapted is not None:
            # The adapter's own rejects first (records it could not make a row of), then clean's.
            rejects = pd.concat([adapted.rejects.reindex(columns=REJECT_COLUMNS), rejects], ignore_index=True)
            metrics = {"source": inp["source"], "adapter": adapted.metrics, **metrics}
        for name, frame in kept.items():
            write_parquet(frame, CLEAN_DIR / f"{name}.parquet")
    _finish(rejects, metrics)


def _finish(rejects: pd.DataFrame, metrics: dict[str, Any]) -> None:
    write_csv(rejects, CLEAN_DIR / "rejects.csv")
    write_json(metrics, METRICS_FILE)
    for name, m in metrics["tables"].items():
        print(f"clean: {name}: {m['rows_in']:,} in = {m['rows_kept']:,} kept + {m['rows_rejected']:,} rejected")


if __name__ == "__main__":
    stage_entry(main)()
