"""Inject the data faults real extracts carry, and log each one, so the cleaner can be tested.

Every fault class gets its own rows (no row carries two injected faults). Rows are
numbered as the cleaner numbers them: data rows from 1, header excluded. Classes that the
cleaner must quarantine are logged with the reject reason it should give; classes it must
repair (codes, whitespace, date formats) are logged as ``normalise``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from pipeline.schema import FACTORS, TABLES

EXCEL_EPOCH = pd.Timestamp("1899-12-30")

#: table -> fault class -> expected handling ("reject:<reason>" or "normalise")
FAULT_CLASSES: dict[str, dict[str, str]] = {
    "children": {
        "duplicate_row": "reject:duplicate_row",
        "missing_child_id": "reject:missing_id",
        "unknown_code": "reject:unknown_code",
        "inconsistent_code": "normalise",
        "stray_whitespace": "normalise",
        "mixed_date_format": "normalise",
    },
    "referrals": {
        "duplicate_row": "reject:duplicate_row",
        "closure_before_referral": "reject:closure_before_referral",
        "date_after_extract": "reject:date_after_extract",
        "referral_before_birth": "reject:referral_before_birth",
        "missing_child_id": "reject:missing_id",
        "child_not_in_children_table": "reject:unknown_child",
        "unknown_code": "reject:unknown_code",
        "inconsistent_code": "normalise",
        "stray_whitespace": "normalise",
        "mixed_date_format": "normalise",
    },
    "plans": {
        "duplicate_row": "reject:duplicate_row",
        "overlapping_plan": "reject:overlapping_plan",
        "date_after_extract": "reject:date_after_extract",
        "missing_child_id": "reject:missing_id",
        "unknown_code": "reject:unknown_code",
        "inconsistent_code": "normalise",
        "stray_whitespace": "normalise",
        "mixed_date_format": "normalise",
    },
}

_VARIANTS = {
    "sex": {"M": ["male", "1", "m", "Male"], "F": ["female", "2", "f", "Female"]},
    "outcome": {"NFA": ["no further action"], "ASSESSED": ["assessment only"], "CIN": ["child in need"],
                "CPP": ["child protection plan", "plan"]},
    "category": {"NEGLECT": ["N", "neglect"], "EMOTIONAL": ["E", "Emotional abuse"], "PHYSICAL": ["P"],
                 "SEXUAL": ["S"], "MULTIPLE": ["M", "multiple"]},
    "flag": {"1": ["Y", "yes", "TRUE"], "0": ["N", "no", "FALSE"]},
}


#: Faults that append rows (after the originals) rather than change cells.
APPENDING_CLASSES = ("duplicate_row", "overlapping_plan")


def to_text(df: pd.DataFrame) -> pd.DataFrame:
    """Render a typed table as the strings a CSV extract holds (ISO dates, '' for missing)."""
    return pd.DataFrame(text_columns(df), columns=df.columns)


def text_columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """``to_text`` as one object array per column."""
    out = {}
    for col in df.columns:
        s = df[col]
        # Dates and numbers are rendered once per distinct value and shared by the rows that
        # hold it (a million rows hold a few thousand dates): one string object per value,
        # not per row (1.2 GB less at a million children).
        if pd.api.types.is_datetime64_any_dtype(s):
            days, missing = s.to_numpy().astype("datetime64[D]"), s.isna().to_numpy()
            distinct, code = np.unique(days, return_inverse=True)
            text = np.datetime_as_string(distinct, unit="D").astype(object)[code.reshape(-1)]
            text[missing] = ""
            out[col] = text
        elif s.dtype == object:  # codes and ids: already text, None where missing
            out[col] = s.fillna("").to_numpy()
        elif isinstance(s.dtype, pd.CategoricalDtype):   # codes (simulate_lean): code -1 is missing
            labels = np.append(np.asarray(s.cat.categories, dtype=object), "")
            out[col] = labels[s.cat.codes.to_numpy()]
        elif isinstance(s.dtype, pd.StringDtype):        # ids held as Arrow strings
            out[col] = s.fillna("").to_numpy(dtype=object)
        elif pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
            code, distinct = pd.factorize(s)
            out[col] = pd.Series(distinct, dtype=s.dtype).astype(str).to_numpy(dtype=object)[code]
        else:
            out[col] = s.astype(str).to_numpy()
    return out


@dataclass
class RawTable:
    """A table as the raw text of an extract, with its faults, held lazily: the typed rows
    (rendered by ``text_columns`` a batch at a time), the faulted cells' text, and the rows
    appended after the originals. The text of the whole table is never held at once."""

    typed: pd.DataFrame
    #: (column, rows, text): cells replaced; each fault class has its own rows.
    cells: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    appended: pd.DataFrame | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.typed.columns)

    def __len__(self) -> int:
        return len(self.typed) + (0 if self.appended is None else len(self.appended))

    def original_text(self, column: str, rows: np.ndarray) -> np.ndarray:
        return text_columns(self.typed[[column]].iloc[rows])[column]

    def set_text(self, column: str, rows: np.ndarray, text: Any) -> None:
        values = np.empty(len(rows), dtype=object)
        values[:] = text
        self.cells.append((column, np.asarray(rows), values))

    def batches(self, rows: int = 1_000_000) -> Iterator[dict[str, np.ndarray]]:
        """The text in row batches: ``rows`` original rows at a time, then the appended rows."""
        for start in range(0, len(self.typed), rows):
            stop = min(start + rows, len(self.typed))
            text = text_columns(self.typed.iloc[start:stop])
            for column, at, values in self.cells:
                inside = (at >= start) & (at < stop)
                if inside.any():
                    text[column] = text[column].copy()
                    text[column][at[inside] - start] = values[inside]
            yield text
        if self.appended is not None and len(self.appended):
            yield {col: self.appended[col].to_numpy(dtype=object) for col in self.columns}

    def frame(self) -> pd.DataFrame:
        """The whole text table (small tables and tests)."""
        parts = [pd.DataFrame(batch, columns=self.columns) for batch in self.batches()]
        return (pd.concat(parts, ignore_index=True) if parts
                else pd.DataFrame({col: pd.Series(dtype=object) for col in self.columns}))


def _dmy(days: pd.Series) -> pd.Series:
    return pd.to_datetime(days).dt.strftime("%d/%m/%Y")


def inject(tables: dict[str, pd.DataFrame], rng: np.random.Generator, rate: float,
           extract_date: pd.Timestamp) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Return the tables as raw text with faults injected, and the log of what went where."""
    raw, log = inject_lazy(tables, rng, rate, extract_date)
    return {name: table.frame() for name, table in raw.items()}, log


def inject_lazy(tables: dict[str, pd.DataFrame], rng: np.random.Generator, rate: float,
                extract_date: pd.Timestamp) -> tuple[dict[str, RawTable], dict[str, Any]]:
    """``inject`` with each table held as a ``RawTable`` (for writing in row batches)."""
    # Children given a rejecting fault; other tables' faults avoid them, so each injected
    # row has exactly one expected reason (not a cascade from its child).
    faulted_children: set[str] = set()
    raw_out: dict[str, RawTable] = {}
    log: dict[str, Any] = {"rate": rate, "row_numbering": "data rows from 1, header excluded", "tables": {}}
    for name, typed in tables.items():
        classes = list(FAULT_CLASSES[name])
        n = len(typed)
        per_class = max(1, int(round(rate * n / len(classes)))) if n else 0
        eligible = _eligibility(name, typed)
        if name != "children":
            clear = ~typed["child_id"].isin(faulted_children).to_numpy(dtype=bool)
            eligible = {cls: eligible.get(cls, np.ones(n, dtype=bool)) & clear for cls in classes}
        taken = np.zeros(n, dtype=bool)
        chosen: dict[str, np.ndarray] = {}
        for cls in classes:
            ok = np.flatnonzero(eligible.get(cls, np.ones(n, dtype=bool)) & ~taken)
            pick = np.sort(rng.choice(ok, size=min(per_class, len(ok)), replace=False)) if len(ok) else ok
            taken[pick] = True
            chosen[cls] = pick
        del taken, eligible
        if name == "children":
            for cls, rows in chosen.items():
                if FAULT_CLASSES[name][cls].startswith("reject"):
                    faulted_children.update(typed["child_id"].iloc[rows])
        raw = RawTable(typed)
        inserts: list[pd.DataFrame] = []
        for cls, rows in chosen.items():
            if cls == "duplicate_row":
                inserts.append(to_text(typed.iloc[rows]))
            elif cls == "overlapping_plan":
                ins = to_text(typed.iloc[rows])
                start = typed["start_date"].iloc[rows]
                end = typed["end_date"].iloc[rows]
                mid = start + (end - start) / 2
                ins["start_date"] = to_text(pd.DataFrame({"d": mid.dt.floor("D")}))["d"].to_numpy()
                ins["plan_id"] = [f"{pid}X" for pid in ins["plan_id"]]
                inserts.append(ins)
            else:
                _apply(name, cls, raw, typed, rows, rng, extract_date, tables["children"])
        # Inserted rows (duplicates, overlapping plans) come after the originals, as when a
        # second export is appended; no reordering.
        raw.appended = pd.concat(inserts, ignore_index=True) if inserts else None
        # Row numbers: a changed row keeps its own; appended rows follow the n originals in
        # class order.
        rows_of: dict[str, np.ndarray] = {}
        after = n
        for cls, rows in chosen.items():
            if cls in APPENDING_CLASSES:
                rows_of[cls] = after + 1 + np.arange(len(rows))
                after += len(rows)
            else:
                rows_of[cls] = rows + 1
        log["tables"][name] = {
            "rows_written": int(len(raw)),
            "faults": {cls: {"expected": FAULT_CLASSES[name][cls], "rows": rows_of[cls].tolist()}
                       for cls in classes},
        }
        raw_out[name] = raw
    return raw_out, log


def _eligibility(name: str, typed: pd.DataFrame) -> dict[str, np.ndarray]:
    n = len(typed)
    if name == "referrals":
        closed = typed["closure_date"].notna().to_numpy()
        return {"closure_before_referral": closed}
    if name == "plans":
        return {"overlapping_plan": (typed["end_date"] - typed["start_date"]).dt.days.fillna(0).to_numpy() > 20,
                "mixed_date_format": np.ones(n, dtype=bool)}
    return {}


def _apply(name: str, cls: str, text: RawTable, typed: pd.DataFrame, rows: np.ndarray,
           rng: np.random.Generator, extract_date: pd.Timestamp, children: pd.DataFrame) -> None:
    """Set the faulted text of ``rows`` for one fault class (no row has two classes, so the
    text read here is each row's original)."""
    if len(rows) == 0:
        return
    table = TABLES[name]
    k = len(rows)
    if cls == "missing_child_id":
        text.set_text("child_id", rows, "")
    elif cls == "child_not_in_children_table":
        text.set_text("child_id", rows, [f"C9{i:06d}Z" for i in range(k)])
    elif cls == "closure_before_referral":
        ref = typed["referral_date"].iloc[rows]
        text.set_text("closure_date", rows, to_text(pd.DataFrame(
            {"d": ref - pd.to_timedelta(rng.integers(1, 60, size=k), unit="D")}))["d"].to_numpy())
    elif cls == "date_after_extract":
        col = "referral_date" if name == "referrals" else "start_date"
        late = extract_date + pd.to_timedelta(rng.integers(1, 200, size=k), unit="D")
        text.set_text(col, rows, to_text(pd.DataFrame({"d": late}))["d"].to_numpy())
        text.set_text("closure_date" if name == "referrals" else "end_date", rows, "")
    elif cls == "referral_before_birth":
        ids = typed["child_id"].iloc[rows]
        kids = children[children["child_id"].isin(set(ids))]
        born = kids.set_index("child_id")["date_of_birth"].reindex(ids).to_numpy()
        early = pd.Series(born) - pd.to_timedelta(rng.integers(30, 400, size=k), unit="D")
        text.set_text("referral_date", rows, to_text(pd.DataFrame({"d": early}))["d"].to_numpy())
    elif cls == "unknown_code":
        col = {"children": "sex", "referrals": "outcome", "plans": "category"}[name]
        text.set_text(col, rows, rng.choice(["X", "ZZ", "99", "??"], size=k))
    elif cls == "inconsistent_code":
        col = {"children": "sex", "referrals": "outcome", "plans": "category"}[name]
        variants = _VARIANTS[col]
        text.set_text(col, rows, [variants[v][rng.integers(len(variants[v]))]
                                  for v in text.original_text(col, rows)])
        if name == "referrals":
            factor = FACTORS[int(rng.integers(len(FACTORS)))]
            text.set_text(factor, rows, [_VARIANTS["flag"][v][rng.integers(3)]
                                         for v in text.original_text(factor, rows)])
    elif cls == "stray_whitespace":
        col = {"children": "la_code", "referrals": "referral_source", "plans": "category"}[name]
        pads = rng.choice([" {} ", "{}  ", "\t{}", " {}"], size=k)
        text.set_text(col, rows, [p.format(v) for p, v in zip(pads, text.original_text(col, rows))])
    elif cls == "mixed_date_format":
        col = next(f.name for f in table.fields if f.kind == "date")
        dates = typed[col].iloc[rows]
        serial = (dates - EXCEL_EPOCH).dt.days.astype(str).to_numpy()
        text.set_text(col, rows, np.where(rng.random(k) < 0.5, _dmy(dates).to_numpy(), serial))
    else:  # pragma: no cover - FAULT_CLASSES and this function move together
        raise ValueError(f"unknown fault class {cls}")
