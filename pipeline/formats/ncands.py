"""US NCANDS Child File -> canonical tables (``input.source: ncands``).

``input.dir`` holds one or more submission years of the Child File as NDACAN distributes it
or as the Children's Bureau record layout describes it: delimited text (``.csv``, ``.tab``,
``.tsv``, ``.txt``, ``.dat``; comma, tab or pipe, detected from the header line) and
Stata (``.dta``), SAS (``.sas7bdat``, ``.xpt``) or SPSS (``.sav``) files (read with
pyreadstat, which applies the files' date formats). One record is one report-child pair.
Column names, code lists and settings are in ``ncands.yaml`` (sources cited there); column
names match ignoring case. The rules:

* **Keys.** la_code = state (StaTerr); child_id = ``"<state>/<ChID>"`` (a child id is unique
  only within a state); referral_id = ``"<state>/<RptID>/<ChID>"``; family_id absent (NCANDS
  has none: each child is its own cluster).
* **Merging.** The same report-child pair in several files (a report resubmitted in a later
  year) is kept once: the later copy, ordered by submission year (SubYr) where given, then
  file name, then row. The others are counted as ``merged``; a merged copy that differs from
  the kept one in any mapped field is counted as a conflict. records_in = kept + rejected +
  merged.
* **Dates.** referral_date = RptDt (report date). NCANDS has no closure date: the episode
  ends at the disposition date (RpDispDt / RPTDISDT) when present and not before the report
  date, else at the report date (the episodes stage then starts follow-up at
  ``max(closure, report + same_episode_days)``). Dates are read as ISO, ``mm/dd/yyyy``, the
  layout's ``mmddyyyy``, or a statistics file's date: a slash date is always month first
  (NCANDS is US data and its record layout is month-first), so ``input.dayfirst`` is ignored
  (``read`` accepts it for the adapter interface). A numeric date without a date format in a
  SAS or Stata file counts days from 1960-01-01.
* **Date of birth.** NCANDS gives the age in whole years at the report (ChAge), no birth
  date. A report on day d at age a puts the birth in ``(d - (a+1) years, d - a years]``
  (calendar years; 29 February falls back to 28). The child's interval is the intersection
  over all its reports ``(lo, hi]``, and the date of birth is its middle day
  ``lo + (hi - lo + 1) // 2`` (the earlier of two middle days); the 18th birthday follows
  from it. A child whose intervals do not intersect is rejected (``invalid_value`` on ChAge)
  with all its reports (``child_rejected``), and counted. ChAge 77 (unborn), 99 (unknown) or
  blank gives no interval; a child with none has no date of birth (clean: missing_value).
* **Child attributes** (sex, ethnicity) come from the child's latest report that has a known
  value (report date, then merge order); a code not in the map in any report wins, so clean
  quarantines the child. disability = 1 if any child risk factor (intellectual disability,
  emotional disturbance, visual/hearing, learning disability, physical disability, behaviour
  problem, other medical condition) is yes in any report; else 0 if one is no in any report;
  else (every one unknown, 9 or blank, in every report) blank, so clean quarantines the child
  (missing_value), or 0 with ``risk_factor_unknown_as: 0``; both counted (``risk_factors``),
  as are children given 0 while some of their child risk factors were unknown. A state that
  collects only some of the seven reports the others as unknown: a "no" on those it collects
  gives 0 (stated in the metrics). looked_after_date = the
  earliest removal date (RmvDate) of a report with foster care services (FosterCr yes):
  entering care, a competing end of follow-up.
* **sex**: ChSex 1 M, 2 F, 9 or blank U. **ethnicity**: Hispanic (CEthn 1) of any race ->
  ``hispanic_group`` (OTHER; the Children's Bureau counts Hispanic as its own group and the
  canonical codes have none); else one race flag yes -> its group (American Indian/Alaska
  Native and Native Hawaiian/Pacific Islander -> OTHER), two or more -> MIXED, none ->
  UNKNOWN.
* **referral_source** = RptSrc via the code list (social services -> LA_SERVICES; medical,
  mental health -> HEALTH; legal/law enforcement -> POLICE; education -> SCHOOL; day care,
  substitute care, other -> OTHER; alleged victim, parent, relative, friends/neighbours,
  alleged perpetrator -> INDIVIDUAL; anonymous, unknown, blank -> UNKNOWN).
* **outcome**: post-investigation services (PostServ yes) -> CIN, no -> ASSESSED; unknown (9)
  or blank -> blank (clean: missing_value on outcome; counted as ``outcome_unknown``): unknown
  is never read as "no services". Screened-out referrals never appear in the Child File (it
  holds reports that received a CPS response and a disposition), so there is no NFA.
* **abuse_category** from ChMal1-4 (alleged maltreatment types): physical -> PHYSICAL; neglect,
  medical neglect -> NEGLECT; sexual abuse, sex trafficking -> SEXUAL; psychological ->
  EMOTIONAL; two or more distinct -> MULTIPLE; none/other/unknown -> empty.
* **factors** (caregiver risk factors; 1 yes, 2 no, 9 or blank unknown): substance_misuse =
  alcohol or drug abuse; domestic_violence; mental_health = emotional disturbance;
  learning_disability = intellectual or learning disability; financial_problems = financial
  problem (public assistance is not). A factor is 1 if any of its fields is yes, else unknown
  if any is unknown, else 0. Unknown is never counted as absent: with
  ``risk_factor_unknown_as: null`` (the default) an unknown factor is left blank, so clean
  quarantines the referral (missing_value, field = the factor); with 0 (an explicit choice)
  it is 0, "not recorded as present". Either way a factor unknown in every kept record is not
  recorded by this input (states that do not collect a factor report it as unknown): its
  column is left out and listed in ``Adapted.not_recorded``, not quarantined everywhere.
  The unknowns are counted per factor in the metrics (``risk_factors``).
  low_social_support and parent_maltreated_as_child are not recorded (columns absent).
* **plans**: none (NCANDS has no child protection plans): an empty table.
* **Codes** not in the map pass through so that clean quarantines the row as unknown_code: a
  field mapped from one column (sex, referral_source, outcome) carries the value itself; a
  field derived from several columns or computed (ethnicity, disability, the factors,
  abuse_category, date_of_birth, looked_after_date) carries ``"<column>=<value>"`` (e.g.
  ``FCViol=4``), naming the column the value came from. The adapter itself rejects a record
  without state, RptID or ChID (missing_id) or without a readable report date
  (missing_value / unparseable_date).

``source_location`` is ``"<file>: row <n>"``, n counting data records from 1 (the header
line excluded); a child's is its latest report's. Bad input stops with one line naming the
file, the row or header, and the field; a folder with no usable record (no record, or every
one rejected) stops with one line naming it and the counts by reason.

``metrics["statements"]``: short plain-English sentences of the rules above and what they
did to this input (the report prints them under "Data and cleaning"; counts below 10 are
written "fewer than 10").

``write(children, referrals, plans, out_dir, extract_date=...)`` does the reverse for a clean,
typed canonical extract (``simulate.ncands``; ``input.source: ncands`` with ``input.dir`` under
``data/raw/synthetic/``). Every code is one of ``ncands.yaml``'s maps read backwards (the first
code listed for a value, blank never, unless ``writer.prefer`` names another; checked), so
``read`` maps it back to the same canonical value. The rules:

* **Files and records.** One comma-delimited file per federal fiscal year (FFY: 1 October to
  30 September; ``writer.file_name``), one record per referral (report-child pair), in the
  file of the FFY of its closure (RpDispDt): the Child File of a year holds the reports
  disposed of in that year. A referral still open at the extract date has no disposition yet
  and is **not written** (it would be submitted in a later year); nor is a child with no
  closed referral. The last file is the extract date's FFY, partial. SubYr = the FFY.
  Plans are not written (NCANDS has none).
* **Keys.** StaTerr from la_code: kept when already two capital letters, else ``AA``, ``AB``,
  ... in la_code order (``state_codes``; returned); ChID = child_id, RptID = referral_id.
* **Dates** ISO. RptDt = referral_date, RpDispDt = closure_date. ChAge = whole years of age
  at the report, counted in calendar years as ``read`` counts them (so the true birth date
  lies in every report's interval).
* **Child.** ChSex from sex. Race: WHITE, ASIAN, BLACK -> that race flag yes; OTHER -> the
  first race flag ``race_groups`` maps to OTHER (American Indian or Alaska Native); MIXED ->
  the two flags of ``writer.mixed_races``; UNKNOWN -> no race flag yes, ChRacUd yes; the other
  flags no. CEthn (Hispanic) no for every child: the canonical groups have no Hispanic group.
  disability 1 -> the first child risk factor of ``disability`` yes, the others no; 0 -> all
  no; written on every report of the child. looked_after_date -> FosterCr yes and RmvDate on
  the child's latest written report (report date, then input order), whatever FFY the removal
  falls in (in the simulation a child entering care is not referred again; NCANDS would
  report the removal only as a service following that report); FosterCr no elsewhere.
* **Report.** RptSrc from referral_source. ChMal1 from abuse_category (none -> the code
  ``writer.prefer`` names for no category); MULTIPLE -> ChMal1 and ChMal2 of the two
  ``writer.multiple_categories``; ChMal2-4 blank otherwise. PostServ yes when the outcome is a
  service (CIN, CPP), no otherwise (NFA, ASSESSED: read back as ASSESSED). Each recorded
  factor: 1 -> its first caregiver field yes, the others no; 0 -> all no; missing or not in
  the extract -> unknown. FCPublic (public assistance) is not written.
"""

from __future__ import annotations

import itertools
import re
import string
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.cli import InputError
from pipeline.formats import Adapted, field_map
from pipeline.io import atomic_path, read_table
from pipeline.schema import NO_SERVICE_OUTCOMES, PLANS

REJECT_COLUMNS = ["table", "source_row", "field", "value", "reason"]
_DAY_NS = 86_400_000_000_000
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T].*)?$")
_SLASH = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?: .*)?$")
_LAYOUT = re.compile(r"^(\d{2})(\d{2})(\d{4})$")                  # mmddyyyy (record layout)
_STAT_READERS = {"dta": "read_dta", "sav": "read_sav", "sas7bdat": "read_sas7bdat", "xpt": "read_xport"}


def load_field_map() -> dict[str, Any]:
    return field_map("ncands")


# ------------------------------------------------------------------------------------------
# Reading files: every mapped column as stripped text ("" when blank)
# ------------------------------------------------------------------------------------------

def _resolve_columns(path: Path, header: list[str], spec: dict[str, Any], where: str) -> dict[str, str | None]:
    """Logical field -> the file's column name (None for an absent optional field)."""
    by_lower: dict[str, str] = {}
    for name in header:
        by_lower.setdefault(str(name).strip().lower(), name)
    out: dict[str, str | None] = {}
    for logical, entry in spec["columns"].items():
        found = next((by_lower[n.lower()] for n in entry["names"] if n.lower() in by_lower), None)
        if found is None and not entry.get("optional"):
            names = entry["names"]
            also = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
            raise InputError(f"{path.name}: {where}: missing column '{names[0]}'{also}")
        out[logical] = found
    return out


def _detect_delimiter(path: Path, first_line: str, delimiters: list[str]) -> str:
    counts = {d: first_line.count(d) for d in delimiters}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        shown = ", ".join(repr(d) for d in delimiters)
        raise InputError(f"{path.name}: line 1: unknown delimiter (the header has none of {shown})")
    return best


def _read_delimited(path: Path, spec: dict[str, Any], encoding: str = "utf-8"
                    ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A delimited Child File through the project's one reader (``pipeline.io.read_table``:
    every record counted and checked, values kept as text, a byte-order mark dropped), with the
    delimiter detected from the header line and only the mapped columns kept."""
    head = path.read_bytes()[:1 << 16]
    first = head.decode(encoding, errors="replace").removeprefix("\ufeff").split("\n", 1)[0].rstrip("\r")
    if not first.strip():
        raise InputError(f"{path.name}: line 1: empty header")
    delimiter = _detect_delimiter(path, first, spec["delimiters"])
    header = [h.strip().strip('"') for h in first.split(delimiter)]
    columns = _resolve_columns(path, header, spec, "header (line 1)")
    wanted = {c for c in columns.values() if c is not None}
    frame = read_table(path, encoding=encoding, delimiter=delimiter, categorical=True,
                       columns=lambda c: c.strip().strip('"') in wanted)
    frame.columns = [c.strip().strip('"') for c in frame.columns]
    text = pd.DataFrame({logical: (_strip(frame[col]) if col is not None else "")
                         for logical, col in columns.items()}, index=frame.index)
    return text, {"format": "delimited", "delimiter": delimiter, "encoding": encoding}


def _strip(values: pd.Series) -> pd.Series:
    """Stripped text; each distinct value stripped once (columns of codes repeat a few values)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = values.cat.codes.to_numpy(), values.cat.categories
    else:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    stripped = np.array([str(u).strip() for u in uniques] + [""], dtype=object)  # code -1: missing
    return pd.Series(stripped[codes], index=values.index)


def _stat_text(series: pd.Series, is_date: bool, epoch: np.datetime64) -> pd.Series:
    """A statistics-file column as text: whole numbers without '.0', dates as ISO."""
    if pd.api.types.is_datetime64_any_dtype(series):
        days = series.to_numpy().astype("datetime64[D]")
        return pd.Series(np.datetime_as_string(days, unit="D"), index=series.index).where(series.notna(), "")
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=float)
        present = ~np.isnan(values)
        whole = present & (values == np.round(values))
        out = np.full(len(values), "", dtype=object)
        ints = values[whole].astype(np.int64)
        if is_date:
            # 7-8 digits: the layout's mmddyyyy stored as a number; else days since 1960-01-01.
            layout = (ints >= 1_000_000) & (ints <= 12_319_999)
            text = np.where(layout, np.char.zfill(ints.astype(str), 8),
                            np.datetime_as_string(epoch + ints.astype("timedelta64[D]"), unit="D"))
            out[whole] = text
        else:
            out[whole] = ints.astype(str)
        out[present & ~whole] = [repr(v) for v in values[present & ~whole]]
        return pd.Series(out, index=series.index)
    values = series.astype(object)
    dated = values.map(lambda v: hasattr(v, "year") and hasattr(v, "month"))
    if dated.any():  # datetime.date / datetime objects
        iso = pd.to_datetime(values.where(dated)).dt.strftime("%Y-%m-%d")
        values = values.where(~dated, iso)
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())


def _read_stat(path: Path, spec: dict[str, Any], ext: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    import pyreadstat  # reads Stata, SAS and SPSS files with their date formats applied

    reader = getattr(pyreadstat, _STAT_READERS[ext])
    failures = (pyreadstat.ReadstatError, pyreadstat.PyreadstatError, OSError, UnicodeDecodeError)
    try:
        _, meta = reader(str(path), metadataonly=True)
    except failures as err:
        raise InputError(f"{path.name}: unreadable {ext} file ({type(err).__name__}: {err})") from None
    columns = _resolve_columns(path, list(meta.column_names), spec, "variables")
    wanted = [c for c in columns.values() if c is not None]
    try:
        frame, _ = reader(str(path), usecols=wanted)
    except failures as err:
        raise InputError(f"{path.name}: unreadable {ext} file ({type(err).__name__}: {err})") from None
    epoch = np.datetime64(spec["stat_date_epoch"], "D")
    date_fields = {"report_date", "disposition_date", "removal_date"}
    text = pd.DataFrame({logical: (_stat_text(frame[col], logical in date_fields, epoch) if col is not None else "")
                         for logical, col in columns.items()}, index=frame.index)
    return text, {"format": ext, "delimiter": None}


def _child_files(input_dir: Path, spec: dict[str, Any]) -> tuple[list[tuple[Path, str]], list[str]]:
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input.dir is not a folder")
    delimited = set(spec["delimited_extensions"])
    stat = set(spec["stat_extensions"])
    files, ignored = [], []
    for path in sorted(p for p in input_dir.iterdir() if p.is_file()):
        name = path.name.lower()
        ext = next((e for e in sorted(delimited | stat, key=len, reverse=True) if name.endswith("." + e)), None)
        if ext is None:
            ignored.append(path.name)
        else:
            files.append((path, ext))
    if not files:
        kinds = "/".join("." + e for e in [*spec["delimited_extensions"], *spec["stat_extensions"]])
        raise InputError(f"{input_dir}: no Child File found ({kinds})")
    return files, ignored


# ------------------------------------------------------------------------------------------
# Codes and dates
# ------------------------------------------------------------------------------------------

def _map_codes(text: pd.Series, codes: dict[str, Any]) -> tuple[pd.Series, np.ndarray]:
    """Canonical code per value (None where the code maps to none) and a mask of unmapped values."""
    table = {str(k): v for k, v in codes.items()}
    codes_, uniques = pd.factorize(text, use_na_sentinel=False)
    known = np.array([u in table for u in uniques], dtype=bool)
    mapped = np.array([table.get(u) for u in uniques], dtype=object)
    return pd.Series(mapped[codes_], index=text.index), ~known[codes_]


def _yes_no(text: pd.Series, yes_no: dict[str, list[str]]) -> np.ndarray:
    """Per value: 1 yes, 0 no, -1 unknown, -2 not a code of the field."""
    lookup = {**{v: 1 for v in yes_no["yes_codes"]}, **{v: 0 for v in yes_no["no_codes"]},
              **{v: -1 for v in yes_no.get("unknown_codes", [])}}
    codes_, uniques = pd.factorize(text, use_na_sentinel=False)
    return np.array([lookup.get(u, -2) for u in uniques], dtype=np.int8)[codes_]


def parse_dates(text: pd.Series) -> pd.Series:
    """Dates from ISO, mm/dd/yyyy and mmddyyyy text (month first, as the US record layout);
    NaT otherwise."""
    codes_, uniques = pd.factorize(text, use_na_sentinel=False)
    parsed = np.full(len(uniques), np.datetime64("NaT"), dtype="datetime64[D]")
    for i, u in enumerate(uniques):
        for pattern, order in ((_ISO, "ymd"), (_SLASH, "mdy"), (_LAYOUT, "mdy")):
            m = pattern.match(u)
            if m:
                parts = dict(zip(order, (int(g) for g in m.groups())))
                try:
                    parsed[i] = np.datetime64(f"{parts['y']:04d}-{parts['m']:02d}-{parts['d']:02d}", "D")
                except ValueError:
                    pass
                break
    return pd.Series(parsed[codes_].astype("datetime64[ns]"), index=text.index)


def _iso(dates: pd.Series) -> pd.Series:
    days = dates.to_numpy().astype("datetime64[D]")
    return pd.Series(np.datetime_as_string(days, unit="D"), index=dates.index).where(dates.notna(), "")


def _years_before(day: pd.Series, years: np.ndarray) -> np.ndarray:
    """Day numbers of ``day - years`` calendar years (29 February -> 28 February)."""
    y = day.dt.year.to_numpy() - years
    m = day.dt.month.to_numpy()
    d = day.dt.day.to_numpy()
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    d = np.where((m == 2) & (d == 29) & ~leap, 28, d)
    out = pd.to_datetime(pd.DataFrame({"year": y, "month": m, "day": d}))
    return out.to_numpy().astype(np.int64) // _DAY_NS


# ------------------------------------------------------------------------------------------
# The route
# ------------------------------------------------------------------------------------------

def read(input_dir: Path, *, dayfirst: bool = False, progress: bool = False,
         spec: dict[str, Any] | None = None, min_count: int | None = None, encoding: str = "utf-8") -> Adapted:
    """Read every Child File in ``input_dir`` into the canonical tables (rules: module docstring).

    ``dayfirst`` is accepted for the adapter interface and ignored: slash dates are month first.
    ``spec`` replaces ``ncands.yaml`` (the field map and settings, as ``load_field_map``
    returns them), e.g. a test's ``risk_factor_unknown_as``.
    """
    del dayfirst  # NCANDS dates are month first (module docstring)
    spec = load_field_map() if spec is None else spec
    unknown_as = spec.get("risk_factor_unknown_as")
    if unknown_as is not None and unknown_as != 0:
        raise InputError(f"ncands.yaml: risk_factor_unknown_as: {unknown_as!r}: must be null or 0")
    input_dir = Path(input_dir)
    files, ignored = _child_files(input_dir, spec)
    parts, file_metrics = [], []
    for index, (path, ext) in enumerate(files):
        t0 = time.perf_counter()
        text, info = (_read_stat(path, spec, ext) if ext in _STAT_READERS else _read_delimited(path, spec, encoding))
        text = text.reset_index(drop=True)
        text["_file"] = index
        text["_row"] = np.arange(1, len(text) + 1)
        parts.append(text)
        file_metrics.append({"file": path.name, **info, "records": len(text)})
        if progress:
            print(f"ncands: {path.name}: {len(text):,} records read in {time.perf_counter() - t0:.1f}s",
                  file=sys.stderr)
    rec = pd.concat(parts, ignore_index=True)
    names = np.array([p.name for p, _ in files], dtype=object)
    rec["_where"] = names[rec["_file"].to_numpy()] + ": row " + rec["_row"].astype(str)
    n_in = len(rec)
    first_name = {k: v["names"][0] for k, v in spec["columns"].items()}
    rejects: list[pd.DataFrame] = []

    def reject(mask: np.ndarray, table: str, field: str, value, reason: str, where=None) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            rejects.append(pd.DataFrame({
                "table": table, "source_row": (rec["_where"] if where is None else where).to_numpy()[rows],
                "field": field, "value": value[rows] if isinstance(value, np.ndarray) else value,
                "reason": reason}, columns=REJECT_COLUMNS))

    # 1. Records the adapter cannot key or date.
    alive = np.ones(n_in, dtype=bool)
    for logical in ("state", "report_id", "child_id"):
        blank = alive & (rec[logical] == "").to_numpy()
        reject(blank, "referrals", first_name[logical], None, "missing_id")
        alive &= ~blank
    report_day = parse_dates(rec["report_date"])
    blank = alive & (rec["report_date"] == "").to_numpy()
    reject(blank, "referrals", first_name["report_date"], None, "missing_value")
    alive &= ~blank
    bad = alive & report_day.isna().to_numpy()
    reject(bad, "referrals", first_name["report_date"], rec["report_date"].to_numpy(), "unparseable_date")
    alive &= ~bad
    _stop_if_none_usable(input_dir, alive, rejects)

    # 2. Merge copies of a report-child pair: the later one (SubYr, file, row) is kept.
    subyr = pd.to_numeric(rec["submission_year"], errors="coerce").fillna(-1).to_numpy()
    order = np.lexsort((rec["_row"].to_numpy(), rec["_file"].to_numpy(), subyr))
    rec["_prec"] = np.empty(n_in, dtype=np.int64)
    rec.loc[order, "_prec"] = np.arange(n_in)
    rec["_child"] = rec["state"] + "/" + rec["child_id"]
    rec["_key"] = rec["state"] + "/" + rec["report_id"] + "/" + rec["child_id"]
    live = rec.loc[alive, ["_key", "_prec"]].sort_values("_prec")  # column subsets: no full copies
    dup = live["_key"].duplicated(keep="last")
    merged_rows = live.index[dup].to_numpy()
    mapped_fields = [c for c in spec["columns"] if c != "submission_year"]
    copies = rec.loc[live.index[live["_key"].duplicated(keep=False)], ["_key", *mapped_fields]]
    content = pd.util.hash_pandas_object(copies[mapped_fields], index=False)
    kept_hash = content.groupby(copies["_key"].to_numpy()).transform("last")
    merge_conflicts = int((dup[copies.index] & (content != kept_hash)).sum())
    alive[merged_rows] = False

    # 3. Per-record codes.
    sex, sex_bad = _map_codes(rec["child_sex"], spec["sex"])
    sex = sex.where(~sex_bad, rec["child_sex"])
    sex_rank = np.where(sex_bad, 2, np.where(sex.isin(["M", "F"]), 1, 0))
    ethnicity, eth_rank = _ethnicity(rec, spec)
    disability, dis_rank, dis_some_unknown = _disability(rec, spec)
    looked_after, la_rank, la_day, la_counts = _looked_after(rec, spec, alive)

    # 4. Birth-date intervals, intersected per child.
    age_text = rec["child_age"]
    age = pd.to_numeric(age_text, errors="coerce").to_numpy()
    ages = spec["child_age"]
    no_age = age_text.isin([str(v) for v in ages["no_age"]]).to_numpy()
    valid_age = ~no_age & (age == np.round(age)) & (age >= ages["min"]) & (age <= ages["max"])
    bad_age = ~no_age & ~valid_age
    a = np.where(valid_age, age, 0).astype(np.int64)
    lower = np.where(valid_age, _years_before(report_day.fillna(pd.Timestamp("2000-01-01")), a + 1), np.iinfo(np.int64).min)
    upper = np.where(valid_age, _years_before(report_day.fillna(pd.Timestamp("2000-01-01")), a), np.iinfo(np.int64).max)

    child_columns = ["_child", "_prec", "_where", "state", "child_age"]
    live = rec.loc[alive, child_columns]
    child = live["_child"]
    lo = pd.Series(lower[alive]).groupby(child.to_numpy()).max()
    hi = pd.Series(upper[alive]).groupby(child.to_numpy()).min()
    has_age = pd.Series(valid_age[alive]).groupby(child.to_numpy()).any()
    conflict = has_age & (lo >= hi)
    fits = (has_age & ~conflict).to_numpy()
    lo_day, hi_day = np.where(fits, lo, 0), np.where(fits, hi, 0)  # no int64 overflow where no age
    mid = lo_day + (hi_day - lo_day + 1) // 2
    dob = pd.Series(mid.astype("datetime64[D]").astype("datetime64[ns]"), index=lo.index).where(fits)
    dob_text = _iso(dob)

    # The child's latest report: report date, then merge order.
    live_day = report_day[alive].to_numpy().astype("datetime64[D]").astype(np.int64)
    live_code = pd.factorize(live["_child"])[0]
    order = np.lexsort((live["_prec"].to_numpy(), live_day, live_code))
    ends = np.flatnonzero(np.append(live_code[order][1:] != live_code[order][:-1], True))
    latest = live.iloc[order[ends]].set_index("_child")
    bad_child = conflict[conflict].index
    if len(bad_child):
        last_rows = latest.loc[bad_child]
        ages_seen = live.loc[live["_child"].isin(bad_child)].groupby("_child")["child_age"].agg(
            lambda s: "; ".join(dict.fromkeys(s)))
        rejects.append(pd.DataFrame({"table": "children", "source_row": last_rows["_where"].to_numpy(),
                                     "field": first_name["child_age"],
                                     "value": ("ages " + ages_seen.reindex(bad_child)).to_numpy(),
                                     "reason": "invalid_value"}, columns=REJECT_COLUMNS))
        drop = alive & rec["_child"].isin(bad_child).to_numpy()
        reject(drop, "referrals", "child_id", None, "child_rejected")
        alive &= ~drop
        _stop_if_none_usable(input_dir, alive, rejects)
    live = rec.loc[alive, child_columns]

    # 5. Children: one row per child from its kept reports.
    day = report_day[alive]

    child_code = pd.factorize(live["_child"])[0]
    day_int = day.to_numpy().astype("datetime64[D]").astype(np.int64)
    prec = live["_prec"].to_numpy()

    def pick(values: pd.Series, rank: np.ndarray, order_key: np.ndarray | None = None) -> pd.Series:
        """Per child, the value of the highest rank; among those, the latest report (or the
        smallest ``order_key``)."""
        if order_key is None:
            order = np.lexsort((prec, day_int, rank[alive], child_code))
        else:
            order = np.lexsort((-order_key[alive], rank[alive], child_code))
        code = child_code[order]
        last = np.flatnonzero(np.append(code[1:] != code[:-1], True))
        return pd.Series(values[alive].to_numpy()[order[last]],
                         index=live["_child"].to_numpy()[order[last]])

    child_ids = latest.index[~latest.index.isin(bad_child)]
    bad_age_text = pd.Series(np.where(bad_age, "ChAge=" + age_text, ""), index=rec.index)
    bad_age_child = pick(bad_age_text, bad_age.astype(np.int8)).reindex(child_ids)
    dob_out = dob_text.reindex(child_ids).fillna("")
    dob_out = dob_out.where(bad_age_child == "", bad_age_child)
    sex_by = pick(sex, sex_rank).reindex(child_ids)
    eth_by = pick(ethnicity, eth_rank).reindex(child_ids)
    conflicts = {
        "sex": _known_conflicts(live, sex[alive], sex_rank[alive] == 1),
        "ethnicity": _known_conflicts(live, ethnicity[alive], eth_rank[alive] == 1),
    }
    # Disability: rank 0 in every report = every child risk factor unknown in every report.
    dis_best = pick(pd.Series(dis_rank, index=rec.index), dis_rank).reindex(child_ids)
    dis_unknown_somewhere = pd.Series(dis_some_unknown[alive]).groupby(live["_child"].to_numpy()).any()
    disability_counts = {
        "children_all_unknown": int((dis_best == 0).sum()),
        "children_0_with_some_unknown": int(((dis_best == 1) & dis_unknown_somewhere.reindex(child_ids)).sum()),
    }
    children = pd.DataFrame({
        "child_id": child_ids.to_numpy(),
        "la_code": latest.loc[child_ids, "state"].to_numpy(),
        "sex": sex_by.to_numpy(),
        "date_of_birth": dob_out.to_numpy(),
        "ethnicity": eth_by.to_numpy(),
        "disability": pick(disability, dis_rank).reindex(child_ids).to_numpy(),
        "looked_after_date": pick(looked_after, la_rank, la_day).reindex(child_ids).to_numpy(),
        "source_location": latest.loc[child_ids, "_where"].to_numpy(),
    })

    # 6. Referrals: one row per kept record.
    referrals, ref_counts, not_in_input = _referrals(rec.loc[alive], report_day[alive], spec)
    ref_counts["risk_factors"]["disability"] = {
        **disability_counts, "result": "0" if unknown_as == 0 else "blank (clean: missing_value)"}

    plans = pd.DataFrame({c: pd.Series(dtype=object) for c in [*PLANS.columns, "source_location"]})
    rejects_frame = (pd.concat(rejects, ignore_index=True) if rejects
                     else pd.DataFrame(columns=REJECT_COLUMNS))
    record_rejects = rejects_frame[rejects_frame["table"] == "referrals"]
    n_merged = len(merged_rows)
    metrics = {
        "source": "ncands",
        "files": file_metrics,
        "ignored_files": ignored,
        # Per record kind, as every adapter: records_in = kept + rejected + merged. A Child File
        # record is a report-child pair (a referral); children are the distinct (state, ChID).
        "records": {
            "referrals": {
                "records_in": int(n_in), "kept": len(referrals), "rejected": len(record_rejects),
                "merged": n_merged, "conflicts": merge_conflicts,
                "rejected_by_reason": {k: int(v) for k, v in record_rejects["reason"].value_counts().items()},
            },
            "children": {
                "records_in": int(len(children) + len(bad_child)), "kept": len(children),
                "rejected": len(bad_child), "merged": 0, "rejected_inconsistent_ages": len(bad_child),
                "no_birth_date": int((children["date_of_birth"] == "").sum()),
                "looked_after_dates": int((children["looked_after_date"] != "").sum()),
                "attribute_conflicts": conflicts,
            },
        },
        "reconciled": True,
        "rule": "records in = kept + rejected + merged (merged: the same report-child pair in another file)",
        **ref_counts,
        "looked_after": la_counts,
        "screened_out": "not in the Child File: it holds reports that received a CPS response and a disposition",
    }
    metrics["statements"] = _statements(metrics, min_count or _MIN_COUNT)
    if metrics["records"]["referrals"]["records_in"] != len(referrals) + len(record_rejects) + n_merged:
        raise RuntimeError("ncands: records in != kept + rejected + merged")
    return Adapted(tables={"children": children, "referrals": referrals, "plans": plans},
                   rejects=rejects_frame, metrics=metrics,
                   not_recorded=[*spec["not_recorded"], *not_in_input])


def _stop_if_none_usable(input_dir: Path, alive: np.ndarray, rejects: list[pd.DataFrame]) -> None:
    """Stop, naming the folder and the counts, when no record is left to make a row of."""
    if alive.any():
        return
    frame = pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=REJECT_COLUMNS)
    records = frame[frame["table"] == "referrals"]
    by_reason = ", ".join(f"{reason} {n}" for reason, n in records["reason"].value_counts().items())
    n = len(alive)
    raise InputError(f"{input_dir}: no usable Child File record: {n} record{'' if n == 1 else 's'} read, "
                     f"{len(records)} rejected" + (f" ({by_reason})" if by_reason else ""))


def _known_conflicts(live: pd.DataFrame, values: pd.Series, known: np.ndarray) -> int:
    """Children whose reports give two or more different known values."""
    child = pd.factorize(live["_child"])[0][known]
    value = pd.factorize(values)[0][known]
    pairs = np.unique(child.astype(np.int64) * (value.max(initial=0) + 1) + value)
    per_child = np.bincount(pairs // (value.max(initial=0) + 1))
    return int((per_child > 1).sum())


def _ethnicity(rec: pd.DataFrame, spec: dict[str, Any]) -> tuple[pd.Series, np.ndarray]:
    """Canonical group per record and its rank (2 unmapped code, 1 known, 0 UNKNOWN)."""
    n = len(rec)
    bad = pd.Series("", index=rec.index)
    race_flag = spec["race_flag"]
    n_races = np.zeros(n, dtype=np.int64)
    group = np.full(n, "UNKNOWN", dtype=object)
    first_name = {k: v["names"][0] for k, v in spec["columns"].items()}
    for logical, canonical in spec["race_groups"].items():
        flag = _yes_no(rec[logical], race_flag)
        bad = bad.where((bad != "") | (flag != -2), first_name[logical] + "=" + rec[logical])
        n_races += flag == 1
        group = np.where(flag == 1, canonical, group)
    for logical in ("race_unable_to_determine",):
        flag = _yes_no(rec[logical], race_flag)
        bad = bad.where((bad != "") | (flag != -2), first_name[logical] + "=" + rec[logical])
    group = np.where(n_races >= 2, "MIXED", group)
    hisp = _yes_no(rec["hispanic"], spec["hispanic_flag"])
    bad = bad.where((bad != "") | (hisp != -2), first_name["hispanic"] + "=" + rec["hispanic"])
    if spec.get("hispanic_group"):
        group = np.where(hisp == 1, spec["hispanic_group"], group)
    out = pd.Series(group, index=rec.index).where(bad == "", bad)
    rank = np.where(bad != "", 2, np.where(out != "UNKNOWN", 1, 0))
    return out, rank


def _disability(rec: pd.DataFrame, spec: dict[str, Any]) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Per record: '1' if any child risk factor is yes; else '0' if any is no; else (every one
    unknown) blank, or '0' with ``risk_factor_unknown_as: 0``; an unmapped code wins as
    ``"<column>=<value>"``. Returns the value, its rank (3 unmapped, 2 yes, 1 no, 0 all
    unknown: a child takes its highest) and whether any child risk factor was unknown."""
    first_name = {k: v["names"][0] for k, v in spec["columns"].items()}
    any_yes = np.zeros(len(rec), dtype=bool)
    any_no = np.zeros(len(rec), dtype=bool)
    any_unknown = np.zeros(len(rec), dtype=bool)
    bad = pd.Series("", index=rec.index)
    for logical in spec["disability"]:
        flag = _yes_no(rec[logical], spec["yes_no"])
        any_yes |= flag == 1
        any_no |= flag == 0
        any_unknown |= flag == -1
        bad = bad.where((bad != "") | (flag != -2), first_name[logical] + "=" + rec[logical])
    unknown_value = "0" if spec.get("risk_factor_unknown_as") == 0 else ""
    value = np.where(any_yes, "1", np.where(any_no, "0", unknown_value))
    out = pd.Series(value, index=rec.index).where(bad == "", bad)
    rank = np.where(bad != "", 3, np.where(any_yes, 2, np.where(any_no, 1, 0)))
    return out, rank, any_unknown


def _looked_after(rec: pd.DataFrame, spec: dict[str, Any],
                  alive: np.ndarray) -> tuple[pd.Series, np.ndarray, np.ndarray, dict[str, int]]:
    """Removal date of reports with foster care services (rank 1; unreadable date rank 2),
    its day number (to pick the earliest) and the counts of incomplete removals."""
    foster = _yes_no(rec["foster_care_services"], spec["yes_no"])
    removal = rec["removal_date"]
    parsed = parse_dates(removal)
    has_date = (removal != "").to_numpy()
    use = (foster == 1) & has_date
    unreadable = use & parsed.isna().to_numpy()
    out = pd.Series(np.where(use, np.where(unreadable, "RmvDate=" + removal, _iso(parsed)), ""), index=rec.index)
    rank = np.where(unreadable, 2, use.astype(np.int64))
    day = parsed.to_numpy().astype("datetime64[D]").astype(np.int64)  # NaT: the smallest int64
    counts = {"foster_care_without_removal_date": int((alive & (foster == 1) & ~has_date).sum()),
              "removal_date_without_foster_care": int((alive & (foster != 1) & has_date).sum())}
    return out, rank, np.where(use & ~unreadable, day, 0), counts


def _referrals(live: pd.DataFrame, report_day: pd.Series,
               spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One canonical referral row per kept record, and the closure / unknown-factor counts."""
    source, source_bad = _map_codes(live["report_source"], spec["report_source"])
    source = source.where(~source_bad, live["report_source"])

    disp_text = live["disposition_date"]
    disp = parse_dates(disp_text)
    blank = (disp_text == "").to_numpy()
    unreadable = ~blank & disp.isna().to_numpy()
    before = ~blank & ~unreadable & (disp < report_day).to_numpy()
    closure = np.where(blank | before, _iso(report_day), np.where(unreadable, disp_text, _iso(disp)))

    # PostServ unknown or blank: no outcome (never "no services"), so clean quarantines it.
    post = _yes_no(live["post_investigation_services"], spec["yes_no"])
    outcome = np.select([post == 1, post == 0, post == -1],
                        [spec["outcome"]["services"], spec["outcome"]["no_services"], ""],
                        live["post_investigation_services"].to_numpy(dtype=object)).astype(object)

    # Each category a bit; the categories of ChMal1-4 OR-ed: one bit -> it, two or more -> MULTIPLE.
    names = sorted({v for v in spec["maltreatment"].values() if v})
    bits = np.zeros(len(live), dtype=np.int64)
    abuse_bad = pd.Series("", index=live.index)
    first_name = {k: v["names"][0] for k, v in spec["columns"].items()}
    for i in range(1, 5):
        column = f"maltreatment_{i}"
        mapped, bad = _map_codes(live[column], spec["maltreatment"])
        bit = mapped.map({n: 1 << k for k, n in enumerate(names)}).fillna(0).to_numpy(dtype=np.int64)
        bits |= np.where(bad, 0, bit)
        abuse_bad = abuse_bad.where((abuse_bad != "") | ~bad, first_name[column] + "=" + live[column])
    single = {1 << k: n for k, n in enumerate(names)}
    abuse = np.where(bits == 0, "", np.where(bits & (bits - 1), "MULTIPLE",
                                             pd.Series(bits).map(single).fillna("").to_numpy()))
    abuse = np.where(abuse_bad != "", abuse_bad, abuse)

    # Caregiver factors: 1 if any field is yes; else unknown if any is unknown; else 0. Unknown
    # is blank (clean: missing_value) or, with risk_factor_unknown_as: 0, 0. A factor unknown in
    # every record is not recorded by this input: its column is left out.
    unknown_as = spec.get("risk_factor_unknown_as")
    factors, factor_counts, not_in_input = {}, {}, []
    for canonical, fields in spec["factors"].items():
        flags = np.stack([_yes_no(live[f], spec["yes_no"]) for f in fields])
        bad_text = pd.Series("", index=live.index)
        for f, flag in zip(fields, flags):
            bad_text = bad_text.where((bad_text != "") | (flag != -2), first_name[f] + "=" + live[f])
        any_yes = (flags == 1).any(axis=0)
        unknown = (flags == -1).any(axis=0) & ~any_yes & (bad_text == "").to_numpy()
        n_unknown = int(unknown.sum())
        if n_unknown == len(live):
            not_in_input.append(canonical)
            factor_counts[canonical] = {"unknown": n_unknown, "result": "not recorded (column left out)"}
            continue
        value = np.where(any_yes, "1", np.where(unknown, "0" if unknown_as == 0 else "", "0"))
        factors[canonical] = np.where(bad_text != "", bad_text, value)
        factor_counts[canonical] = {"unknown": n_unknown,
                                    "result": "0" if unknown_as == 0 else "blank (clean: missing_value)"}

    referrals = pd.DataFrame({
        "referral_id": live["_key"].to_numpy(),
        "child_id": live["_child"].to_numpy(),
        "referral_date": _iso(report_day).to_numpy(),
        "referral_source": source.to_numpy(),
        "closure_date": closure,
        "outcome": outcome,
        **factors,
        "abuse_category": abuse,
        "source_location": live["_where"].to_numpy(),
    })
    counts = {
        "risk_factors": {"unknown_as": unknown_as, "caregiver": factor_counts, "not_recorded_in_input": not_in_input},
        "outcome_unknown": int((post == -1).sum()),
        "closure": {"from_disposition_date": int((~blank & ~unreadable & ~before).sum()),
                    "disposition_before_report": int(before.sum()),
                    "no_disposition_date": int(blank.sum()),
                    "unreadable_disposition_date": int(unreadable.sum())},
    }
    return referrals, counts, not_in_input


#: Counts below this are written "fewer than 10" in the statements, unless ``read`` is given
#: ``min_count`` (clean passes disclosure.min_cell_count).
_MIN_COUNT = 10


def _count(n: int, min_count: int = _MIN_COUNT) -> str:
    return "none" if n == 0 else f"fewer than {min_count}" if n < min_count else f"{n:,}"


def _statements(m: dict[str, Any], min_count: int = _MIN_COUNT) -> list[str]:
    """Plain-English sentences stating the route's rules and what they did to this input (the
    report prints them under "Data and cleaning"): each under 200 characters, no identifiers,
    no count below 10."""
    refs = m["records"]["referrals"]
    closure = m["closure"]
    at_report = closure["no_disposition_date"] + closure["disposition_before_report"]
    rf = m["risk_factors"]
    zero = rf["unknown_as"] == 0
    out = [
        (f"The index episode ends at the disposition date (RpDispDt), or at the report date where that is "
         f"missing or before the report ({_count(at_report, min_count)} of {_count(refs['kept'], min_count)} referrals)."),
        "Slash dates are read month first (mm/dd/yyyy), as in the US record layout; input.dayfirst is ignored.",
        ("NCANDS gives the age in whole years at each report, not a birth date: each report bounds the birth "
         "to a year, and a child's reports are intersected."),
        ("The birth date is the middle day of that intersection, so the 18th birthday is known to within half "
         "the remaining interval (at most half a year)."),
        (f"Children whose reported ages admit no common birth date: "
         f"{_count(m['records']['children']['rejected_inconsistent_ages'], min_count)} (quarantined with their reports)."),
    ]
    if zero:
        out.append("Risk factors coded unknown or blank are read as 0, not recorded as present "
                   "(risk_factor_unknown_as: 0, an explicit choice).")
    else:
        out.append("Risk factors coded unknown or blank stay unknown, never counted as absent "
                   "(risk_factor_unknown_as: null): clean quarantines that referral or child.")
    effect = "set to 0" if zero else "left blank"
    for factor, c in rf["caregiver"].items():
        if factor in rf["not_recorded_in_input"]:
            out.append(f"Caregiver risk factor {factor.replace('_', ' ')} is unknown in every record: not "
                       "recorded by this input, so left out.")
        elif c["unknown"]:
            out.append(f"Caregiver risk factor {factor.replace('_', ' ')} unknown: {_count(c['unknown'], min_count)} "
                       f"referrals ({effect}).")
    dis = rf["disability"]
    out.append(f"Children with every child risk factor unknown in every report: {_count(dis['children_all_unknown'], min_count)} "
               f"(disability {effect}).")
    if dis["children_0_with_some_unknown"]:
        out.append(f"Children given disability 0 from the child risk factors recorded as no, although others "
                   f"were unknown: {_count(dis['children_0_with_some_unknown'], min_count)}.")
    out.append(f"Post-investigation services unknown or blank: {_count(m['outcome_unknown'], min_count)} referrals "
               "(no outcome, so clean quarantines them; never read as no services).")
    out.append("Screened-out referrals never appear in the Child File (it holds reports that received a CPS "
               "response and a disposition), so no outcome is NFA.")
    out.append("NCANDS has no child protection plans: there are none in this input.")
    return out


# ------------------------------------------------------------------------------------------
# Writing: a clean canonical extract as a Child File (rules: module docstring)
# ------------------------------------------------------------------------------------------

def fiscal_year(days: np.ndarray) -> np.ndarray:
    """US federal fiscal year of each day number: 2018-10-01 .. 2019-09-30 -> 2019."""
    d = np.asarray(days).astype("datetime64[D]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return year + (month >= 10)


def state_codes(la_codes) -> dict[str, str]:
    """Two-letter StaTerr per canonical la_code: kept when already two capital letters, else
    AA, AB, ... in la_code order, skipping codes taken."""
    las = sorted({str(la) for la in la_codes})
    out = {la: la for la in las if re.fullmatch(r"[A-Z]{2}", la)}
    free = (a + b for a in string.ascii_uppercase for b in string.ascii_uppercase if a + b not in out)
    for la in las:
        if la not in out:
            code = next(free, None)
            if code is None:
                raise ValueError("write: more LAs than two-letter state codes")
            out[la] = code
    return out


def _reverse(codes: dict[str, Any], prefer: dict[Any, Any] | None, what: str) -> dict[Any, str]:
    """Canonical value -> the code written: the first code (not blank) the map gives for it,
    or the one ``writer.prefer`` names (which must map back to the value)."""
    table = {str(k): v for k, v in codes.items()}
    out: dict[Any, str] = {}
    for code, value in table.items():
        if code != "" and value not in out:
            out[value] = code
    for value, code in (prefer or {}).items():
        if table.get(str(code), object()) != value:
            raise ValueError(f"ncands.yaml: writer.prefer.{what}: code {code!r} does not map to {value!r}")
        out[value] = str(code)
    return out


def _day_numbers(series: pd.Series) -> np.ndarray:
    """Day numbers of a date column; NaT -> -1."""
    v = pd.to_datetime(series).to_numpy(dtype="datetime64[D]")
    return np.where(np.isnat(v), -1, v.astype(np.int64))


def _iso_days(days: np.ndarray) -> np.ndarray:
    """ISO text of day numbers; -1 -> blank."""
    text = np.datetime_as_string(np.maximum(days, 0).astype("datetime64[D]"), unit="D")
    return np.where(days >= 0, text, "").astype(object)


def _lookup(values: pd.Series | np.ndarray, table: dict[Any, str], what: str) -> np.ndarray:
    """Codes of canonical values (missing -> the None entry); a value the table lacks is a
    programming error: write() takes a clean extract."""
    values = pd.Series(np.asarray(values, dtype=object)).where(lambda s: s.notna(), None)
    codes_, uniques = pd.factorize(values, use_na_sentinel=True)
    missing = [u for u in uniques if u not in table]
    if missing or ((codes_ < 0).any() and None not in table):
        raise ValueError(f"write: {what}: no NCANDS code for {missing or [None]}")
    mapped = np.array([table[u] for u in uniques] + [table.get(None, "")], dtype=object)
    return mapped[codes_]


def write(children: pd.DataFrame, referrals: pd.DataFrame, plans: pd.DataFrame, out_dir: Path, *,
          extract_date: pd.Timestamp, state_map: dict[str, str] | None = None,
          progress: bool = False) -> dict[str, str]:
    """Write a clean, typed canonical extract as an NCANDS Child File, one delimited file per
    federal fiscal year (rules: module docstring). ``plans`` is accepted for the writers'
    common signature and not written. Returns the state code used for each la_code."""
    del plans  # NCANDS has no child protection plans
    spec = load_field_map()
    w = spec["writer"]
    prefer = w.get("prefer") or {}
    name = {k: v["names"][0] for k, v in spec["columns"].items()}
    yes, no = spec["yes_no"]["yes_codes"][0], spec["yes_no"]["no_codes"][0]
    unknown = spec["yes_no"]["unknown_codes"][0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extract_day = int(pd.Timestamp(extract_date).value // _DAY_NS)
    state_map = state_map or state_codes(children["la_code"])

    kids = children.reset_index(drop=True)
    child_index = pd.Index(kids["child_id"])
    r_all = referrals.reset_index(drop=True)
    r_close_all = _day_numbers(r_all["closure_date"])
    r = r_all.loc[(r_close_all >= 0) & (r_close_all <= extract_day)].reset_index(drop=True)
    k = child_index.get_indexer(r["child_id"])
    if (k < 0).any():
        raise ValueError("write: a referral's child_id is not in the children table")
    r_day, r_close = _day_numbers(r["referral_date"]), _day_numbers(r["closure_date"])
    year = fiscal_year(r_close)

    # Age in whole calendar years at the report, as read() counts them: the largest a with
    # report - a years >= birth (a is the year difference or one less).
    dob = _day_numbers(kids["date_of_birth"])[k]
    if (dob < 0).any():
        raise ValueError("write: a child with a referral has no date_of_birth (write takes a clean extract)")
    report = pd.Series(r_day.astype("datetime64[D]"))
    a0 = report.dt.year.to_numpy() - pd.Series(dob.astype("datetime64[D]")).dt.year.to_numpy()
    age = a0 - (_years_before(report, a0) < dob)

    # Race flags per canonical group.
    race_flag = spec["race_flag"]
    race_yes, race_no = race_flag["yes_codes"][0], race_flag["no_codes"][0]
    groups = spec["race_groups"]
    first_race = {}
    for logical, group in groups.items():
        first_race.setdefault(group, logical)
    mixed = list(w["mixed_races"])
    if len(set(mixed)) < 2 or not set(mixed) <= set(groups):
        raise ValueError("ncands.yaml: writer.mixed_races: two or more race fields of race_groups")
    races_of = {group: [logical] for group, logical in first_race.items()}
    races_of.update({"MIXED": mixed, "UNKNOWN": []})
    eth = kids["ethnicity"].to_numpy(dtype=object)[k]
    race_cols = {logical: _lookup(eth, {g: race_yes if logical in rs else race_no for g, rs in races_of.items()},
                                  "ethnicity") for logical in groups}
    race_cols["race_unable_to_determine"] = _lookup(eth, {g: race_no if rs else race_yes
                                                          for g, rs in races_of.items()}, "ethnicity")

    # Maltreatment types: one category -> ChMal1; MULTIPLE -> two distinct categories.
    malt = _reverse(spec["maltreatment"], prefer.get("maltreatment"), "maltreatment")
    pair = list(w["multiple_categories"])
    if len(set(pair)) != 2 or not set(pair) <= set(malt):
        raise ValueError("ncands.yaml: writer.multiple_categories: two categories of the maltreatment map")
    abuse = r["abuse_category"].to_numpy(dtype=object)
    is_multiple = abuse == "MULTIPLE"
    mal1 = _lookup(np.where(is_multiple, pair[0], abuse), malt, "abuse_category")
    mal2 = np.where(is_multiple, malt[pair[1]], "").astype(object)

    # Yes/no fields from 0/1 (missing -> unknown): the first field of a group carries a 1.
    def flag_fields(values: np.ndarray | None, fields: list[str]) -> dict[str, np.ndarray]:
        if values is None:
            return {f: np.full(len(r), unknown, dtype=object) for f in fields}
        v = pd.Series(values).to_numpy(dtype=float)
        first = np.where(np.isnan(v), unknown, np.where(v == 1, yes, no)).astype(object)
        rest = np.where(np.isnan(v), unknown, no).astype(object)
        return {f: (first if i == 0 else rest) for i, f in enumerate(fields)}

    factor_cols: dict[str, np.ndarray] = {}
    for factor, fields in spec["factors"].items():
        factor_cols.update(flag_fields(r[factor].to_numpy() if factor in r else None, fields))
    disability_cols = flag_fields(kids["disability"].to_numpy()[k], list(spec["disability"]))

    # Entering care: on the child's latest written report.
    order = np.lexsort((np.arange(len(r)), r_day, k))
    latest = np.zeros(len(r), dtype=bool)
    latest[order[np.append(k[order][1:] != k[order][:-1], True)]] = True
    care = _day_numbers(kids["looked_after_date"])[k] if "looked_after_date" in kids else np.full(len(r), -1)
    foster = latest & (care >= 0)

    services = ~r["outcome"].isin(NO_SERVICE_OUTCOMES).to_numpy()
    state = kids["la_code"].astype(str).map(state_map).to_numpy(dtype=object)[k]
    columns: dict[str, np.ndarray] = {
        "submission_year": year.astype(str).astype(object),
        "state": state,
        "report_id": r["referral_id"].astype(str).to_numpy(dtype=object),
        "child_id": kids["child_id"].astype(str).to_numpy(dtype=object)[k],
        "report_date": _iso_days(r_day),
        "report_source": _lookup(r["referral_source"], _reverse(spec["report_source"], prefer.get("report_source"),
                                                                "report_source"), "referral_source"),
        "disposition_date": _iso_days(r_close),
        "child_age": age.astype(str).astype(object),
        "child_sex": _lookup(kids["sex"].to_numpy(dtype=object)[k], _reverse(spec["sex"], prefer.get("sex"), "sex"),
                             "sex"),
        **race_cols,
        "hispanic": np.full(len(r), spec["hispanic_flag"]["no_codes"][0], dtype=object),
        "maltreatment_1": mal1, "maltreatment_2": mal2,
        "maltreatment_3": np.full(len(r), "", dtype=object), "maltreatment_4": np.full(len(r), "", dtype=object),
        **disability_cols,
        **factor_cols,
        "post_investigation_services": np.where(services, yes, no).astype(object),
        "foster_care_services": np.where(foster, yes, no).astype(object),
        "removal_date": _iso_days(np.where(foster, care, -1)),
    }
    order_cols = [c for c in spec["columns"] if c in columns]   # the map's order; FCPublic not written
    rows = np.lexsort((r_day, state.astype(str), year))
    bounds = np.flatnonzero(np.r_[True, year[rows][1:] != year[rows][:-1], True])
    t0 = time.perf_counter()
    for a, b in itertools.pairwise(bounds):
        part = rows[a:b]
        table = pa.table({name[c]: pa.array(columns[c][part], type=pa.string()) for c in order_cols})
        path = out_dir / w["file_name"].format(year=int(year[part[0]]))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            # Unquoted, as NDACAN's delimited files (Arrow refuses a value that would need quotes).
            fh.write((",".join(table.column_names) + "\n").encode("utf-8"))
            pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        if progress:
            print(f"ncands: wrote {path.name} ({len(part):,} records, {time.perf_counter() - t0:.1f}s)",
                  file=sys.stderr)
    return state_map
