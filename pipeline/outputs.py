"""``outputs`` stage: the output-checking bundle ``reports/outputs/`` for a Trusted Research
Environment's output checker, in ACRO's results layout so that SACRO's viewer opens it.

Real child-level data are analysed inside TREs (ONS SRS, SAIL, DfE's platform), where a person
checks every output before it leaves. This stage puts every output meant to leave (the one
list: ``pipeline/outputs.yaml``) into one folder with the checks applied and their outcome:

Layout (ACRO 1.0.2, ``acro.record.Records.finalise(path, "json")``, read from its source):

* each output's file(s), flat in the folder: the tables as the stages wrote them (same bytes,
  named ``<stage folder>_<stem>.csv``; ACRO re-serialises a DataFrame as ``<uid>_0.csv`` with
  its index, here the checksum matches the pipeline's own file), the report's figures as the
  PNGs embedded in ``reports/report.html`` (the same bytes the reader sees; the report is not
  re-drawn), ``summary.md`` and ``report.html``;
* ``session_summary.json`` and ``session_summary.csv`` (ACRO's session summary: status and
  type counts, the variables each output uses), entered as the two custom outputs ACRO adds,
  ``2ndary_risk_summary_json-DONT_RELEASE`` and ``2ndary_risk_summary_csv-DONT_RELEASE``;
* ``results.json``: ``{"version", "tool", "results": {uid: {uid, status, type, properties,
  files: [{name, sdc}], outcome, command, summary, timestamp, comments, exception, fair}}}``;
* ``checksums/<file>.txt``: the SHA-256 of every file above, results.json included.

One difference, for byte-identical reruns: ACRO stamps each output and the session summary
with the wall-clock time; here every timestamp is the extract date (``input.extract_date``,
midnight), the moment the data describe.

Checks per output (check names as ACRO's where ACRO has the check; outcome pass, review,
fail or not applicable; the output's status is fail if any check fails, else review if any
asks for review or the output is a figure or text, else pass):

* ``MinimumThresholdCheck`` (the pipeline's rule, ``disclosure.min_cell_count``): a count of
  people or referrals in [0, threshold) that is not withheld fails.
* ``WithheldByPipeline``: cells the stages withheld (blank, or ``withheld``), primary and
  secondary together (a released table cannot tell them apart). Review, as ACRO marks a
  table its suppression changed ("Suppression automatically applied where needed").
* ``SecondarySuppressionCheck`` (the pipeline's complementary suppression,
  ``pipeline/disclosure.py``): where the levels of a variable add up to a published total,
  exactly one withheld level would follow by subtraction: fail. So would exactly one withheld
  part of a row whose parts add up to its published total (TP + FP + FN + TN = n).
* ``SurvivalStepCheck`` (ACRO's rule for survival tables, ``survival_safe_threshold``: a
  curve steps only when at least the threshold have left the risk set): between two published
  points of a curve, fewer than the threshold leaving the risk set means a step may show a
  handful of events. Review: it is ACRO's practice, not the pipeline's rule.
* ``NKCheck`` and ``PPercentCheck`` (dominance, ACRO's defaults: the largest 2 contributions
  must not reach 90% of a cell; the p-ratio (total - largest two) / largest must not fall
  below 10%): defined for tables of magnitudes (sums of a quantity over people). The stage
  sees no contribution, so it uses a bound b on each one (a predicted risk: b = 1): the N-k
  rule cannot fail when n b / total < k, the p-ratio when total >= (2 + p) b. A cell where
  the bound cannot rule dominance out is review. Tables of counts and estimates: not
  applicable.
* ``MinimumDoFCheck`` (ACRO's default 10, ``outputs.min_residual_df``): a model's residual
  degrees of freedom, from its metrics: observations - parameters, the observations being
  events for time-to-event models (one partial-likelihood term per event) and rows for the
  logistic model (statsmodels' ``df_resid``, the number ACRO checks); the frailty model also
  counts its frailty term's degrees of freedom. Below the minimum fails; a number the
  metrics do not record is review.
* ``DisclosureScan``: ``pipeline.disclosure.scan`` over the bundle (no identifier of the input,
  no count below the threshold); a problem fails the output it is in. The whole bundle's scan
  is recorded in ``metrics/outputs.json``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html.parser
import io
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml

from pipeline.cli import InputError
from pipeline.disclosure import COUNT_NAMES, SCANNED, scan

ACRO_VERSION = "1.0.2"      # the acro release whose results layout this writes (acro/record.py)
ACRO_TOOL = {"@type": "SoftwareApplication", "name": "rereferral-pipeline: pipeline/outputs.py, in ACRO's results layout",
             "url": "https://github.com/AI-SDC/ACRO", "version": ACRO_VERSION}
MANIFEST = Path(__file__).with_name("outputs.yaml")
BUNDLE = Path("reports/outputs")
SUMMARY_WARNING = "DO NOT RELEASE - SUMMARY FOR OUTPUT CHECKER USE ONLY"   # ACRO's words (acro/summary.py)
SUMMARY_KEYS = {"session_summary.json": "2ndary_risk_summary_json-DONT_RELEASE",
                "session_summary.csv": "2ndary_risk_summary_csv-DONT_RELEASE"}
NOT_APPLICABLE = "not applicable"
RANK = {"pass": 0, NOT_APPLICABLE: 0, "review": 1, "fail": 2}


@dataclass(frozen=True)
class Rules:
    """The thresholds: the pipeline's own and ACRO's defaults (acro/default.yaml)."""

    min_count: int = 10          # disclosure.min_cell_count
    min_dof: int = 10            # ACRO safe_dof_threshold
    nk_n: int = 2                # ACRO safe_nk_n
    nk_k: float = 0.9            # ACRO safe_nk_k
    p_ratio: float = 0.1         # ACRO safe_pratio_p


@dataclass
class Check:
    name: str
    outcome: str                 # pass | review | fail | not applicable
    detail: str
    cells: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Output:
    """One output of the bundle: its record in results.json and the bytes of its file."""

    uid: str
    kind: str                    # ACRO's type: table, regression, survival plot, custom
    filename: str
    data: bytes
    command: str
    analysis: str = ""
    description: str = ""
    checks: list[Check] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)
    independent: list[str] = field(default_factory=list)
    minimum_status: str = "pass"     # figures and texts: review at least

    @property
    def status(self) -> str:
        worst = max([RANK[c.outcome] for c in self.checks] + [RANK[self.minimum_status]])
        return {0: "pass", 1: "review", 2: "fail"}[worst]


# --- the manifest ------------------------------------------------------------------------------

def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """pipeline/outputs.yaml, checked: every table has a file, names are unique."""
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise InputError(f"{path}: not valid YAML") from None
    for key in ("folders", "tables", "figures", "texts"):
        if key not in manifest:
            raise InputError(f"{path}: missing top-level key '{key}'")
    names = [table_name(t) for t in manifest["tables"]] + [t["name"] for t in manifest["texts"]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"{path}: output name '{duplicated[0]}' used twice")
    kept = set(manifest.get("kept_inside") or {})
    both = sorted(kept & {t["file"] for t in manifest["tables"]})
    if both:
        raise InputError(f"{path}: {both[0]} is both released (tables) and kept inside")
    return manifest


def table_name(spec: dict[str, Any]) -> str:
    path = Path(spec["file"])
    return spec.get("name") or f"{path.parent.name}_{path.stem}"


def unlisted_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Files in the manifest's folders that are neither released (tables, texts) nor kept inside."""
    listed = ({t["file"] for t in manifest["tables"]} | {t["file"] for t in manifest["texts"]}
              | set(manifest.get("kept_inside") or {}))
    found = sorted(p.relative_to(root).as_posix() for folder in manifest["folders"]
                   for p in (root / folder).iterdir() if p.is_file() and p.name != ".gitignore")
    return [f for f in found if f not in listed]


def command_for(manifest: dict[str, Any], file: str) -> str:
    folder = Path(file).parent.as_posix()
    return manifest.get("command", {}).get(folder, "")


# --- the checks ----------------------------------------------------------------------------------

def read_table(data: bytes) -> pd.DataFrame:
    """A released CSV as the reader sees it; a file without even a header as an empty frame."""
    try:
        return pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _withheld(value: Any) -> bool:
    """A cell the stages withheld: blank (NaN) or the plot tables' ``withheld``."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "withheld"


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def count_columns(table: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    names = spec.get("counts", sorted(COUNT_NAMES))
    return [c for c in table.columns if c in names]


def threshold_checks(table: pd.DataFrame, spec: dict[str, Any], rules: Rules) -> list[Check]:
    """MinimumThresholdCheck (a count in [0, threshold) left in: fail) and WithheldByPipeline."""
    columns = count_columns(table, spec)
    if not columns:
        na = f"{NOT_APPLICABLE}: no count column (estimates, tests or rates)"
        return [Check("MinimumThresholdCheck", NOT_APPLICABLE, na), Check("WithheldByPipeline", NOT_APPLICABLE, na)]
    small, withheld = [], []
    for j, column in enumerate(table.columns):
        if column not in columns:
            continue
        for i, value in enumerate(table[column].tolist()):
            if _withheld(value):
                withheld.append((i, j))
            else:
                v = _number(value)
                if v is not None and 0 <= v < rules.min_count and float(v).is_integer():
                    small.append((i, j))
    listed = ", ".join(columns)
    small, withheld = sorted(small), sorted(withheld)     # row by row, as ACRO lists cells
    if small:
        i, j = small[0]
        first = f"CSV line {i + 2}, column {table.columns[j]}"      # not the value: results.json leaves too
        threshold = Check("MinimumThresholdCheck", "fail", f"fail - {len(small)} count(s) below {rules.min_count} "
                          f"not withheld (first: {first}; count columns: {listed})", small)
    else:
        threshold = Check("MinimumThresholdCheck", "pass", f"pass - no count below {rules.min_count} "
                          f"(count columns: {listed})")
    if withheld:
        kept = Check("WithheldByPipeline", "review", f"review - {len(withheld)} count cell(s) withheld by the pipeline "
                     f"(a count below {rules.min_count}, or a cell it could be recovered from): check the pattern",
                     withheld)
    else:
        kept = Check("WithheldByPipeline", "pass", "pass - no count cell withheld")
    return [threshold, kept]


def secondary_check(table: pd.DataFrame, spec: dict[str, Any]) -> Check:
    """SecondarySuppressionCheck: no withheld cell that follows from a published total by
    subtraction (exactly one withheld level of a partition, or one withheld part of a row)."""
    partition, row_sums = spec.get("partition"), spec.get("row_sums")
    if table.empty or not (partition or row_sums):
        reason = spec.get("partition_na") or ("no rows" if table.empty else
                                               "the rows are not levels of a published total")
        return Check("SecondarySuppressionCheck", NOT_APPLICABLE, f"{NOT_APPLICABLE}: {reason}")
    columns = count_columns(table, spec)
    problems: list[str] = []
    cells: list[tuple[int, int]] = []
    if partition and columns:
        problems += _partition_problems(table, partition, columns, cells)
    for rule in row_sums or []:
        problems += _row_sum_problems(table, rule, cells)
    cells = sorted(set(cells))       # row by row; a part of several row sums is one cell
    if problems:
        return Check("SecondarySuppressionCheck", "fail", f"fail - a withheld cell follows by subtraction: "
                     f"{'; '.join(problems[:3])}" + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
                     cells)
    return Check("SecondarySuppressionCheck", "pass", "pass - no withheld cell follows from a published total by "
                 "subtraction (each withheld level has a withheld companion)")


def _partition_problems(table: pd.DataFrame, partition: dict[str, Any], columns: list[str],
                        cells: list[tuple[int, int]]) -> list[str]:
    within = [c for c in partition.get("within", []) if c in table]
    across = [c for c in partition.get("across", []) if c in table]
    level = partition["level"]
    if level not in table:
        return []
    total = partition.get("total")
    rows = table[table[level].astype(str) != str(total)] if total is not None else table
    problems = []
    universes = {key: set(g[level].astype(str)) for key, g in (rows.groupby(within, sort=False) if within
                                                                   else [((), rows)])}
    for key, group in (rows.groupby(within + across, sort=False) if within + across else [((), rows)]):
        key = key if isinstance(key, tuple) else (key,)
        universe = universes[key[:len(within)]] if within else universes[()]
        if len(universe) < 2:
            continue
        for column in columns:
            published = {str(lv) for lv, v in zip(group[level], group[column]) if not _withheld(v)}
            missing = sorted(universe - published)
            if len(missing) == 1:
                where = ", ".join(f"{c}={k}" for c, k in zip(within + across, key))
                problems.append(f"{column} of {level}={missing[0]}" + (f" ({where})" if where else "")
                                + " is the only one withheld")
                hit = group.index[group[level].astype(str) == missing[0]]
                cells += [(int(table.index.get_loc(i)), int(table.columns.get_loc(column))) for i in hit]
    return problems


def _row_sum_problems(table: pd.DataFrame, rule: dict[str, Any], cells: list[tuple[int, int]]) -> list[str]:
    parts = [p for p in rule["parts"] if p in table]
    if rule["total"] not in table or len(parts) < 2:
        return []
    problems = []
    for i, row in enumerate(table.itertuples(index=False)):
        values = dict(zip(table.columns, row))
        if _withheld(values[rule["total"]]):
            continue
        missing = [p for p in parts if _withheld(values[p])]
        if len(missing) == 1:
            problems.append(f"CSV line {i + 2}: {missing[0]} = {rule['total']} - the other parts")
            cells.append((i, int(table.columns.get_loc(missing[0]))))
    return problems


def survival_step_check(table: pd.DataFrame, spec: dict[str, Any], rules: Rules) -> Check:
    """SurvivalStepCheck: at least the threshold leave the risk set between two published
    points of a curve (ACRO's survival rule); the number leaving is the fall in the number at
    risk from the last published value."""
    curve = spec.get("curve")
    if not curve:
        return Check("SurvivalStepCheck", NOT_APPLICABLE, f"{NOT_APPLICABLE}: not a survival curve")
    at_risk = curve["at_risk"]
    if table.empty or at_risk not in table:
        return Check("SurvivalStepCheck", NOT_APPLICABLE, f"{NOT_APPLICABLE}: no rows")
    by = [c for c in curve.get("by", []) if c in table]
    j = int(table.columns.get_loc(at_risk))
    flagged, steps = [], 0
    for _, group in (table.groupby(by, sort=False) if by else [((), table)]):
        last = None
        for index, value in zip(group.index, group[at_risk]):
            v = _number(value) if not _withheld(value) else None
            if v is None:
                continue
            if last is not None:
                steps += 1
                if 0 < last - v < rules.min_count:
                    flagged.append((int(table.index.get_loc(index)), j))
            last = v
    if flagged:
        return Check("SurvivalStepCheck", "review", f"review - fewer than {rules.min_count} left the risk set between "
                     f"two published points at {len(flagged)} of {steps} steps: a step of the curve there may show "
                     "a handful of events (ACRO's survival rule; the pipeline's own rule, at least the threshold "
                     "at risk, holds)", flagged)
    return Check("SurvivalStepCheck", "pass", f"pass - at least {rules.min_count} left the risk set at each of "
                 f"{steps} steps")


def dominance_checks(table: pd.DataFrame, spec: dict[str, Any], rules: Rules, params: dict[str, Any]) -> list[Check]:
    """NKCheck and PPercentCheck for the magnitude columns, by a bound on each contribution."""
    magnitudes = {c: b for c, b in (spec.get("magnitudes") or {}).items() if c in table}
    if not magnitudes:
        na = f"{NOT_APPLICABLE}: counts and estimates, no table of magnitudes (sums of a quantity over people)"
        return [Check("NKCheck", NOT_APPLICABLE, na), Check("PPercentCheck", NOT_APPLICABLE, na)]
    unbounded = [f"{k}: {v}" for k, v in (spec.get("magnitudes_unbounded_when") or {}).items()
                 if _param(params, k) == v]
    nk_cells, p_cells = [], []
    for column, bound in magnitudes.items():
        j = int(table.columns.get_loc(column))
        for i, value in enumerate(table[column].tolist()):
            total = _number(value) if not _withheld(value) else None
            if total is None:
                continue
            if unbounded or total <= 0 or rules.nk_n * bound / total >= rules.nk_k:
                nk_cells.append((i, j))
            if unbounded or total < (2 + rules.p_ratio) * bound:
                p_cells.append((i, j))
    what = ", ".join(f"{c} (each contribution at most {b:g})" for c, b in magnitudes.items())
    if unbounded:
        reason = f"review - the bound on each contribution does not hold with {', '.join(unbounded)}: dominance of {what} cannot be ruled out here; check the contributions"
        return [Check("NKCheck", "review", reason, nk_cells), Check("PPercentCheck", "review", reason, p_cells)]
    nk = (Check("NKCheck", "review", f"review - {len(nk_cells)} cell(s) of {what} where the largest {rules.nk_n} "
                f"could reach {rules.nk_k:.0%} of the total", nk_cells) if nk_cells else
          Check("NKCheck", "pass", f"pass - {what}: the largest {rules.nk_n} are below {rules.nk_k:.0%} of every "
                "cell's total"))
    pp = (Check("PPercentCheck", "review", f"review - {len(p_cells)} cell(s) of {what} where the rest could be "
                f"under {rules.p_ratio:.0%} of the largest", p_cells) if p_cells else
          Check("PPercentCheck", "pass", f"pass - {what}: every cell's total is at least {2 + rules.p_ratio:g} "
                "contributions, so the rest are at least {:.0%} of the largest".format(rules.p_ratio)))
    return [nk, pp]


def _param(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


_ABSENT = object()


def _json_value(root: Path, ref: str, fields: dict[str, Any]) -> Any:
    """``"<file>:<key.path>"`` (``{column}`` filled from ``fields``): the value, None when the
    stage withheld it (null), ``_ABSENT`` when not recorded."""
    file, _, keys = ref.format(**fields).partition(":")
    path = root / file
    if not path.exists():
        return _ABSENT
    value: Any = json.loads(path.read_text(encoding="utf-8"))
    for key in keys.split("."):
        if not isinstance(value, dict) or key not in value:
            return _ABSENT
        value = value[key]
    return value


def dof_check(table: pd.DataFrame, spec: dict[str, Any], rules: Rules, root: Path) -> tuple[Check, int | None]:
    """MinimumDoFCheck: residual degrees of freedom of each model in the table (observations
    minus parameters, as ``model.rule`` says) against ``rules.min_dof``; the table's number is
    the smallest (as ACRO's check on a table of degrees of freedom)."""
    model = spec.get("model")
    if not model:
        return Check("MinimumDoFCheck", NOT_APPLICABLE, f"{NOT_APPLICABLE}: not a model's coefficients"), None
    if table.empty:
        return Check("MinimumDoFCheck", NOT_APPLICABLE, f"{NOT_APPLICABLE}: no model (the table has no rows)"), None
    group_by = model.get("group_by")
    groups = table.groupby(group_by, sort=False) if group_by in table else [(None, table)]
    found, unknown, failed = [], [], []
    for key, group in groups:
        fields = {group_by: key} if group_by else {}
        label = f"{key}: " if key is not None else ""
        observations = _json_value(root, model["observations"], fields)
        parameters = model.get("parameters", "rows")
        p = (_number(group[parameters.split(":", 1)[1]].iloc[0]) if parameters.startswith("column:")
             else float(len(group)))
        extra = _json_value(root, model["extra_parameters"], fields) if model.get("extra_parameters") else 0.0
        if observations is _ABSENT or extra is _ABSENT or p is None:
            missing = model["observations"] if observations is _ABSENT else model.get("extra_parameters", parameters)
            unknown.append(f"{label}{missing.format(**fields)} not recorded")
            continue
        if observations is None:    # withheld by the stage: fewer than the threshold
            bound = rules.min_count - 1 - int(p)
            (failed if bound < rules.min_dof else unknown).append(
                f"{label}observations withheld (fewer than {rules.min_count}), residual df at most {bound}")
            continue
        dof = int(math.floor(float(observations) - p - float(extra or 0.0)))
        found.append(dof)
        if dof < rules.min_dof:
            failed.append(f"{label}dof={dof} < {rules.min_dof}")
    rule = model.get("rule", "observations - parameters")
    lowest = min(found) if found else None
    if failed:
        return Check("MinimumDoFCheck", "fail", f"fail - {'; '.join(failed)} (residual df = {rule})"), lowest
    if unknown:
        return Check("MinimumDoFCheck", "review", f"review - {'; '.join(unknown)} (residual df = {rule})"), lowest
    return Check("MinimumDoFCheck", "pass", f"pass dof={lowest} >= {rules.min_dof} (residual df = {rule})"), lowest


def outcome_frame(table: pd.DataFrame, checks: list[Check]) -> dict[str, Any]:
    """ACRO's ``outcome``: per cell "ok" or the names of the checks that flagged it ("Name; "),
    as ``json.loads(DataFrame.to_json())``; only the rows with a flagged cell (keyed by their
    0-based data row), so that long curves stay short."""
    flags: dict[tuple[int, int], str] = {}
    for check in checks:
        if check.outcome in ("review", "fail"):
            for cell in check.cells:
                flags[cell] = flags.get(cell, "") + f"{check.name}; "
    rows = sorted({i for i, _ in flags})
    if not rows:
        return {}
    frame = pd.DataFrame([[flags.get((i, j), "ok") for j in range(table.shape[1])] for i in rows],
                         index=rows, columns=[str(c) for c in table.columns])
    return json.loads(frame.to_json())


def check_table(data: bytes, spec: dict[str, Any], rules: Rules, params: dict[str, Any], root: Path
                ) -> tuple[list[Check], dict[str, Any], dict[str, Any], list[str]]:
    """Every check of one released table: the checks, ACRO's outcome, the properties
    (residual df for a model) and the variables the table is about (ACRO's fair
    "independent")."""
    table = read_table(data)
    dof, lowest = dof_check(table, spec, rules, root)
    checks = [*threshold_checks(table, spec, rules), secondary_check(table, spec),
              survival_step_check(table, spec, rules), *dominance_checks(table, spec, rules, params), dof]
    properties: dict[str, Any] = {"method": spec["model"]["method"]} if spec.get("model") else {}
    if spec.get("model"):
        properties["dof"] = lowest
    for column in ("covariate", "term", "variable"):
        if column in table:
            independent = [str(v) for v in dict.fromkeys(table[column].dropna()) if str(v) not in ("all", "const")]
            break
    else:
        independent = []
    return checks, outcome_frame(table, checks), properties, independent


# --- figures in the report -----------------------------------------------------------------------

class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            a = dict(attrs)
            self.images.append((a.get("alt") or "", a.get("src") or ""))


def report_figures(page: str) -> list[tuple[str, bytes]]:
    """The PNGs a report embeds as data: URIs, with their alt text, in page order."""
    parser = _Images()
    parser.feed(page)
    prefix = "data:image/png;base64,"
    return [(alt, base64.b64decode(src[len(prefix):])) for alt, src in parser.images if src.startswith(prefix)]


def figure_outputs(page: str, manifest: dict[str, Any], statuses: dict[str, str], command: str) -> list[Output]:
    """Each figure as a custom (or survival plot) output: review at least, fail when a table it
    draws fails; a figure the manifest does not name goes too, for review, saying so."""
    out = []
    for alt, png in report_figures(page):
        for spec in manifest["figures"]:
            match = re.search(spec["alt"], alt)
            if match:
                uid = spec["name"].format(**{k: _slug(v) for k, v in match.groupdict().items()})
                data = [d for d in spec.get("data", [])]
                break
        else:
            uid, data, spec = f"figure_{_slug(alt)}", [], {}
        linked = [f"{d} ({statuses.get(d, 'not in the bundle')})" for d in data]
        worst = "fail" if any(statuses.get(d) == "fail" for d in data) else "review"
        detail = (f"{worst} - a figure: check it with the table(s) it draws: {', '.join(linked)}" if data else
                  "review - a figure pipeline/outputs.yaml does not name: no data table linked")
        out.append(Output(uid=uid, kind=spec.get("type", "custom"), filename=f"{uid}.png", data=png, command=command,
                          description=f"Report figure: {alt}", minimum_status="review",
                          checks=[Check("FigureData", worst, detail)]))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# --- the bundle ----------------------------------------------------------------------------------

def collect(root: Path, manifest: dict[str, Any], rules: Rules, params: dict[str, Any]
            ) -> tuple[list[Output], list[str]]:
    """Every output meant to leave, checked (all but the disclosure scan), and the released
    files a route did not make. Stops with one line on a file the manifest does not list."""
    unlisted = unlisted_files(root, manifest)
    if unlisted:
        raise InputError(f"{unlisted[0]}: neither released nor kept inside: list it in pipeline/outputs.yaml "
                         "(tables, texts or kept_inside)")
    outputs, absent = [], []
    for spec in manifest["tables"]:
        path = root / spec["file"]
        if not path.exists():
            absent.append(spec["file"])
            continue
        data = path.read_bytes()
        checks, outcome, properties, independent = check_table(data, spec, rules, params, root)
        outputs.append(Output(uid=table_name(spec), kind=spec.get("type", "table"), filename=f"{table_name(spec)}.csv",
                              data=data, command=command_for(manifest, spec["file"]), analysis=spec.get("analysis", ""),
                              description=spec.get("description", ""), checks=checks, outcome=outcome,
                              properties={**properties, "source": spec["file"]}, independent=independent))
    statuses = {o.uid: o.status for o in outputs}
    report = root / "reports/report.html"
    if report.exists():
        outputs += figure_outputs(report.read_text(encoding="utf-8"), manifest, statuses,
                                  manifest.get("command", {}).get("reports", ""))
    for spec in manifest["texts"]:
        path = root / spec["file"]
        if not path.exists():
            absent.append(spec["file"])
            continue
        outputs.append(Output(uid=spec["name"], kind="custom", filename=f"{spec['name']}{path.suffix}",
                              data=path.read_bytes(), command=command_for(manifest, spec["file"]),
                              description=spec.get("description", ""), minimum_status="review",
                              properties={"source": spec["file"]},
                              checks=[Check("TextReview", "review", "review - a text: a person reads it; its numbers "
                                            "are checked here only by the disclosure scan")]))
    return outputs, absent


def redact(problem: str) -> str:
    """A scan problem without what it found: results.json and metrics/outputs.json leave the
    environment too, so they name the file and place, never the identifier or the count."""
    problem = re.sub(r"identifier\(s\) of the input: (.*)$",
                     lambda m: f"identifier(s) of the input ({len(m.group(1).split(', '))} shown; not repeated here)",
                     problem)
    problem = re.sub(r"(count below \d+) \([^)]*\)$", r"\1", problem)
    return re.sub(r" = [^:]*: (count below \d+)$", r": \1", problem)


def attach_scan(outputs: list[Output], problems: list[str], folder: Path) -> None:
    """Add each output's DisclosureScan result (problems name the file they are in)."""
    for o in outputs:
        own = [redact(p).split(": ", 1)[1] for p in problems if p.startswith(f"{folder / o.filename}:")]
        if o.filename.endswith(SCANNED):
            check = (Check("DisclosureScan", "fail", f"fail - {'; '.join(own[:3])}")
                     if own else Check("DisclosureScan", "pass", "pass - no identifier of the input, no count below "
                                       "the threshold (pipeline.disclosure.scan)"))
        else:
            check = Check("DisclosureScan", NOT_APPLICABLE, f"{NOT_APPLICABLE}: an image (the scan reads text files)")
        o.checks.append(check)


def sdc(o: Output) -> dict[str, Any]:
    """ACRO's per-file ``sdc``: per check, the number of cells it flags and their [row, column]
    (0-based data row, 0-based CSV column)."""
    return {"summary": {c.name: len(c.cells) for c in o.checks if c.cells},
            "cells": {c.name: [[int(i), int(j)] for i, j in c.cells] for c in o.checks if c.cells}}


def summary_text(o: Output) -> str:
    """ACRO's summary: "<analysis> : " then one line per check (ACRO lists only those that do
    not pass; here all, so the checker sees what was applied)."""
    head = o.analysis or o.kind
    return f"{head} : \n" + "".join(f"{c.name}: {c.detail}\n" for c in o.checks)


def exception_text(o: Output) -> str:
    withheld = [c for c in o.checks if c.name == "WithheldByPipeline" and c.outcome == "review"]
    return ("Suppression automatically applied where needed: " + withheld[0].detail.split(" - ", 1)[1]
            if withheld else "")


def result_entry(o: Output, timestamp: str) -> dict[str, Any]:
    """One output's entry of results.json, keys in ACRO's order (Records.finalise_json)."""
    return {
        "uid": o.uid,
        "status": o.status,
        "type": o.kind,
        "properties": o.properties,
        "files": [{"name": o.filename, "sdc": sdc(o)}],
        "outcome": o.outcome,
        "command": o.command,
        "summary": summary_text(o),
        "timestamp": timestamp,
        "comments": [o.description] if o.description else [],
        "exception": exception_text(o),
        "fair": {"analysis_name": o.analysis or o.kind, "check_status": {c.name: c.outcome for c in o.checks},
                 "dependent": "unknown", "independent": o.independent},
    }


def session_summary(entries: dict[str, dict[str, Any]], timestamp: str) -> dict[str, Any]:
    """ACRO's session summary (acro/summary.py SummaryGenerator.generate) of ``entries``."""
    status_counts: dict[str, int] = {}
    type_counts: dict[str, int] = {}
    outputs = []
    for uid, e in entries.items():
        status_counts[e["status"]] = status_counts.get(e["status"], 0) + 1
        type_counts[e["type"]] = type_counts.get(e["type"], 0) + 1
        fair = e["fair"] or {}
        dependent = fair.get("dependent", "unknown") or "unknown"
        analysis = (fair.get("analysis_name") or e["properties"].get("method")
                    or (e["command"].split("(")[0].strip() if e["command"] else "") or e["type"] or "unknown")
        outputs.append({"uid": uid, "output_type": e["type"], "dependent_variables": dependent,
                        "independent_variables": fair.get("independent", []) or [], "analysis_name": analysis})
    variables = sorted({v for o in outputs for v in _variables(o)})
    matrix = {o["uid"]: {v: int(v in _variables(o)) for v in variables} for o in outputs}
    return {"metadata": {"version": ACRO_VERSION, "timestamp": timestamp, "total_outputs": len(entries),
                         "status_counts": status_counts, "type_counts": type_counts},
            "outputs": outputs, "variable_matrix": matrix}


def _variables(output: dict[str, Any]) -> set[str]:
    dep = output["dependent_variables"]
    found = {dep} if isinstance(dep, str) and dep not in ("", "unknown", "none") else set()
    return found | {v for v in output["independent_variables"] if isinstance(v, str) and v not in ("", "unknown", "none")}


def session_summary_csv(summary: dict[str, Any]) -> str:
    """acro/summary.py write_summary_csv: one row per output (csv module, CRLF line ends)."""
    matrix = summary["variable_matrix"]
    variables = list(next(iter(matrix.values())).keys()) if matrix else []
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=["uid", "output_type", "analysis_name", "dependent_variables",
                                                "independent_variables", *variables])
    writer.writeheader()
    for o in summary["outputs"]:
        writer.writerow({"uid": o["uid"], "output_type": o["output_type"], "analysis_name": o["analysis_name"],
                         "dependent_variables": o["dependent_variables"],
                         "independent_variables": "; ".join(o["independent_variables"]),
                         **{v: matrix[o["uid"]].get(v, 0) for v in variables}})
    return buffer.getvalue()


def summary_entry(filename: str, timestamp: str) -> dict[str, Any]:
    """The custom output ACRO adds for each session-summary file (Records.add_custom)."""
    return {"uid": SUMMARY_KEYS[filename], "status": "review", "type": "custom", "properties": {},
            "files": [{"name": filename, "sdc": {}}], "outcome": {}, "command": "custom", "summary": "review",
            "timestamp": timestamp, "comments": [SUMMARY_WARNING], "exception": "", "fair": {}}


def write_bundle(outputs: list[Output], folder: Path, timestamp: str, identifiers: set[str], min_count: int
                 ) -> dict[str, Any]:
    """Write the bundle (a fresh folder): the output files, the disclosure scan's result per
    output, the session summary, results.json and the checksums, as ACRO's finalise does.
    Returns the scan of the whole finished bundle."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = [o.filename for o in outputs]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & {"results.json", *SUMMARY_KEYS}))
    if clash:
        raise InputError(f"pipeline/outputs.yaml: two outputs would both be {clash[0]} in {folder}: rename one")
    for o in outputs:
        (folder / o.filename).write_bytes(o.data)
    attach_scan(outputs, scan([folder], min_count, identifiers), folder)
    entries = {o.uid: result_entry(o, timestamp) for o in outputs}
    summary = session_summary(entries, timestamp)
    (folder / "session_summary.json").write_text(json.dumps(summary, indent=4), encoding="utf-8")
    (folder / "session_summary.csv").write_text(session_summary_csv(summary), encoding="utf-8", newline="")
    for filename in SUMMARY_KEYS:
        entries[SUMMARY_KEYS[filename]] = summary_entry(filename, timestamp)
    results = {"version": ACRO_VERSION, "tool": ACRO_TOOL, "results": entries}
    (folder / "results.json").write_text(json.dumps(results, indent=4, sort_keys=False), encoding="utf-8")
    checksums = folder / "checksums"
    checksums.mkdir()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        (checksums / f"{path.name}.txt").write_text(hashlib.sha256(path.read_bytes()).hexdigest(), encoding="utf-8")
    return {"problems": [redact(p) for p in scan([folder], min_count, identifiers)]}


#: Every output's status with the reason for each that does not pass, what stays inside, the scan.
CHECKS = "reports/output_checks.json"


def outcome_metrics(outputs: list[Output], absent: list[str], kept_inside: dict[str, str], bundle_scan: dict[str, Any]
                    ) -> dict[str, Any]:
    """metrics/outputs.json: the outputs by status with the reason for each that does not pass
    (lists of names, no small integers: the disclosure scan reads this file too)."""
    by_status: dict[str, list[str]] = {"pass": [], "review": [], "fail": []}
    reasons = {}
    for o in outputs:
        by_status[o.status].append(o.uid)
        if o.status != "pass":
            reasons[o.uid] = "; ".join(f"{c.name}: {c.detail}" for c in o.checks if c.outcome == o.status)
    counts = ", ".join(f"{len(v)} {k}" for k, v in by_status.items())
    return {"layout": f"ACRO {ACRO_VERSION} results.json (acro.record.Records.finalise); open reports/outputs/ in SACRO",
            "summary": f"{len(outputs)} outputs: {counts}", "outputs": by_status, "reasons": reasons,
            "disclosure_scan": {"result": "pass" if not bundle_scan["problems"] else "fail",
                                "problems": bundle_scan["problems"]},
            "kept_inside": kept_inside, "absent": absent}


def rules_from(params: dict[str, Any]) -> Rules:
    o = params.get("outputs") or {}
    return Rules(min_count=int(params["disclosure"]["min_cell_count"]), min_dof=int(o.get("min_residual_df", 10)),
                 nk_n=int(o.get("nk_rule", {}).get("n", 2)), nk_k=float(o.get("nk_rule", {}).get("k", 0.9)),
                 p_ratio=float(o.get("p_ratio", 0.1)))


class InputIdentifiers:
    """Identifiers the analysis stages saw: every ``*_id`` column of data/clean (pseudonymised;
    raw identifiers never get past clean) and a prepared table's id and cluster columns.

    Held as one sorted column of Arrow strings (Polars), not a Python set: a national
    extract's tens of millions of identifiers take a fraction of the memory, and
    ``intersection(tokens)`` finds a file's tokens among them by binary search."""

    def __init__(self, clean: Path, params: dict[str, Any]):
        import polars as pl

        table = params["input"].get("analysis_table") or {}
        named = {table.get("id"), table.get("cluster")} - {None}
        parts = []
        for path in sorted(Path(clean).glob("*.parquet")):
            for column in pq.read_schema(path).names:
                if column.endswith("_id") or column in named:
                    parts.append(pl.scan_parquet(path).select(pl.col(column).cast(pl.String).alias("id")))
        ids = pl.concat(parts).drop_nulls().unique().sort("id").collect() if parts else pl.DataFrame(
            {"id": []}, schema={"id": pl.String})
        self.sorted_ids = ids.to_series()

    def intersection(self, tokens: set[str]) -> set[str]:
        import polars as pl

        if not tokens or not len(self.sorted_ids):
            return set()
        wanted = pl.Series(sorted(tokens), dtype=pl.String)
        at = self.sorted_ids.search_sorted(wanted).clip(0, len(self.sorted_ids) - 1)
        return set(wanted.filter(self.sorted_ids.gather(at) == wanted).to_list())


def input_identifiers(clean: Path, params: dict[str, Any]) -> InputIdentifiers:
    return InputIdentifiers(clean, params)


def main() -> None:
    from pipeline import config
    from pipeline.io import write_json

    params = config.load_params()
    root = Path.cwd()
    if not (root / "reports/report.html").exists():
        raise InputError("reports/report.html: not found; the bundle takes the report's figures from it (run dvc repro)")
    rules = rules_from(params)
    manifest = load_manifest()
    timestamp = config.extract_date(params).isoformat()
    outputs, absent = collect(root, manifest, rules, params)
    bundle_scan = write_bundle(outputs, BUNDLE, timestamp, input_identifiers(Path("data/clean"), params),
                               rules.min_count)
    metrics = outcome_metrics(outputs, absent, manifest.get("kept_inside") or {}, bundle_scan)
    write_json(metrics, Path(CHECKS))
    # Two short metrics: `dvc exp show` and `dvc metrics diff` stay narrow; the lists and
    # reasons are in reports/output_checks.json.
    write_json({"summary": metrics["summary"], "disclosure_scan": metrics["disclosure_scan"]["result"]},
               Path("metrics/outputs.json"))
    print(f"outputs: {BUNDLE}/ ({metrics['summary']}; disclosure scan: {metrics['disclosure_scan']['result']})")


if __name__ == "__main__":
    from pipeline.cli import stage_entry

    stage_entry(main)()

