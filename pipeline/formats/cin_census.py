"""England Children in Need (CIN) census returns -> the canonical tables, and back.

``read(input_dir)`` reads every annual CIN census XML return (``*.xml``, DfE schema; one per
LA per census year) and every liiatools flat CSV (``*.csv``) in a folder and merges them into
the canonical children / referrals / plans tables (``pipeline.formats`` contract), following
the project's CIN mapping rules; element names and code lists are in ``cin_census.yaml``.

* **Keys.** ``child_id = <LEA>/<LAchildID>``, ``referral_id = <child_id>/<CINreferralDate>``
  (one CINdetails), ``plan_id = <child_id>/<CPPstartDate>``; ``la_code`` = the return's LEA
  (flat CSV: its LA column). No ``family_id`` (each child is its own cluster). Key dates are
  parsed to ISO before keying (XML: xs:date; flat CSV: also d/m/yyyy as liiatools writes it,
  m/d/yyyy when not ``dayfirst``), so ``2022-06-01`` and ``01/06/2022`` key one referral; the
  flat CSV's other dates are written out as ISO too when readable.
* **XML and flat CSV in one folder.** liiatools fills the flat CSV's LA column with the LA's
  *name* (Barnet) where XML has the 3-digit LEA code (201): the same child would become two
  (``201/A1``, ``Barnet/A1``). A folder holding both stops with one line naming the files,
  unless every flat-CSV LA value is already a 3-digit LEA code.
* **Merge across returns.** A return lists every episode open in its census year, so one
  record recurs in consecutive returns and a later return need not repeat earlier activity.
  Records are ordered by return (ReferenceDate, then file name, then position); per field the
  value of the latest return that has one wins; assessment factor codes, CIN plans and child
  protection plans are united over returns. Two different non-empty values are a
  *conflict*: the later wins and it is counted. Per record kind,
  ``records_in = kept + rejected + merged`` (merged: a repeat of a record kept or rejected).
* **Fields.** sex from GenderCurrent (1 M, 2 F, 0/9 U) or Sex (M/F/U, 2024-25 on);
  ethnicity the DfE code (``pipeline.schema`` maps it to a group); disability 1 if any
  Disability code but NONE, 0 if only NONE, missing without one; referral_source by the
  ReferralSource map; outcome NFA if ReferralNFA is true, else CPP with a plan, else CIN
  with CINPlanDates, else ASSESSED; abuse_category the InitialCategoryOfAbuse of the
  referral's earliest plan; factor flags from AssessmentFactors codes (``factors`` in the
  YAML). financial_problems, low_social_support and parent_maltreated_as_child are not
  recorded (columns absent); plans carry no end_reason.
* **Rejects** (adapter level, with the element path): a Child without LAchildID
  (``missing_id``; its CINdetails and plans ``child_rejected``), a CINdetails without
  CINreferralDate or a plan without CPPstartDate (``missing_value``), one whose key date
  cannot be read (``unparseable_date``; a plan keeps its place, unlinked to a referral
  whose date cannot be read), a referral with an
  AssessmentFactors code no schema lists (``unknown_code``: its flags cannot be known).
  Any other code the map does not know is passed on verbatim for ``clean`` to quarantine.
* **Whole-file faults** stop with one line (``InputError``): no folder or no returns,
  malformed XML (file and line), a root element other than Message, a return without LEA,
  a flat CSV without its key columns.

* **Metrics** (``Adapted.metrics``): records per kind and per file (reconciled, as above);
  ``number_of_previous_cpp`` (0, 1, 2, 3_or_more, missing) and ``assessment_factor_codes``
  (per AssessmentFactors code); ``codes_not_in_map``: PrimaryNeedCode and ReasonForClosure
  values (recorded only, not canonical fields) outside the YAML code lists, per value over
  the referrals kept (the referral is not rejected); ``statements``: the route's rules in
  plain sentences for the report. ``read(..., min_count=k)`` withholds (None) every count
  below k in those three code distributions (FGM 22A, trafficking 12A... are sensitive) and
  says so (``withheld``); as the previous-plan cells add up to the plans kept, one withheld
  cell alone is recoverable, so the smallest other is withheld with it. Record tallies are
  reconciliation counts, not withheld.

Memory: values are interned once (one table of distinct strings) and records are kept as
int32 columns, so a million children's returns read in a few hundred MB.

``write(children, referrals, plans, out_dir, extract_date=...)`` does the reverse for a clean,
typed canonical extract: one return per LA per census year (1 April - 31 March, up to the
extract date) holding every child with a referral open in that year, valid against the
vendored DfE schema of that year; finished activity is not repeated (a closure, a plan's end,
the assessment and its factors appear only in the return of the year they happened).
"""

from __future__ import annotations

import array
import datetime
import itertools
import re
import sys
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
from lxml import etree

from pipeline.cli import InputError
from pipeline.formats import FORMATS_DIR, Adapted, field_map
from pipeline.io import atomic_path, read_table
from pipeline.schema import REJECT_COLUMNS

SOURCE = "cin_census"
KINDS = ("children", "referrals", "plans")
#: Internal record-column names as the canonical fields they become (for the metrics).
CANONICAL_NAMES = {"lea": "la_code", "dob": "date_of_birth", "sex": "sex", "eth": "ethnicity", "dis": "disability",
                   "need": "PrimaryNeedCode", "reason": "ReasonForClosure"}
#: Below this many, a count of conflicts is stated as "fewer than 10" in the statements.
STATED_CONFLICTS_MIN = 10
_KEY_SHIFT = np.int64(1) << np.int64(32)
_ZERO_ONE = np.array(["0", "1"], dtype=object)
_OUTCOMES = np.array(["NFA", "CPP", "CIN", "ASSESSED"], dtype=object)

# Record columns, per kind (int32: interned value codes, -1 = empty; or small integers).
_COLUMNS = {
    "children": ("file", "pos", "order", "key", "lea", "dob", "sex", "eth", "dis"),
    "referrals": ("file", "pos", "sub", "order", "key", "refdate", "source", "closure", "nfa",
                  "cinplan", "cpp", "mask", "unknown_factor", "need", "reason"),
    "plans": ("file", "pos", "sub", "subsub", "order", "key", "refdate", "start", "end",
              "category", "nprev"),
}


class _Values:
    """Interned distinct strings: each value stored once, records hold its int code."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.strings: list[str] = []

    def code(self, value: str | None) -> int:
        if not value:
            return -1
        c = self.codes.get(value)
        if c is None:
            c = self.codes[value] = len(self.strings)
            self.strings.append(value)
        return c

    def array(self) -> np.ndarray:
        """Code -> string lookup; index -1 gives None (empty)."""
        return np.array([*self.strings, None], dtype=object)


class _Records:
    """Column chunks per record kind, plus per-file counts and adapter rejects."""

    def __init__(self) -> None:
        self.chunks: dict[str, dict[str, list[np.ndarray]]] = {k: {c: [] for c in _COLUMNS[k]} for k in KINDS}
        self.rejects: list[tuple[str, int, str, str, str, str]] = []  # kind, file, location, field, value, reason
        self.files: list[dict[str, Any]] = []

    def add(self, kind: str, columns: dict[str, Any]) -> None:
        for c in _COLUMNS[kind]:
            self.chunks[kind][c].append(np.asarray(columns[c], dtype=np.int32))

    def column(self, kind: str, name: str) -> np.ndarray:
        parts = self.chunks[kind][name]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def take(self, kind: str, name: str) -> np.ndarray:
        """The column, releasing its chunks (read once, at merge time)."""
        out = self.column(kind, name)
        self.chunks[kind][name] = []
        return out


def _text(el) -> str:
    t = el.text
    return t.strip() if t else ""


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _date_ordinal(text: str) -> int:
    """Days since 1970-01-01 of an ISO date, or -1."""
    try:
        return int(pd.Timestamp(text[:10]).value // 86_400_000_000_000)
    except (ValueError, TypeError):
        return -1


#: xs:date (the XML returns): yyyy-mm-dd with an optional time zone.
_XS_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:Z|[+-]\d{2}:\d{2})?$")
#: Flat CSV: ISO, optionally with a time of day; or d/m/yyyy (liiatools writes dd/mm/yyyy).
_FLAT_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")
_FLAT_SLASH = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def _iso_date(text: str, *, flat: bool, dayfirst: bool = True) -> str | None:
    """A date's ISO text (yyyy-mm-dd), or None if it is not a readable calendar date.

    XML: xs:date only. Flat CSV: also ISO with a time, and d/m/yyyy (m/d/yyyy when not
    ``dayfirst``). Key dates are parsed before keying, so that one referral written
    ``2022-06-01`` in one file and ``01/06/2022`` in another is one referral.
    """
    m = (_FLAT_ISO if flat else _XS_DATE).match(text)
    if m:
        y, mo, d = m.groups()
    else:
        m = _FLAT_SLASH.match(text) if flat else None
        if not m:
            return None
        a, b, y = m.groups()
        d, mo = (a, b) if dayfirst else (b, a)
    try:
        return datetime.date(int(y), int(mo), int(d)).isoformat()
    except ValueError:
        return None


def _year_ordinal(text: str) -> int:
    """31 March of a (census) year given as 2023 / 2023-24 / 2023.0, in days; or -1."""
    m = re.match(r"^\s*(\d{4})(?:\.0+)?\s*$", str(text))
    return _date_ordinal(f"{m.group(1)}-03-31") if m else -1


class _Maps:
    """The YAML field map turned into lookups for the hot loop."""

    def __init__(self, fm: dict[str, Any]) -> None:
        codes = fm["codes"]
        self.fm = fm
        self.sex = {str(k): str(v) for k, v in codes["sex"].items()}
        self.source = {str(k): str(v) for k, v in codes["referral_source"].items()}
        self.category = {str(k): str(v) for k, v in codes["category"].items()}
        self.disability_none = str(codes["disability_none"])
        self.disability_codes = {str(c) for c in codes["disability_codes"]}
        self.nfa_true = {str(v) for v in codes["referral_nfa_true"]}
        self.nfa_false = {str(v) for v in codes["referral_nfa_false"]}
        self.primary_need = {str(c) for c in codes["primary_need"]}
        self.reason_for_closure = {str(c) for c in codes["reason_for_closure"]}
        self.flags = list(fm["factors"])
        # AssessmentFactors code -> bit mask of canonical flags (0: recorded, maps to no flag).
        self.factor_bits = {str(c): 0 for c in codes["assessment_factors"]}
        for bit, flag in enumerate(self.flags):
            for c in fm["factors"][flag]:
                self.factor_bits[str(c)] |= 1 << bit


# --------------------------------------------------------------------------------------
# XML returns
# --------------------------------------------------------------------------------------

def _xml_error(name: str, err: etree.XMLSyntaxError) -> InputError:
    line = err.lineno if err.lineno else (err.position[0] if getattr(err, "position", None) else 0)
    return InputError(f"{name}: line {line}: not well-formed XML ({_one_line(err.msg)})")


def _check_root(path: Path, root_tag: str) -> None:
    try:
        for _, root in etree.iterparse(str(path), events=("start",), resolve_entities=False, no_network=True):
            tag = root.tag if isinstance(root.tag, str) else str(root.tag)
            if tag != root_tag:
                raise InputError(f"{path.name}: line {root.sourceline}: /{tag}: not a CIN census return "
                                 f"(root element is {tag}, expected {root_tag})")
            return
    except etree.XMLSyntaxError as err:
        raise _xml_error(path.name, err) from None


def _read_xml(path: Path, file_no: int, recs: _Records, values: _Values, maps: _Maps,
              factor_counts: dict[str, int]) -> None:
    x = maps.fm["xml"]
    name = path.name
    _check_root(path, x["root"])
    child_tag, lea_tag, ref_tag, year_tag = x["child"], x["lea"][-1], x["reference_date"][-1], x["year"][-1]
    ids_tag, chars_tag, cin_tag = x["child_identifiers"], x["child_characteristics"], x["cin_details"]
    id_tag, dob_tag, sex_tags = x["la_child_id"], x["date_of_birth"], set(x["sex"])
    eth_tag, dis_tag, disone_tag = x["ethnicity"], x["disabilities"], x["disability"]
    refdate_tag, source_tag, closure_tag, nfa_tag = (x["referral_date"], x["referral_source"],
                                                     x["closure_date"], x["referral_nfa"])
    need_tag, reason_tag = x["primary_need"], x["reason_for_closure"]
    assess_tag, fia_tag, af_tag, cinplan_tag, plan_tag = (x["assessments"], x["factors_identified"],
                                                          x["assessment_factor"], x["cin_plan"], x["plan"])
    pstart_tag, pend_tag, pcat_tag, pprev_tag = x["plan_start"], x["plan_end"], x["plan_category"], x["previous_plans"]
    code = values.code
    sex_map, source_map, cat_map = maps.sex, maps.source, maps.category
    factor_bits, dis_codes, dis_none = maps.factor_bits, maps.disability_codes, maps.disability_none
    one, zero = code("1"), code("0")
    date_codes: dict[str, int] = {}

    def key_date(raw: str) -> int:
        """Code of a key date's ISO text; -1 empty, -2 unreadable."""
        if not raw:
            return -1
        c = date_codes.get(raw)
        if c is None:
            iso = _iso_date(raw, flat=False)
            c = date_codes[raw] = code(iso) if iso else -2
        return c

    C, R, P = ({c: array.array("i") for c in _COLUMNS[k] if c != "order"} for k in KINDS)
    counts = {k: {"in": 0, "rejected": 0} for k in KINDS}
    info = {"file": name, "format": "xml", "la": None, "reference_date": None, "year": None}
    lea = lea_code = None
    n_child = 0
    context = etree.iterparse(str(path), events=("end",), tag=(child_tag, lea_tag, ref_tag, year_tag),
                              resolve_entities=False, no_network=True)
    try:
        for _, el in context:
            tag = el.tag
            if tag != child_tag:
                if tag == lea_tag:
                    lea = _text(el)
                    lea_code = code(lea)
                    info["la"] = lea
                elif tag == ref_tag:
                    info["reference_date"] = _text(el)
                else:
                    info["year"] = _text(el)
                continue
            n_child += 1
            if not lea:
                raise InputError(f"{name}: line {el.sourceline}: /{x['root']}/{'/'.join(x['lea'])}: missing: "
                                 "the return's LA code keys every child id")
            cid = ""
            dob = sex = eth = dis = -1
            dis_list = None
            cins = []
            for part in el:
                ptag = part.tag
                if ptag == ids_tag:
                    for f in part:
                        t = f.tag
                        if t == id_tag:
                            cid = _text(f)
                        elif t == dob_tag:
                            dob = code(_text(f))
                        elif t in sex_tags:
                            v = _text(f)
                            sex = code(sex_map.get(v, v))
                elif ptag == chars_tag:
                    for f in part:
                        t = f.tag
                        if t == eth_tag:
                            eth = code(_text(f))
                        elif t == dis_tag:
                            dis_list = [_text(d) for d in f if d.tag == disone_tag]
                elif ptag == cin_tag:
                    cins.append(part)
            if dis_list:
                unknown = [d for d in dis_list if d not in dis_codes]
                dis = code(unknown[0]) if unknown else (one if any(d != dis_none for d in dis_list) else zero)
            counts["children"]["in"] += 1
            child_path = f"/{x['root']}/Children/{child_tag}[{n_child}]"
            if not cid:
                counts["children"]["rejected"] += 1
                recs.rejects.append(("children", file_no, f"{name}:{child_path}", id_tag, "", "missing_id"))
            else:
                key = code(f"{lea}/{cid}")
                for col, v in (("file", file_no), ("pos", n_child), ("key", key), ("lea", lea_code), ("dob", dob),
                               ("sex", sex), ("eth", eth), ("dis", dis)):
                    C[col].append(v)
            for r_no, cin in enumerate(cins, 1):
                refdate = source = closure = nfa = need = reason = -1
                refdate_raw = ""
                cinplan = 0
                mask = 0
                unknown_factor = -1
                plans = []
                for f in cin:
                    t = f.tag
                    if t == refdate_tag:
                        refdate_raw = _text(f)
                        refdate = key_date(refdate_raw)
                    elif t == source_tag:
                        v = _text(f)
                        source = code(source_map.get(v, v))
                    elif t == closure_tag:
                        closure = code(_text(f))
                    elif t == nfa_tag:
                        nfa = code(_text(f))
                    elif t == need_tag:
                        need = code(_text(f))
                    elif t == reason_tag:
                        reason = code(_text(f))
                    elif t == assess_tag:
                        for a in f:
                            if a.tag == fia_tag:
                                for af in a:
                                    if af.tag == af_tag:
                                        v = _text(af)
                                        if not v:
                                            continue
                                        factor_counts[v] = factor_counts.get(v, 0) + 1
                                        b = factor_bits.get(v)
                                        if b is None:
                                            if unknown_factor < 0:
                                                unknown_factor = code(v)
                                        else:
                                            mask |= b
                    elif t == cinplan_tag:
                        cinplan = 1
                    elif t == plan_tag:
                        plans.append(f)
                counts["referrals"]["in"] += 1
                plan_refdate = max(refdate, -1)   # an unreadable referral date links no plan
                cin_path = f"{child_path}/{cin_tag}[{r_no}]"
                if not _unkeyed(recs, counts, "referrals", file_no, f"{name}:{cin_path}", cid, id_tag,
                                refdate, refdate_tag, refdate_raw):
                    for col, v in (("file", file_no), ("pos", n_child), ("sub", r_no), ("key", key),
                                   ("refdate", refdate), ("source", source), ("closure", closure), ("nfa", nfa),
                                   ("cinplan", cinplan), ("cpp", 1 if plans else 0), ("mask", mask),
                                   ("unknown_factor", unknown_factor), ("need", need), ("reason", reason)):
                        R[col].append(v)
                for p_no, plan in enumerate(plans, 1):
                    start = end = cat = -1
                    start_raw = ""
                    nprev = -1
                    for f in plan:
                        t = f.tag
                        if t == pstart_tag:
                            start_raw = _text(f)
                            start = key_date(start_raw)
                        elif t == pend_tag:
                            end = code(_text(f))
                        elif t == pcat_tag:
                            v = _text(f)
                            cat = code(cat_map.get(v, v))
                        elif t == pprev_tag:
                            v = _text(f)
                            nprev = int(v) if v.isdigit() else -1
                    counts["plans"]["in"] += 1
                    plan_path = f"{cin_path}/{plan_tag}[{p_no}]"
                    if not _unkeyed(recs, counts, "plans", file_no, f"{name}:{plan_path}", cid, id_tag,
                                    start, pstart_tag, start_raw):
                        for col, v in (("file", file_no), ("pos", n_child), ("sub", r_no), ("subsub", p_no),
                                       ("key", key), ("refdate", plan_refdate), ("start", start), ("end", end),
                                       ("category", cat), ("nprev", nprev)):
                            P[col].append(v)
            # Streaming: drop the finished Child and the siblings before it.
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
    except etree.XMLSyntaxError as err:
        raise _xml_error(name, err) from None
    del context
    if n_child == 0:
        raise InputError(f"{name}: /{x['root']}/Children: no {child_tag} element: an empty or truncated return")
    order = _date_ordinal(info["reference_date"]) if info["reference_date"] else -1
    if order < 0 and info["year"]:
        order = _year_ordinal(info["year"])
    for kind, cols in (("children", C), ("referrals", R), ("plans", P)):
        arrays = {c: np.asarray(cols[c], dtype=np.int32) for c in _COLUMNS[kind] if c != "order"}
        arrays["order"] = np.full(len(arrays["file"]), order, dtype=np.int32)
        recs.add(kind, arrays)
    info["counts"] = counts
    recs.files.append(info)


def _unkeyed(recs: "_Records", counts: dict, kind: str, file_no: int, location: str, child_id: str,
             id_tag: str, date_code: int, date_tag: str, date_raw: str) -> bool:
    """Reject (and count) a referral or plan that cannot be keyed: its child has no LAchildID
    (``child_rejected``), or its key date (an interned code, ``key_date``) is missing (-1) or
    unreadable (-2)."""
    if child_id and date_code >= 0:
        return False
    why = (("child_rejected", id_tag, "") if not child_id else ("missing_value", date_tag, "") if date_code == -1
           else ("unparseable_date", date_tag, date_raw))
    counts[kind]["rejected"] += 1
    recs.rejects.append((kind, file_no, location, why[1], why[2], why[0]))
    return True


# --------------------------------------------------------------------------------------
# liiatools flat CSV
# --------------------------------------------------------------------------------------

def _read_flat_csv(path: Path, file_no: int, recs: _Records, values: _Values, maps: _Maps,
                   factor_counts: dict[str, int], dayfirst: bool, encoding: str = "utf-8") -> None:
    f = maps.fm["flat_csv"]
    name = path.name
    # The project's one reader: every record counted and checked, values kept as text.
    raw = read_table(path, encoding=encoding).fillna("")
    raw.columns = [str(c).strip() for c in raw.columns]
    for col in (f["la_child_id"], f["la"], f["referral_date"]):
        if col not in raw.columns:
            raise InputError(f"{name}: header (line 1): missing column '{col}' (liiatools CIN flat file expected)")
    n = len(raw)
    if n == 0:
        raise InputError(f"{name}: no rows: an empty flat CIN file")

    def col(name_or_names) -> pd.Series:
        for c in ([name_or_names] if isinstance(name_or_names, str) else name_or_names):
            if c in raw.columns:
                return raw[c].str.strip()
        return pd.Series([""] * n, index=raw.index, dtype=object)

    def coded(series: pd.Series, mapping: dict[str, str] | None = None) -> np.ndarray:
        codes, uniques = pd.factorize(series)
        lut = np.array([values.code(mapping.get(u, u) if mapping else u) for u in uniques] + [-1], dtype=np.int32)
        return lut[codes]

    def dated(series: pd.Series, key: bool) -> np.ndarray:
        """Codes of dates as ISO text. Key dates: -1 empty, -2 unreadable (the record is
        rejected); other dates: unreadable text passed on verbatim for clean to quarantine."""
        codes, uniques = pd.factorize(series)
        lut = []
        for u in uniques:
            iso = _iso_date(u, flat=True, dayfirst=dayfirst) if u else None
            lut.append(values.code(iso) if iso else -2 if key and u else values.code(u))
        return np.array(lut + [-1], dtype=np.int32)[codes]

    lea = col(f["la"])
    cid = col(f["la_child_id"])
    key = coded(lea + "/" + cid)
    key[(cid == "").to_numpy() | (lea == "").to_numpy()] = -1
    year = col([f["year"], *f.get("year_aliases", [])])
    yu, yc = np.unique(year.to_numpy(dtype=str), return_inverse=True)
    order = np.array([_year_ordinal(y) for y in yu], dtype=np.int32)[yc]
    rows = np.arange(1, n + 1, dtype=np.int32)
    zeros = np.zeros(n, dtype=np.int32)

    dis_text = col(f["disabilities"])
    dis_c, dis_u = pd.factorize(dis_text)
    dis_lut = []
    for u in dis_u:
        parts = [p.strip() for p in u.split(",") if p.strip()]
        unknown = [p for p in parts if p not in maps.disability_codes]
        dis_lut.append(-1 if not parts else values.code(unknown[0] if unknown else
                                                         ("1" if any(p != maps.disability_none for p in parts) else "0")))
    dis = np.array(dis_lut + [-1], dtype=np.int32)[dis_c]

    fac_c, fac_u = pd.factorize(col(f["factors"]))
    mask_lut, unk_lut = [], []
    for u in fac_u:
        m, unk = 0, -1
        for p in (p.strip() for p in u.split(",")):
            if not p:
                continue
            b = maps.factor_bits.get(p)
            if b is None:
                unk = values.code(p) if unk < 0 else unk
            else:
                m |= b
        mask_lut.append(m)
        unk_lut.append(unk)
    for u, c in zip(fac_u, np.bincount(fac_c[fac_c >= 0], minlength=len(fac_u))):
        for p in (p.strip() for p in u.split(",")):
            if p:
                factor_counts[p] = factor_counts.get(p, 0) + int(c)
    mask = np.array(mask_lut + [0], dtype=np.int32)[fac_c]
    unknown_factor = np.array(unk_lut + [-1], dtype=np.int32)[fac_c]

    refdate_text, start_text = col(f["referral_date"]), col(f["plan_start"])
    refdate, start = dated(refdate_text, True), dated(start_text, True)
    nprev_text = col(f["previous_plans"])
    nprev = pd.to_numeric(nprev_text.where(nprev_text.str.fullmatch(r"\d+")), errors="coerce").fillna(-1).to_numpy(np.int32)
    has_id = key >= 0
    is_plan = start != -1
    counts = {"children": {"in": n, "rejected": int((~has_id).sum())},
              "referrals": {"in": n, "rejected": int((~has_id | (refdate < 0)).sum())},
              "plans": {"in": int(is_plan.sum()), "rejected": int((is_plan & (~has_id | (start < 0))).sum())}}
    for i in np.flatnonzero(~has_id):
        where = f"{name}: row {i + 1}"
        field = f["la_child_id"] if cid.iloc[i] == "" else f["la"]
        recs.rejects.append(("children", file_no, where, field, "", "missing_id"))
        recs.rejects.append(("referrals", file_no, where, field, "", "child_rejected"))
        if is_plan[i]:
            recs.rejects.append(("plans", file_no, where, field, "", "child_rejected"))
    for i in np.flatnonzero(has_id & (refdate < 0)):
        bad = refdate[i] == -2
        recs.rejects.append(("referrals", file_no, f"{name}: row {i + 1}", f["referral_date"],
                             refdate_text.iloc[i] if bad else "", "unparseable_date" if bad else "missing_value"))
    for i in np.flatnonzero(has_id & (start == -2)):
        recs.rejects.append(("plans", file_no, f"{name}: row {i + 1}", f["plan_start"], start_text.iloc[i],
                             "unparseable_date"))

    c = has_id
    recs.add("children", {"file": np.full(c.sum(), file_no), "pos": rows[c], "order": order[c], "key": key[c],
                          "lea": coded(lea)[c], "dob": dated(col(f["date_of_birth"]), False)[c],
                          "sex": coded(col(f["sex"]), maps.sex)[c], "eth": coded(col(f["ethnicity"]))[c],
                          "dis": dis[c]})
    r = has_id & (refdate >= 0)
    nfa = coded(col(f["referral_nfa"]))
    recs.add("referrals", {"file": np.full(r.sum(), file_no), "pos": rows[r], "sub": zeros[r], "order": order[r],
                           "key": key[r], "refdate": refdate[r],
                           "source": coded(col(f["referral_source"]), maps.source)[r],
                           "closure": dated(col(f["closure_date"]), False)[r], "nfa": nfa[r],
                           "cinplan": (col(f["cin_plan_start"]) != "").to_numpy(np.int32)[r],
                           "cpp": is_plan.astype(np.int32)[r], "mask": mask[r], "unknown_factor": unknown_factor[r],
                           "need": coded(col(f["primary_need"]))[r], "reason": coded(col(f["reason_for_closure"]))[r]})
    p = has_id & (start >= 0)
    recs.add("plans", {"file": np.full(p.sum(), file_no), "pos": rows[p], "sub": zeros[p], "subsub": zeros[p],
                       "order": order[p], "key": key[p], "refdate": np.maximum(refdate, -1)[p], "start": start[p],
                       "end": dated(col(f["plan_end"]), False)[p], "category": coded(col(f["plan_category"]), maps.category)[p],
                       "nprev": nprev[p]})
    la_values = sorted(set(lea[lea != ""]))
    recs.files.append({"file": name, "format": "flat_csv", "la": la_values[0] if len(la_values) == 1 else la_values,
                       "reference_date": None, "year": sorted(set(year[year != ""])) or None, "counts": counts})


# --------------------------------------------------------------------------------------
# Merge across returns
# --------------------------------------------------------------------------------------

class _Merged:
    """Records of one kind grouped by key in return order: the merged value of each field."""

    def __init__(self, recs: _Records, kind: str, keys: np.ndarray) -> None:
        self.recs, self.kind = recs, kind
        n = len(keys)
        # Group by key; within a key by return (date, then file order), then position.
        self.sort = np.lexsort((np.arange(n), recs.column(kind, "file"), recs.column(kind, "order"), keys))
        k = keys[self.sort]
        first = np.r_[True, k[1:] != k[:-1]] if n else np.zeros(0, dtype=bool)
        self.starts = np.flatnonzero(first)
        self.group = np.cumsum(first) - 1
        self.last = np.r_[self.starts[1:], n] - 1 if n else np.zeros(0, dtype=np.int64)
        self.cols = {c: recs.take(kind, c)[self.sort] for c in _COLUMNS[kind]}
        self.n_groups = len(self.starts)
        self.conflicts: dict[str, int] = {}
        self.overridden = np.zeros(n, dtype=bool)    # a record whose non-empty value lost to a later one

    def latest(self, name: str) -> np.ndarray:
        """Per key: the value of the latest record that has one (-1 if none); counts conflicts."""
        v = self.cols[name]
        if not len(v):
            return v
        idx = np.where(v >= 0, np.arange(len(v)), -1)
        pick = np.maximum.reduceat(idx, self.starts)
        merged = np.where(pick >= 0, v[np.maximum(pick, 0)], -1)
        lost = (v >= 0) & (v != merged[self.group])
        self.overridden |= lost
        n_conflicts = len(np.unique(self.group[lost]))
        if n_conflicts:
            self.conflicts[name] = n_conflicts
        return merged

    def union(self, name: str) -> np.ndarray:
        v = self.cols[name]
        return np.bitwise_or.reduceat(v, self.starts) if len(v) else v

    def survivor(self, name: str) -> np.ndarray:
        """Per key: the field of the latest record (its location and file)."""
        return self.cols[name][self.last]


def _locations(recs: _Records, kind: str, file: np.ndarray, pos: np.ndarray, sub: np.ndarray,
               subsub: np.ndarray, fm: dict[str, Any]) -> list[str]:
    x = fm["xml"]
    names = [f["file"] for f in recs.files]
    fmts = [f["format"] for f in recs.files]
    child = f"/{x['root']}/Children/{x['child']}"
    out = []
    for f, p, s, ss in zip(file.tolist(), pos.tolist(), sub.tolist(), subsub.tolist()):
        if fmts[f] == "flat_csv":
            out.append(f"{names[f]}: row {p}")
        elif kind == "children":
            out.append(f"{names[f]}:{child}[{p}]")
        elif kind == "referrals":
            out.append(f"{names[f]}:{child}[{p}]/{x['cin_details']}[{s}]")
        else:
            out.append(f"{names[f]}:{child}[{p}]/{x['cin_details']}[{s}]/{x['plan']}[{ss}]")
    return out


def _build(recs: _Records, values: _Values, maps: _Maps, dayfirst: bool,
           factor_counts: dict[str, int], min_count: int | None = None) -> Adapted:
    fm = maps.fm
    V = values.array()
    n_files = len(recs.files)
    per_file = {k: {m: np.zeros(n_files, dtype=np.int64) for m in ("kept", "merged", "conflicts", "late_rejected")}
                for k in KINDS}
    extra_rejects: list[tuple[str, int, str, str, str, str]] = []

    def tally(kind: str, m: _Merged, rejected_group: np.ndarray | None = None) -> np.ndarray:
        """Per-file kept / merged / conflicts; returns the kept mask over groups."""
        kept_group = np.ones(m.n_groups, dtype=bool) if rejected_group is None else ~rejected_group
        files = m.cols["file"]
        is_last = np.zeros(len(files), dtype=bool)
        is_last[m.last] = True
        pf = per_file[kind]
        pf["kept"] += np.bincount(files[m.last[kept_group]], minlength=n_files)
        pf["late_rejected"] += np.bincount(files[m.last[~kept_group]], minlength=n_files)
        pf["merged"] += np.bincount(files[~is_last], minlength=n_files)
        pf["conflicts"] += np.bincount(files[m.overridden], minlength=n_files)
        return kept_group

    # Children -------------------------------------------------------------------------
    mc = _Merged(recs, "children", recs.column("children", "key").astype(np.int64))
    child_cols = {c: mc.latest(c) for c in ("lea", "dob", "sex", "eth", "dis")}
    tally("children", mc)
    children = pd.DataFrame({
        "child_id": V[mc.survivor("key")],
        "la_code": V[child_cols["lea"]],
        "sex": V[child_cols["sex"]],
        "date_of_birth": V[child_cols["dob"]],
        "ethnicity": V[child_cols["eth"]],
        "disability": V[child_cols["dis"]],
        "source_location": _locations(recs, "children", mc.survivor("file"), mc.survivor("pos"),
                                      np.zeros(mc.n_groups, np.int32), np.zeros(mc.n_groups, np.int32), fm),
    })

    # Plans ----------------------------------------------------------------------------
    pkey = recs.column("plans", "key").astype(np.int64) * _KEY_SHIFT + recs.column("plans", "start")
    mp = _Merged(recs, "plans", pkey)
    plan_key, plan_start = mp.survivor("key"), mp.survivor("start")
    plan_cols = {c: mp.latest(c) for c in ("refdate", "end", "category", "nprev")}
    tally("plans", mp)
    plans = pd.DataFrame({
        "plan_id": _joined(V[plan_key], V[plan_start]),
        "child_id": V[plan_key],
        "start_date": V[plan_start],
        "end_date": V[plan_cols["end"]],
        "category": V[plan_cols["category"]],
        "source_location": _locations(recs, "plans", mp.survivor("file"), mp.survivor("pos"), mp.survivor("sub"),
                                      mp.survivor("subsub"), fm),
    })

    # Referrals ------------------------------------------------------------------------
    rkey = recs.column("referrals", "key").astype(np.int64) * _KEY_SHIFT + recs.column("referrals", "refdate")
    mr = _Merged(recs, "referrals", rkey)
    r_key, r_date = mr.survivor("key"), mr.survivor("refdate")
    ref_cols = {c: mr.latest(c) for c in ("source", "closure", "nfa", "need", "reason")}
    mask = mr.union("mask")
    cinplan = np.maximum.reduceat(mr.cols["cinplan"], mr.starts) if mr.n_groups else mr.cols["cinplan"]
    cpp = np.maximum.reduceat(mr.cols["cpp"], mr.starts) if mr.n_groups else mr.cols["cpp"]
    unknown = np.maximum.reduceat(mr.cols["unknown_factor"], mr.starts) if mr.n_groups else mr.cols["unknown_factor"]
    rejected_r = unknown >= 0
    kept_r = tally("referrals", mr, rejected_r)
    ref_conflicts = mr.conflicts
    locations_r = np.array(_locations(recs, "referrals", mr.survivor("file"), mr.survivor("pos"), mr.survivor("sub"),
                                      np.zeros(mr.n_groups, np.int32), fm), dtype=object)
    for i in np.flatnonzero(rejected_r):
        extra_rejects.append(("referrals", int(mr.survivor("file")[i]), locations_r[i],
                              fm["xml"]["assessment_factor"], V[unknown[i]], "unknown_code"))

    # Outcome: NFA if ReferralNFA is true; else CPP with a plan; else CIN with a CIN plan; else ASSESSED.
    nfa_text = V[ref_cols["nfa"]]
    nfa_true = np.array([t in maps.nfa_true for t in nfa_text], dtype=bool)
    nfa_known = np.array([t is None or t in maps.nfa_true or t in maps.nfa_false for t in nfa_text], dtype=bool)
    outcome = _OUTCOMES[np.where(nfa_true, 0, np.where(cpp > 0, 1, np.where(cinplan > 0, 2, 3)))]
    outcome[~nfa_known] = nfa_text[~nfa_known]   # an unknown ReferralNFA value: passed on for clean to quarantine

    # abuse_category: InitialCategoryOfAbuse of the referral's earliest plan.
    abuse = np.full(mr.n_groups, -1, dtype=np.int64)
    linked = plan_cols["refdate"] >= 0
    if linked.any():
        start_day = _ordering_days(V[plan_start[linked]], dayfirst)
        link_key = plan_key[linked].astype(np.int64) * _KEY_SHIFT + plan_cols["refdate"][linked]
        o = np.lexsort((start_day, link_key))
        lk, cat = link_key[o], plan_cols["category"][linked][o]
        firsts = np.r_[True, lk[1:] != lk[:-1]]
        ref_keys = r_key.astype(np.int64) * _KEY_SHIFT + r_date
        pos = np.searchsorted(lk[firsts], ref_keys)
        hit = (pos < firsts.sum()) & (lk[firsts][np.minimum(pos, firsts.sum() - 1)] == ref_keys)
        abuse[hit] = cat[firsts][pos[hit]]

    # Build the kept rows only (no filtered copy of a finished frame: memory at a million children).
    keep = np.flatnonzero(kept_r)
    # Recorded-only codes (not canonical fields): values outside the YAML code lists, counted.
    codes_not_in_map = {}
    for col, element, known in (("need", "PrimaryNeedCode", maps.primary_need),
                                ("reason", "ReasonForClosure", maps.reason_for_closure)):
        c = ref_cols[col][keep]
        u, n = np.unique(c[c >= 0], return_counts=True)
        codes_not_in_map[element] = {V[k]: int(m) for k, m in zip(u.tolist(), n.tolist()) if V[k] not in known}
    mask, r_key, r_date = mask[keep], r_key[keep], r_date[keep]
    referrals = pd.DataFrame({
        "referral_id": _joined(V[r_key], V[r_date]),
        "child_id": V[r_key],
        "referral_date": V[r_date],
        "referral_source": V[ref_cols["source"][keep]],
        "closure_date": V[ref_cols["closure"][keep]],
        "outcome": outcome[keep],
        # One shared "0" / "1" object per flag column, not a new string per row.
        **{flag: _ZERO_ONE[(mask >> bit) & 1] for bit, flag in enumerate(maps.flags)},
        "abuse_category": V[abuse[keep]],
        "source_location": locations_r[keep],
    })
    del locations_r, mr

    # Rejects and reconciliation ---------------------------------------------------------
    all_rejects = recs.rejects + extra_rejects
    rejects = pd.DataFrame([(k, loc, fld, val, why) for k, _, loc, fld, val, why in all_rejects],
                           columns=REJECT_COLUMNS)
    files_out = {}
    totals = {k: {"records_in": 0, "kept": 0, "rejected": 0, "merged": 0, "conflicts": 0} for k in KINDS}
    for i, info in enumerate(recs.files):
        entry = {k: v for k, v in info.items() if k != "counts" and v is not None}
        for kind in KINDS:
            c = info["counts"][kind]
            pf = per_file[kind]
            row = {"records_in": c["in"], "kept": int(pf["kept"][i]), "rejected": c["rejected"] + int(pf["late_rejected"][i]),
                   "merged": int(pf["merged"][i]), "conflicts": int(pf["conflicts"][i])}
            if row["records_in"] != row["kept"] + row["rejected"] + row["merged"]:
                raise RuntimeError(f"{info['file']}: {kind} do not reconcile: {row}")
            entry[kind] = row
            for m in ("records_in", "kept", "rejected", "merged"):
                totals[kind][m] += row[m]
        files_out[info["file"]] = entry
    for kind, conflicts in (("children", mc.conflicts), ("referrals", ref_conflicts), ("plans", mp.conflicts)):
        totals[kind]["conflicts"] = int(sum(conflicts.values()))
        totals[kind]["conflicts_by_field"] = {CANONICAL_NAMES.get(f, f): n for f, n in conflicts.items()}
    n_kept = {"children": len(children), "referrals": len(referrals), "plans": len(plans)}
    for kind in KINDS:
        t = totals[kind]
        if t["kept"] != n_kept[kind] or t["records_in"] != t["kept"] + t["rejected"] + t["merged"]:
            raise RuntimeError(f"{kind}: records do not reconcile: {t}")
    nprev = plan_cols["nprev"]
    nprev_cells = {"0": int((nprev == 0).sum()), "1": int((nprev == 1).sum()), "2": int((nprev == 2).sum()),
                   "3_or_more": int((nprev >= 3).sum()), "missing": int((nprev < 0).sum())}
    nprev_out = _withheld(nprev_cells, min_count, total_published=True)
    metrics = {
        "source": SOURCE,
        "records": totals,      # totals first, then per file
        "files": files_out,
        "reconciled": True,
        "rule": "records in = kept + rejected + merged (merged: the same record in another return, or again in one)",
        "number_of_previous_cpp": {
            "plans": len(nprev), "missing": nprev_out.pop("missing"), "by_value": nprev_out,
        },
        "assessment_factor_codes": _withheld(dict(sorted(factor_counts.items())), min_count),
        "codes_not_in_map": {k: _withheld(dict(sorted(v.items())), min_count) for k, v in codes_not_in_map.items()},
        "not_recorded": list(fm["not_recorded"]),
        "statements": _statements(totals, fm["not_recorded"], min_count),
    }
    if min_count is not None:
        metrics["withheld"] = f"counts below {min_count} withheld"
    return Adapted(tables={"children": children, "referrals": referrals, "plans": plans}, rejects=rejects,
                   metrics=metrics, not_recorded=list(fm["not_recorded"]))


def _withheld(counts: dict[str, int], min_count: int | None, *,
              total_published: bool = False) -> dict[str, int | None]:
    """The counts with each one below ``min_count`` replaced by None (withheld).

    ``total_published``: the cells add up to a total published elsewhere (the plans kept),
    so a single withheld cell could be recovered by subtraction; the smallest other cell
    (the first of equals) is then withheld too.
    """
    if min_count is None:
        return dict(counts)
    out: dict[str, int | None] = {k: None if v < min_count else v for k, v in counts.items()}
    shown = [k for k, v in out.items() if v is not None]
    if total_published and len(out) - len(shown) == 1 and shown:
        out[min(shown, key=lambda k: counts[k])] = None
    return out


def _statements(totals: dict[str, dict[str, Any]], not_recorded: list[str], min_count: int | None) -> list[str]:
    """The route's rules in plain sentences for the report's "Data and cleaning" (no identifiers)."""
    def stated(n: int) -> str:
        return str(n) if n >= STATED_CONFLICTS_MIN else f"fewer than {STATED_CONFLICTS_MIN}"

    conflicts = ", ".join(f"{kind} {stated(int(totals[kind]['conflicts']))}" for kind in KINDS)
    absent = ", ".join(f.replace("_", " ") for f in not_recorded)
    out = [
        ("Children are keyed by the return's LA code (LEA) and LAchildID; the census has no family identifier, "
         "so each child is its own cluster."),
        ("Referrals are keyed by child and CINreferralDate, child protection plans by child and CPPstartDate; "
         "a record whose key date cannot be read is rejected."),
        ("A record repeated in several annual returns is merged into one: each field takes the latest return's "
         "value; assessment factors and plans are united over returns."),
        f"Values that differ between returns (the later return wins), counted per field: {conflicts}.",
        ("Referral outcome: NFA if ReferralNFA is true, else CPP if a child protection plan followed, "
         "else CIN if a CIN plan is recorded, else ASSESSED."),
        f"The census does not record these factors, so they are left out (never set to 0): {absent}.",
        "Child protection plans carry no end reason, and entering care is not recorded by the census.",
    ]
    if min_count is not None:
        out.append(f"Counts below {min_count} of assessment factor, previous plan and unmapped codes are withheld.")
    return out


def _joined(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([f"{x}/{y}" for x, y in zip(a.tolist(), b.tolist())], dtype=object)


def _ordering_days(text: np.ndarray, dayfirst: bool) -> np.ndarray:
    """Sortable day numbers for date text (ISO or day/month/year); unreadable last."""
    s = pd.Series(text, dtype=object)
    codes, uniques = pd.factorize(s)
    parsed = pd.to_datetime(pd.Series(uniques, dtype=object), errors="coerce", dayfirst=dayfirst, format="mixed")
    days = np.where(parsed.isna(), np.iinfo(np.int64).max,
                    parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64) // 86_400_000_000_000)
    return np.append(days, np.iinfo(np.int64).max)[codes]


def _check_la_keys(xml_files: list[Path], flat_files: list[Path], la_column: str) -> None:
    """XML returns and flat CSVs in one folder only if every CSV LA value is a 3-digit LEA code.

    XML keys a child by the return's LEA code (201/A1), liiatools' flat CSV by the LA column,
    which it fills with the LA's name (Barnet/A1): the same child would become two children.
    Reads only the LA column of each CSV; a CSV without one is left to its own read's error.
    """
    names = set()
    for path in flat_files:
        try:
            la = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                             usecols=lambda c: str(c).strip() == la_column)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, ValueError):
            continue
        if la.shape[1]:
            names.update(v.strip() for v in la.iloc[:, 0] if v.strip() and not re.fullmatch(r"\d{3}", v.strip()))
    if names:
        def listed(items: list[str]) -> str:
            return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
        raise InputError(
            f"{listed([p.name for p in xml_files])} (XML) and {listed([p.name for p in flat_files])} (flat CSV): "
            f"their LA keys differ: XML returns key children by the 3-digit LEA code, the flat CSV's "
            f"{la_column} column holds {listed([repr(v) for v in sorted(names)])}; read them from separate folders "
            f"or write the LEA code in the {la_column} column")


def read(input_dir: Path, *, dayfirst: bool = True, progress: bool = False, min_count: int | None = None,
         encoding: str = "utf-8") -> Adapted:
    """Read and merge every CIN census return (``*.xml``) and liiatools flat file (``*.csv``).

    ``dayfirst`` reads a flat CSV's d/m/yyyy dates (False: m/d/yyyy). ``min_count``: counts
    below it in the metrics' code distributions are withheld (None), see the module docstring.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: folder not found (input.dir of a cin_census source)")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in (".xml", ".csv"))
    if not files:
        raise InputError(f"{input_dir}: no CIN census returns (*.xml) or liiatools flat files (*.csv) in the folder")
    maps = _Maps(field_map(SOURCE))
    xml_files = [p for p in files if p.suffix.lower() == ".xml"]
    flat_files = [p for p in files if p.suffix.lower() == ".csv"]
    if xml_files and flat_files:
        _check_la_keys(xml_files, flat_files, maps.fm["flat_csv"]["la"])
    values, recs, factor_counts = _Values(), _Records(), {}
    t0 = time.perf_counter()
    for file_no, path in enumerate(files):
        if path.suffix.lower() == ".xml":
            _read_xml(path, file_no, recs, values, maps, factor_counts)
        else:
            _read_flat_csv(path, file_no, recs, values, maps, factor_counts, dayfirst, encoding)
        if progress:
            c = recs.files[-1]["counts"]
            print(f"cin_census: {path.name}: {c['children']['in']:,} children, {c['referrals']['in']:,} referrals, "
                  f"{c['plans']['in']:,} plans ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return _build(recs, values, maps, dayfirst, factor_counts, min_count)


# --------------------------------------------------------------------------------------
# Writer: canonical extract -> annual CIN census returns
# --------------------------------------------------------------------------------------

_DAY = np.timedelta64(1, "D")


def _census_year(days: np.ndarray) -> np.ndarray:
    """Census year (ending 31 March) of each day number: 2024-04-01 .. 2025-03-31 -> 2025."""
    d = days.astype("datetime64[D]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = (d.astype("datetime64[M]").astype(np.int64) % 12) + 1
    return year + (month >= 4)


def _days(series: pd.Series) -> np.ndarray:
    """Day numbers of a date column; NaT -> -1."""
    v = pd.to_datetime(series).to_numpy(dtype="datetime64[D]")
    return np.where(np.isnat(v), -1, v.astype(np.int64))


def _iso(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.maximum(days, 0).astype("datetime64[D]"), unit="D").astype(object)


def lea_codes(la_codes, first: int = 201) -> dict[str, str]:
    """LEA (3-digit) code per canonical la_code: kept when already 3 digits, else 201, 202, ..."""
    out, taken = {}, set()
    for la in sorted(set(la_codes)):
        if re.fullmatch(r"\d{3}", str(la)):
            out[la] = str(la)
            taken.add(str(la))
    n = first
    for la in sorted(set(la_codes)):
        if la not in out:
            while f"{n:03d}" in taken:
                n += 1
            out[la] = f"{n:03d}"
            taken.add(out[la])
    return out


def schema_file(census_year: int) -> Path:
    """The vendored XSD a return of this census year (ending 31 March) is valid against."""
    table = {int(k): v for k, v in field_map(SOURCE)["writer"]["schema"].items()}
    usable = [k for k in sorted(table) if k <= census_year]
    return FORMATS_DIR / table[usable[-1] if usable else min(table)]


def write(children: pd.DataFrame, referrals: pd.DataFrame, plans: pd.DataFrame, out_dir: Path, *,
          extract_date: pd.Timestamp, lea_map: dict[str, str] | None = None,
          progress: bool = False) -> dict[str, str]:
    """Write a clean, typed canonical extract as annual CIN census XML returns.

    One file ``<LEA>_<year>.xml`` per LA per census year (1 April to 31 March) from the first
    referral's year to the year of the extract date. A return holds every child with a
    referral (CINdetails) open at any time in its year: referral_date <= 31 March and
    closure (if any) >= 1 April. Finished activity is not repeated: CINclosureDate and
    ReasonForClosure only in the closure's year; Assessments (start = referral date; factor
    codes from the ``writer.factors`` map, ``21`` when none) only in the referral's year;
    a plan only while open, its CPPendDate only in its end's year. Outcome CIN -> a
    CINPlanDates from the referral date (end = closure, in the closure's year); CPP -> the
    child's plans linked to the latest CPP referral on or before their start; NFA ->
    ReferralNFA 1. A CPP referral whose plan has not started by the extract date gets no
    plan (read back as ASSESSED). GenderCurrent (1/2/0) to 2023-24, Sex (M/F/U) from 2024-25.

    Returns the LEA code used for each canonical la_code.
    """
    fm = field_map(SOURCE)
    w = fm["writer"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extract_day = int(pd.Timestamp(extract_date).value // 86_400_000_000_000)
    last_year = int(_census_year(np.array([extract_day]))[0])
    lea_map = lea_map or lea_codes(children["la_code"], int(w["lea_first"]))

    kids = children.reset_index(drop=True)
    child_index = pd.Index(kids["child_id"])
    k_lea = kids["la_code"].map(lea_map).to_numpy(dtype=object)
    k_id = np.array([escape(str(c)) for c in kids["child_id"]], dtype=object)
    k_dob = _iso(_days(kids["date_of_birth"]))
    k_has_dob = _days(kids["date_of_birth"]) >= 0
    k_sex = kids["sex"].to_numpy(dtype=object)
    k_eth = kids["ethnicity"].map(w["ethnicity"]).to_numpy(dtype=object)
    k_dis = kids["disability"].astype(int).map({int(k): v for k, v in w["disability"].items()}).to_numpy(dtype=object)

    r = referrals.reset_index(drop=True)
    r_child = child_index.get_indexer(r["child_id"])
    if (r_child < 0).any():
        raise ValueError("write: a referral's child_id is not in the children table")
    r_day, r_close = _days(r["referral_date"]), _days(r["closure_date"])
    r_out = r["outcome"].to_numpy(dtype=object)
    r_src = r["referral_source"].map(w["referral_source"]).to_numpy(dtype=object)
    factor_codes = np.full(len(r), "", dtype=object)
    for flag, code in w["factors"].items():
        if flag in r:
            factor_codes = np.where(r[flag].to_numpy() == 1, factor_codes + f"<AssessmentFactors>{code}</AssessmentFactors>",
                                    factor_codes)

    # Plans: linked to the latest CPP referral of the child on or before the plan's start.
    p = plans.reset_index(drop=True)
    p_child = child_index.get_indexer(p["child_id"])
    p_start, p_end = _days(p["start_date"]), _days(p["end_date"])
    p_cat = p["category"].map(w["category"]).to_numpy(dtype=object)
    p_prev = p.assign(_s=p_start).sort_values(["child_id", "_s"], kind="stable").groupby("child_id").cumcount().reindex(p.index).to_numpy()
    p_ref = _link_plans(r_child, r_day, r_out, p_child, p_start)
    if (p_ref < 0).any():
        raise ValueError(f"write: {(p_ref < 0).sum()} plan(s) start before any referral of their child")
    r_ends = np.where(r_close >= 0, r_close, extract_day)
    # A referral stays in the returns while any of its plans is open.
    plan_end_or_now = np.where(p_end >= 0, p_end, extract_day)
    linked = p_ref >= 0
    np.maximum.at(r_ends, p_ref[linked], plan_end_or_now[linked])

    # (referral, census year) pairs.
    y0, y1 = _census_year(r_day), np.minimum(_census_year(r_ends), last_year)
    n_years = np.maximum(y1 - y0 + 1, 0)
    pair_ref = np.repeat(np.arange(len(r)), n_years)
    pair_year = y0[pair_ref] + (np.arange(len(pair_ref)) - np.repeat(np.cumsum(n_years) - n_years, n_years))
    pair_lea = k_lea[r_child[pair_ref]]
    order = np.lexsort((r_day[pair_ref], r_child[pair_ref], pair_year, pair_lea.astype(str)))
    pair_ref, pair_year, pair_lea = pair_ref[order], pair_year[order], pair_lea[order]

    plans_of = pd.Series(np.arange(len(p))[linked]).groupby(p_ref[linked]).agg(list).to_dict()
    iso_r, iso_c = _iso(r_day), _iso(r_close)
    iso_ps, iso_pe = _iso(p_start), _iso(p_end)
    cin_year_close = np.where(r_close >= 0, _census_year(np.maximum(r_close, 0)), -1)
    p_end_year = np.where(p_end >= 0, _census_year(np.maximum(p_end, 0)), -1)
    p_start_year = _census_year(p_start)
    ref_year = y0

    bounds = np.flatnonzero(np.r_[True, (pair_year[1:] != pair_year[:-1]) | (pair_lea[1:] != pair_lea[:-1]), True])
    t0 = time.perf_counter()
    for a, b in itertools.pairwise(bounds):
        year, lea = int(pair_year[a]), pair_lea[a]
        use_sex = year >= int(w["sex_element_from_year"])
        sex_map = w["sex"] if use_sex else w["gender_current"]
        sex_tag = "Sex" if use_sex else "GenderCurrent"
        year_start = int((np.datetime64(f"{year - 1}-04-01") - np.datetime64("1970-01-01")) / _DAY)
        year_end = int((np.datetime64(f"{year}-03-31") - np.datetime64("1970-01-01")) / _DAY)
        parts = [(
            '<?xml version="1.0" encoding="UTF-8"?>\n<Message><Header><CollectionDetails><Collection>CIN</Collection>'
            f"<Year>{year}</Year><ReferenceDate>{year}-03-31</ReferenceDate></CollectionDetails><Source>"
            f"<SourceLevel>L</SourceLevel><LEA>{lea}</LEA><SoftwareCode>rereferral-pipeline simulate</SoftwareCode>"
            f"<Release>1</Release><SerialNo>001</SerialNo><DateTime>{pd.Timestamp(extract_date).date()}T00:00:00</DateTime>"
            "</Source></Header><Children>\n")]
        refs = pair_ref[a:b]
        kids_here = r_child[refs]
        cuts = np.flatnonzero(np.r_[True, kids_here[1:] != kids_here[:-1], True])
        for ca, cb in itertools.pairwise(cuts):
            k = kids_here[ca]
            dob = f"<PersonBirthDate>{k_dob[k]}</PersonBirthDate>" if k_has_dob[k] else ""
            parts.append(
                f"<Child><ChildIdentifiers><LAchildID>{k_id[k]}</LAchildID>{dob}"
                f"<{sex_tag}>{sex_map.get(k_sex[k], k_sex[k])}</{sex_tag}></ChildIdentifiers>"
                f"<ChildCharacteristics><Ethnicity>{k_eth[k]}</Ethnicity>"
                f"<Disabilities><Disability>{k_dis[k]}</Disability></Disabilities></ChildCharacteristics>")
            for i in refs[ca:cb].tolist():
                out = r_out[i]
                closes_here = cin_year_close[i] == year
                s = [f"<CINdetails><CINreferralDate>{iso_r[i]}</CINreferralDate><ReferralSource>{r_src[i]}</ReferralSource>"]
                if closes_here:
                    reason = "RC8" if out in ("NFA", "ASSESSED") else "RC7"
                    s.append(f"<CINclosureDate>{iso_c[i]}</CINclosureDate><ReasonForClosure>{reason}</ReasonForClosure>")
                if ref_year[i] == year and (out != "NFA" or factor_codes[i]):
                    codes = factor_codes[i] or f"<AssessmentFactors>{w['no_factors']}</AssessmentFactors>"
                    s.append(f"<Assessments><AssessmentActualStartDate>{iso_r[i]}</AssessmentActualStartDate>"
                             f"<FactorsIdentifiedAtAssessment>{codes}</FactorsIdentifiedAtAssessment></Assessments>")
                if out == "CIN":
                    end = f"<CINPlanEndDate>{iso_c[i]}</CINPlanEndDate>" if closes_here else ""
                    s.append(f"<CINPlanDates><CINPlanStartDate>{iso_r[i]}</CINPlanStartDate>{end}</CINPlanDates>")
                s.append(f"<ReferralNFA>{1 if out == 'NFA' else 0}</ReferralNFA>")
                for j in plans_of.get(i, ()):
                    if p_start[j] > year_end or (p_end[j] >= 0 and p_end[j] < year_start) or p_start_year[j] > year:
                        continue
                    end = f"<CPPendDate>{iso_pe[j]}</CPPendDate>" if p_end_year[j] == year else ""
                    s.append(f"<ChildProtectionPlans><CPPstartDate>{iso_ps[j]}</CPPstartDate>{end}"
                             f"<InitialCategoryOfAbuse>{p_cat[j]}</InitialCategoryOfAbuse>"
                             f"<LatestCategoryOfAbuse>{p_cat[j]}</LatestCategoryOfAbuse>"
                             f"<NumberOfPreviousCPP>{p_prev[j]}</NumberOfPreviousCPP></ChildProtectionPlans>")
                s.append("</CINdetails>")
                parts.append("".join(s))
            parts.append("</Child>\n")
        parts.append("</Children></Message>\n")
        with atomic_path(out_dir / f"{lea}_{year}.xml") as tmp:
            tmp.write_text("".join(parts), encoding="utf-8")
        if progress:
            print(f"cin_census: wrote {lea}_{year}.xml ({len(cuts) - 1:,} children, "
                  f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return lea_map


def _link_plans(r_child: np.ndarray, r_day: np.ndarray, r_out: np.ndarray, p_child: np.ndarray,
                p_start: np.ndarray) -> np.ndarray:
    """For each plan, the referral it belongs to: the child's latest CPP referral on or before
    the plan's start; else the child's latest referral on or before it; else -1."""
    out = np.full(len(p_child), -1, dtype=np.int64)
    for restrict in (r_out == "CPP", np.ones(len(r_out), dtype=bool)):
        idx = np.flatnonzero(restrict)
        key = r_child[idx].astype(np.int64) * _KEY_SHIFT + r_day[idx]
        o = np.argsort(key, kind="stable")
        key, idx = key[o], idx[o]
        todo = np.flatnonzero(out < 0)
        q = p_child[todo].astype(np.int64) * _KEY_SHIFT + p_start[todo]
        pos = np.searchsorted(key, q, side="right") - 1
        ok = pos >= 0
        ok[ok] = (key[pos[ok]] // _KEY_SHIFT) == p_child[todo][ok]
        out[todo[ok]] = idx[pos[ok]]
    return out
