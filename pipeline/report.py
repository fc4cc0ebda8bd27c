"""The report: ``reports/report.html`` (self-contained) and ``reports/summary.md``.

It leads with how often the model is wrong (the natural-frequency statement at the
headline rule, the false-positive / false-negative table and the warning), then data and
cleaning, cohort, Kaplan-Meier curves, hazard ratios, plan durations, odds ratios,
calibration, subgroup calibration and error rates, the decision curve, sample size, a
TRIPOD+AI checklist, limitations and reproducibility. It reads only the other stages'
outputs (``reports/``, ``metrics/``, ``dvc.lock``, ``params.yaml``) and the installed library
versions (``pipeline/environment.py``, also written to ``metrics/environment.json``); figures are PNGs
embedded as data: URIs and a Content-Security-Policy forbids the page any request.

A stage that could not estimate something (an empty or degenerate analysis table) leaves
headed tables without rows and a ``not_estimated`` reason in its metrics: the report still
builds, draws no figure from an empty table, and says "could not be estimated: <reason>"
in each affected section.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline import environment, field_labels
from pipeline.plot_tables import wide_form
from pipeline.settings import Labels, labels
from pipeline.table_one import level_key

WITHHELD = "\u2014"   # shown for a withheld (small count) or undefined value
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

WARNING = ("Risk tools \u201cidentify many families who will not maltreat their children and fail to identify some "
           "who will\u201d (Munro 2000; Baird and Wagner 2000). Set the threshold high and children are missed; set "
           "it low and families are drawn into the system wrongly. One US tool that gave thousands of children a "
           "\u201c90% probability\u201d of serious harm was dropped; another\u2019s highest-risk fifth had no "
           "substantiation in 63% of cases. These figures describe associations in past records: they are not "
           "causes, and a flag is not a finding about any family.")

# TRIPOD+AI (Collins et al., BMJ 2024;385:e078378): item -> where this report answers it.
TRIPOD_AI = [
    ("1 Title", "Identify the study as developing/evaluating a prediction model, the population and outcome",
     "title"),
    ("2 Abstract", "Structured summary", "how-often-wrong (headline) and summary.md"),
    ("3 Background", "Context, rationale, existing models", "how-often-wrong (warning); README"),
    ("4 Objectives", "Development and/or validation", "cohort"),
    ("5 Data sources", "Source, dates of data collection", "data, cohort"),
    ("6 Participants", "Eligibility, setting, treatments", "cohort"),
    ("7 Data preparation", "Cleaning, harmonisation, quality checks", "data"),
    ("8 Outcome", "Definition, horizon, how assessed, blinding", "cohort"),
    ("9 Predictors", "Definition, timing, measurement", "odds-ratios; hazard-ratios"),
    ("10 Sample size", "How determined, adequacy", "sample-size"),
    ("11 Missing data", "How handled", "data (rejected rows quarantined, never imputed); limitations"),
    ("12 Analytical methods", "Model type, building, internal validation, performance measures",
     "calibration; odds-ratios; hazard-ratios"),
    ("13 Class imbalance", "Methods used", "not applicable: no resampling or reweighting for imbalance"),
    ("14 Fairness", "Approaches to address fairness", "subgroups"),
    ("15 Model output", "Output and any thresholds", "how-often-wrong; decision-curve"),
    ("16 Training versus evaluation", "Differences between development and evaluation data",
     "cohort (Table 1: development and validation rows side by side)"),
    ("17 Ethical approval", "Ethics committee", "not applicable to the synthetic default; the user's to report"),
    ("18 Funding", "Sources of funding", "not applicable (open-source project)"),
    ("19 Conflicts of interest", "Declarations", "none (open-source project)"),
    ("20 Protocol", "Where the protocol can be accessed", "reproducibility (params.yaml, dvc.yaml)"),
    ("21 Registration", "Registration", "not registered"),
    ("22 Data sharing", "Availability of data", "reproducibility: the synthetic default regenerates from the seed"),
    ("23 Code sharing", "Availability of code", "reproducibility (git object ids of the code)"),
    ("24 Patient and public involvement", "Details", "not done: a limitation"),
    ("25 Participants (results)", "Flow, characteristics, missing data", "data; cohort (the flow in sentences; Table 1)"),
    ("26 Model development", "Participants and outcome events per analysis", "cohort; sample-size"),
    ("27 Model specification", "Full model (coefficients) for predictions", "odds-ratios (models/logistic.json)"),
    ("28 Model performance", "Performance with CIs, including subgroups", "how-often-wrong; calibration; subgroups"),
    ("29 Model updating", "Results of any updating", "calibration (recalibration)"),
    ("30 Interpretation", "Overall interpretation, fairness", "how-often-wrong; limitations"),
    ("31 Limitations", "Non-representative sample, overfitting, missing data", "limitations"),
    ("32 Usability", "How the model is to be used; required inputs", "limitations"),
    ("33 Implications", "Future research", "limitations"),
]


def figure_uri(fig) -> str:
    """A matplotlib figure as a PNG data: URI (no timestamp metadata: reruns are identical)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


NOISE = 1e-10   # |x| below this is floating-point noise (an apparent CITL of -1.7e-13): shown as 0


def decimals(value: float) -> int:
    """Decimals that show an estimate to 2-3 significant figures: none from 100 (232, 1,173),
    one from 10 (23.4), two from 0.1 (1.50, 0.31), three from 0.01 (0.017), and two
    significant figures below that (0.0083, 0.00041)."""
    size = abs(value)
    if size >= 100:
        return 0
    if size >= 10:
        return 1
    if size >= 0.1:
        return 2
    if size >= 0.01:
        return 3
    return min(12, 1 - int(np.floor(np.log10(size))))


def fmt(value: Any, digits: int | None = None, kind: str | None = None) -> str:
    """A value as the report writes it (HTML-escaped); the one formatting rule.

    Withheld or undefined (None, NaN): WITHHELD. Text as it is. ``kind`` (a field's
    ``format`` in ``pipeline/field_labels.yaml``): ``p`` a p-value ("<0.001", "0.006",
    "0.03", ">0.99"); ``count`` a whole number with thousands separators; ``year`` or
    ``text`` written as it is (2025, not 2,025). Otherwise whole numbers (and floats that
    are whole from 10 up) with thousands separators; |x| < 1e-10 (floating-point noise) as 0;
    other numbers to 2-3 significant figures (``decimals``), or to ``digits`` decimals when
    given."""
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return WITHHELD
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return html.escape(str(value))
    number = float(value)
    if kind in ("year", "text"):
        return f"{int(number)}" if number.is_integer() else html.escape(str(value))
    if kind == "p":
        return "&lt;0.001" if number < 0.001 else "&gt;0.99" if number > 0.99 else (
            f"{number:.3f}" if number < 0.01 else f"{number:.2f}")
    if abs(number) < NOISE:
        return "0"
    if kind == "count" or isinstance(value, (int, np.integer)) or (number.is_integer() and abs(number) >= 10):
        return f"{number:,.0f}"
    if digits is not None:
        return f"{number:.{digits}g}" if abs(number) < 1e-3 else unsigned_zero(f"{number:,.{digits}f}")
    return f"{number:,.{decimals(number)}f}"


def unsigned_zero(text: str) -> str:
    """"-0.000" (a small negative number rounded) as "0.000"."""
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text


def fmt_interval(value: Any, lower: Any, upper: Any, digits: int | None = None) -> str:
    """"0.31 (0.27\u20130.35)", "-0.14 (-0.26 to -0.01)": an estimate and its interval, all three
    to the same decimals: the estimate's (``decimals``), but no more than one beyond what the
    interval's width needs (0.000 (-0.093 to 0.072), not 0.00037 (-0.09250 to 0.07206));
    the estimate alone when a bound is missing."""
    if fmt(value) == WITHHELD:
        return WITHHELD
    if fmt(lower) == WITHHELD or fmt(upper) == WITHHELD:
        return fmt(value, digits)
    value, lower, upper = float(value), float(lower), float(upper)
    if digits is None:
        width = abs(upper - lower)
        by_width = decimals(width) + 1 if width >= NOISE else None
        by_value = decimals(value) if abs(value) >= NOISE else None
        digits = min([d for d in (by_value, by_width) if d is not None], default=2)

    def one(x: float) -> str:
        return unsigned_zero(f"{x:,.{digits}f}")
    dash = " to " if min(lower, upper) < 0 else "\u2013"
    return f"{one(value)} ({one(lower)}{dash}{one(upper)})"


def p_words(p: Any) -> str:
    """"p < 0.001", "p = 0.03": a p-value in a sentence."""
    shown = html.unescape(fmt(p, kind="p"))
    return f"p {shown[0]} {shown[1:]}" if shown[0] in "<>" else f"p = {shown}"


NEUTRAL_CELLS = {WITHHELD, "reference", ""}   # say nothing about a column being text or numbers
TEXT_CELL = re.compile(r"^(?![\s<>+\-\u2212\u2264\u2265]*[\d.,])")   # a cell that does not start as a number


def _cells(df: pd.DataFrame, digits: int | None) -> tuple[list[list[str]], list[bool]]:
    """Every cell as the report writes it, and whether each column is text (left-aligned)."""
    kinds = [field_labels.value_format(str(c)) for c in df.columns]
    rows = [[fmt(v, digits, kind) for v, kind in zip(row, kinds)] for row in df.itertuples(index=False)]
    text = [i == 0 or any(r[i] not in NEUTRAL_CELLS and TEXT_CELL.match(html.unescape(r[i])) for r in rows)
            for i in range(len(df.columns))]
    return rows, text


def table_html(df: pd.DataFrame, table_id: str | None = None, digits: int | None = None,
               words: Labels = Labels()) -> str:
    """A table with labelled headers (``pipeline/field_labels.yaml``) and formatted cells
    (``fmt``), text columns left-aligned, in a container that scrolls sideways if a table is
    ever wider than the page (the page itself never does)."""
    rows, text = _cells(df, digits)
    cls = [" class='text'" if t and i else "" for i, t in enumerate(text)]
    head = "".join(f"<th{c}>{html.escape(field_labels.label(str(col), words))}</th>" for col, c in zip(df.columns, cls))
    body = "".join("<tr>" + "".join(f"<td{c}>{v}</td>" for v, c in zip(row, cls)) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<div class='table'><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def table_markdown(df: pd.DataFrame, digits: int | None = None, words: Labels = Labels()) -> str:
    rows, _ = _cells(df, digits)
    lines = ["| " + " | ".join(field_labels.label(str(c), words).replace("|", "\\|") for c in df.columns) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(html.unescape(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def readable(df: pd.DataFrame, words: Labels = Labels()) -> pd.DataFrame:
    """A stage's table for reading: ``variable`` and ``level`` as one ``group`` column
    ("local authority: LA01"), model terms, measures and methods by their labels."""
    out = df.copy()
    if {"variable", "level"} <= set(out.columns):
        order = {v: i for i, v in enumerate(dict.fromkeys(out["variable"]))}
        out = out.iloc[sorted(range(len(out)), key=lambda i: (order[out["variable"].iloc[i]],
                                                               level_key(str(out["level"].iloc[i]))))]
        out.insert(list(out.columns).index("variable"), "group",
                   [field_labels.group(v, lv, words) for v, lv in zip(out["variable"], out["level"])])
        out = out.drop(columns=["variable", "level"])
    for column in ("covariate", "term", "measure", "method"):
        if column in out:
            out[column] = [field_labels.term(v, words) for v in out[column]]
    return out


def with_interval(value: Any, lower: Any, upper: Any, whole: bool) -> Any:
    """"111 (104\u2013117)": a figure with its 95% interval (per-1,000 figures as whole numbers,
    rounded half up; others as ``fmt_interval``); the figure alone when it or a bound is withheld."""
    if any(v is None or pd.isna(v) for v in (value, lower, upper)):
        return value
    if whole:
        return f"{int(value)} ({int(np.floor(lower + 0.5))}\u2013{int(np.floor(upper + 0.5))})"
    return fmt_interval(value, lower, upper)


def error_table(rules: pd.DataFrame, default_rule: str, intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """The first-screen table: each "flag the top k%" rule per 1,000 referrals; the headline
    rule's figures with their 95% intervals (``reports/errors/headline_intervals.csv``) when given."""
    top = rules[rules["kind"] == "top_percent"].copy()
    out = pd.DataFrame({
        "rule": [f"{r} (headline)" if r == default_rule else r for r in top["rule"]],
        "flagged per 1,000": top["flagged_per_1000"],
        "flagged, re-referred (true positives)": top["tp_per_1000"],
        "flagged, not re-referred (false positives)": top["fp_per_1000"],
        "not flagged, re-referred (false negatives)": top["fn_per_1000"],
        "not flagged, not re-referred": top["tn_per_1000"],
        "share of flags that are wrong (1 - PPV)": 1 - top["ppv"],
        "share of re-referred missed (FNR)": top["false_negative_rate"],
        "counts TP / FP / FN / TN": [
            " / ".join(fmt(r[c]) for c in ("tp", "fp", "fn", "tn")) for _, r in top.iterrows()],
    })
    headline = (top["rule"] == default_rule).to_numpy()
    if intervals is None or not len(intervals) or not headline.any():
        return out
    b = intervals.set_index("measure")
    i = out.index[headline][0]
    out = out.astype(object)
    for column, c in zip(out.columns[2:6], ("tp", "fp", "fn", "tn")):
        out.loc[i, column] = with_interval(out.loc[i, column], *b.loc[f"{c}_per_1000", ["lower", "upper"]], whole=True)
    wrong = "share of flags that are wrong (1 - PPV)"
    out.loc[i, wrong] = with_interval(out.loc[i, wrong], 1 - b.loc["ppv", "upper"], 1 - b.loc["ppv", "lower"], whole=False)
    missed = "share of re-referred missed (FNR)"
    out.loc[i, missed] = with_interval(out.loc[i, missed], *b.loc["false_negative_rate", ["lower", "upper"]], whole=False)
    return out


def figures(root: Path, words: Labels = Labels(), units: str = "families", min_count: int | None = None
            ) -> dict[str, str]:
    """The report's figures as data URIs; ``words`` and ``units`` name the outcome and the
    resampled clusters as the input has them; ``min_count`` the disclosure threshold (named
    under the Kaplan-Meier figure's numbers at risk)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    long = read_csv(root / "reports/survival/plot_curves.csv")
    if long.empty:
        return {**out, **_later_figures(root, words, units, plt)}
    curves = wide_form(long, "time_months", "share", ("cumulative_rereport", "cumulative_lower", "cumulative_upper"))
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.fill_between(curves["time_months"], curves["cumulative_lower"], curves["cumulative_upper"], alpha=0.3,
                    label="95% CI")
    ax.plot(curves["time_months"], curves["cumulative_rereport"], label="Kaplan-Meier")
    ax.set(xlabel="months since the episode ended" if words == Labels() else "months since the origin",
           ylabel=f"share with a {words.outcome}", title=f"Cumulative {words.outcome} (1 - Kaplan-Meier)")
    ax.legend()
    if "at_risk" in long:
        at_risk_row(ax, long[long["series"] == "cumulative_rereport"].set_index("time_months")["at_risk"], min_count)
    out["km"] = figure_uri(fig)
    return {**out, **_later_figures(root, words, units, plt)}


def at_risk_row(ax: Any, at_risk: pd.Series, min_count: int | None, every: float = 12) -> None:
    """Numbers at risk under the x axis at each year (a risk table, as R's survminer
    ``risk.table`` or lifelines' ``add_at_risk_counts``): ``at_risk`` indexed by month, from the
    plot table; past the curve's end fewer than ``min_count`` remain and the count is withheld
    (shown as WITHHELD)."""
    end = float(at_risk.index.max())
    ticks = np.arange(0, every * np.ceil(end / every) + every / 2, every)
    counts = [at_risk.get(t) for t in ticks]
    labels = [WITHHELD if c is None or pd.isna(c) or str(c) == "withheld" else f"{int(float(c)):,}" for c in counts]
    ax.set_xticks(ticks)
    ax.set_xlim(0, ticks[-1])
    row = ax.twiny()
    row.set_xlim(ax.get_xlim())
    row.set_xticks(ticks, labels)
    row.xaxis.set_ticks_position("bottom")
    row.xaxis.set_label_position("bottom")
    row.spines["bottom"].set_position(("outward", 36))
    for spine in row.spines.values():
        spine.set_visible(False)
    row.tick_params(axis="x", length=0, labelsize=8)
    withheld = f" ({WITHHELD}: fewer than {min_count}, withheld)" if WITHHELD in labels and min_count else ""
    row.set_xlabel(f"number at risk{withheld}", fontsize=8)


def read_csv(path: Path) -> pd.DataFrame:
    """A stage's table; a file without even a header (a table of nothing) as an empty frame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _later_figures(root: Path, words: Labels, units: str, plt: Any) -> dict[str, str]:
    """The figures after the Kaplan-Meier curve, each drawn only when its table has rows."""
    out = {}
    hr = read_csv(root / "reports/survival/hazard_ratios.csv")
    if not hr.empty:
        out.update(_forest(hr, words, units, plt))
    path = root / "reports/survival/schoenfeld.csv"
    schoenfeld = read_csv(path) if path.exists() else pd.DataFrame()   # (outputs made before it existed)
    if not schoenfeld.empty:
        out.update(_schoenfeld(schoenfeld, hr, plt))
    open_share = read_csv(root / "reports/durations/plot_open_share.csv")
    if not open_share.empty:
        out.update(_durations(wide_form(open_share, "time_months", "open_share"), plt))
    cal = read_csv(root / "reports/calibration/curve.csv")
    dec = read_csv(root / "reports/calibration/deciles.csv")
    if not cal.empty:
        out.update(_calibration(cal, dec, units, plt))
    dca = read_csv(root / "reports/errors/decision_curve.csv")
    fpfn = wide_form(read_csv(root / "reports/errors/plot_fp_fn.csv"), "threshold", "per_1000",
                     ("false_positives_per_1000", "false_negatives_per_1000"))
    if not dca.empty:
        out.update(_decision(dca, fpfn, plt))
    return out


def _forest(hr: pd.DataFrame, words: Labels, units: str, plt: Any) -> dict[str, str]:
    out = {}
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(hr) + 1))
    ypos = np.arange(len(hr))[::-1]
    ax.errorbar(hr["hr"], ypos, xerr=[hr["hr"] - hr["hr_lower"], hr["hr_upper"] - hr["hr"]], fmt="o",
                label=f"estimate, 95% CI (robust, {units} as clusters)")
    if "true_hr" in hr and hr["true_hr"].notna().any():
        ax.plot(hr["true_hr"], ypos, "x", color="C3", label="simulated truth")
    ax.axvline(1, color="grey", lw=0.8)
    ax.set_xscale("log")
    ticks = [t for t in (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8)
             if hr["hr_lower"].min() / 1.2 <= t <= hr["hr_upper"].max() * 1.2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks(ypos, [field_labels.term(c, words) for c in hr["covariate"]])
    ax.set(xlabel="hazard ratio (log scale)", title=f"Cox model of {words.outcome}: hazard ratios")
    ax.legend(loc="lower right", fontsize=8)
    out["forest"] = figure_uri(fig)
    return out


def _schoenfeld(table: pd.DataFrame, hr: pd.DataFrame, plt: Any) -> dict[str, str]:
    """One figure per flagged term, as R's plot(cox.zph(fit)): beta(t) smoothed with its band,
    binned means of the scaled residuals (no individual residual), the Cox estimate."""
    out = {}
    coef = dict(zip(hr["covariate"], hr["coef"])) if "coef" in hr else {}
    for term, rows in table.groupby("term", sort=False):
        curve, bins = rows[rows["part"] == "curve"], rows[rows["part"] == "bin"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.fill_between(curve["time_km"], curve["lower"], curve["upper"], alpha=0.3, label="band (2 SE, as R)")
        ax.plot(curve["time_km"], curve["smooth"], label="smoothed beta(t)")
        ax.plot(bins["time_km"], bins["scaled_residual"], "o", label="mean scaled residual, binned events")
        if term in coef:
            ax.axhline(coef[term], ls="--", color="C3", lw=1, label="Cox estimate (an average over time)")
        ax.axhline(0, color="grey", lw=0.8)
        ticks = curve.iloc[np.linspace(0, len(curve) - 1, min(6, len(curve))).astype(int)]
        ax.set_xticks(ticks["time_km"], [f"{m:.1f}" for m in ticks["time_months"]])
        ax.set(xlabel="months since the origin (spaced as 1 - Kaplan-Meier)", ylabel="log hazard ratio",
               title=f"Does the hazard ratio for {field_labels.term(term)} change over follow-up?")
        ax.legend(fontsize=8)
        out[f"schoenfeld:{term}"] = figure_uri(fig)
    return out


def ph_section(surv: dict[str, Any], ph: pd.DataFrame, figs: dict[str, str]) -> str:
    """The Cox fits' warnings, then the proportional-hazards check: a scaled-Schoenfeld figure
    per flagged term, or one sentence when none is flagged."""
    warned = surv.get("warnings", [])
    parts = [("<p class='warning'><strong>Model warnings</strong> (a coefficient that may be infinite has no "
              "finite estimate: its hazard ratio and interval are not to be read):</p><ul>"
              + "".join(f"<li>{html.escape(w['model'].replace('_', ' '))}: {html.escape(w['message'])}</li>"
                        for w in warned) + "</ul>") if warned else ""]
    if ph.empty:
        return parts[0] + not_estimated(surv, "ph_tests")
    flagged = [k for k in figs if k.startswith("schoenfeld:")]
    if flagged:
        parts.append("<h3>Hazard ratios that change over follow-up (scaled Schoenfeld residuals)</h3>"
                     "<p>Each flagged term (the global test rejects and the term's Holm-adjusted test does): its "
                     "log hazard ratio over follow-up, smoothed as R's <code>plot(cox.zph(fit))</code>; the Cox "
                     "estimate is its average. Points are means of bins of at least the disclosure threshold of "
                     "events; no individual residual is shown.</p>")
        # (the alt text names the term as the model does: pipeline/outputs.yaml names the figure by it)
        parts += [image(figs, key, f"Scaled Schoenfeld residuals for {key.split(':', 1)[1]}") for key in flagged]
    else:
        parts.append("<p>No term flagged: the proportional-hazards tests (global test first, then each term "
                     "after Holm's adjustment) give no evidence that a hazard ratio changes over follow-up, so no "
                     "scaled-Schoenfeld plot is drawn (reports/survival/ph_tests.csv).</p>")
    return "".join(parts)


# Each series its own line style, so that one lying on another (all plans and first plans,
# nine in ten plans being first plans) still shows: drawn widest first, narrower on top.
PLAN_SERIES_STYLE = {
    "all_plans": {"color": "0.55", "lw": 5, "ls": "-", "zorder": 1},
    "first_plans": {"color": "C0", "lw": 1.6, "ls": "--", "zorder": 2},
    "repeat_plans": {"color": "C3", "lw": 1.4, "ls": ":", "marker": "o", "markevery": 6, "ms": 3.5, "zorder": 3},
}


def _durations(open_share: pd.DataFrame, plt: Any) -> dict[str, str]:
    out = {}
    fig, ax = plt.subplots(figsize=(7, 4))   # (no rows when the input has no plans: the section says so instead)
    for col in [c for c in open_share.columns if c != "time_months"]:
        ax.plot(open_share["time_months"], open_share[col], label=field_labels.label(col),
                **PLAN_SERIES_STYLE.get(col, {}))
    ax.set(xlabel="months since the plan started", ylabel=field_labels.label("open_share"),
           title="Child protection plans still open")
    ax.legend(title="Kaplan-Meier", fontsize=8)
    out["durations"] = figure_uri(fig)
    return out


def _calibration(cal: pd.DataFrame, dec: pd.DataFrame, units: str, plt: Any) -> dict[str, str]:
    out = {}
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if "lower" in cal:
        ax.fill_between(cal["predicted"], cal["lower"], cal["upper"], alpha=0.3, label=f"95% band ({units} resampled)")
    ax.plot(cal["predicted"], cal["observed"], label="lowess calibration curve")
    ax.plot(dec["mean_predicted"], dec["observed_rate"], "o", label="tenths of predicted risk")
    lim = [0, float(np.nanmax([cal["predicted"].max(), cal["observed"].max(), dec["observed_rate"].max()])) * 1.05]
    ax.plot(lim, lim, "--", color="grey", label="ideal")
    ax.set(xlim=lim, ylim=lim, xlabel="predicted risk", ylabel="observed risk",
           title="Calibration on validation data")
    ax.legend(fontsize=8)
    out["calibration"] = figure_uri(fig)
    return out


def _decision(dca: pd.DataFrame, fpfn: pd.DataFrame, plt: Any) -> dict[str, str]:
    out = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(dca["threshold"], dca["net_benefit_model"], label="model")
    ax.plot(dca["threshold"], dca["net_benefit_flag_all"], label="flag all")
    ax.plot(dca["threshold"], dca["net_benefit_flag_none"], label="flag none")
    ax.set_ylim(min(-0.05, float(dca["net_benefit_model"].min())), float(dca["net_benefit_flag_all"].max()) * 1.1)
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve")
    ax.legend()
    out["decision"] = figure_uri(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(fpfn["threshold"], fpfn["false_positives_per_1000"], "o-", label="false positives per 1,000")
    ax.plot(fpfn["threshold"], fpfn["false_negatives_per_1000"], "o-", label="false negatives per 1,000")
    ax.set(xlabel="flag when predicted risk is at least", ylabel="per 1,000 referrals",
           title="The threshold trades false positives for false negatives")
    ax.legend()
    out["fp_fn"] = figure_uri(fig)
    return out


def provenance(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Which code and parameters made these outputs, as git object ids; dvc.lock hashes.

    The report is itself an output, so it names the *content* it was built from, not the
    commit checked out: the git tree of ``pipeline/`` and the blobs of ``params.yaml`` and
    ``dvc.yaml`` as they were on disk (committed or not). The same content gives the same
    ids in every clone, so a rebuilt report is byte-identical and ``dvc.lock`` stays put
    across commits; ``git log --all --find-object=<id>`` names the commit that introduced it.
    """
    import os
    import tempfile

    def git(*args: str, env: dict[str, str] | None = None) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60,
                                  env=env).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    code = {"pipeline/": "", "params.yaml": "", "dvc.yaml": ""}
    if git("rev-parse", "--is-inside-work-tree") == "true":
        prefix = git("rev-parse", "--show-prefix")      # the project may sit inside a larger repository
        with tempfile.TemporaryDirectory() as tmp:      # a scratch index: the real one is untouched
            env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
            git("add", "--", *code, env=env)
            tree = git("write-tree", env=env)
            if tree:
                code = {path: git("rev-parse", "--verify", "--quiet", f"{tree}:{prefix}{path.rstrip('/')}")
                        for path in code}
    hashes = []
    lock = root / "dvc.lock"
    if lock.exists():
        for stage, entry in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).items():
            if stage in ("report", "outputs"):   # its own previous outputs, and the bundle made from it: not inputs
                continue
            for out in entry.get("outs", []):
                hashes.append({"stage": stage, "output": out["path"], "md5": out.get("md5", "")})
    return {"code": code, "hashes": pd.DataFrame(hashes),
            "params_sha256": hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()}


SOURCE_WORDS = {
    "synthetic": "the embedded synthetic extract (simulate stage)",
    "extract": "a case-level three-table extract (children, referrals, plans)",
    "cin_census": "England's Children in Need census returns (read by pipeline/formats/cin_census.py)",
    "ncands": "the US NCANDS Child File (read by pipeline/formats/ncands.py)",
    "analysis_table": "a prepared one-row-per-subject survival table",
}


UNIT_PLURALS = {"family": "families", "child": "children", "subject": "subjects", "cluster": "clusters"}


def image(figs: dict[str, str], key: str, alt: str) -> str:
    """The figure as an <img>, or nothing when its table had no rows."""
    return f"<img alt='{html.escape(alt)}' src='{figs[key]}'>" if key in figs else ""


def not_estimated(stage_metrics: dict[str, Any], part: str) -> str:
    """"Could not be estimated: <reason>" for a part the stage's metrics say it could not estimate."""
    reason = stage_metrics.get("not_estimated", {}).get(part)
    return (f"<p class='not-estimated'><strong>{html.escape(part.replace('_', ' ').capitalize())} could not be "
            f"estimated:</strong> {html.escape(str(reason))}.</p>" if reason else "")


FLOOR_MEASURES = {"ici": "ICI", "e90": "E90"}
# What the calibration-curve measures are (Austin and Steyerberg 2019), said once in the hierarchy table.
MEASURE_DEFINITIONS = {"eavg": "mean absolute difference between the calibration curve and the diagonal",
                       "e50": "its median", "e90": "its 90th percentile", "emax": "its largest"}


def with_intervals(df: pd.DataFrame, digits: int | None = None, rename: bool = False, words: Labels = Labels(),
                   floor_values: bool = True) -> pd.DataFrame:
    """A table for reading: each estimate ``m`` with ``m_lower`` and ``m_upper`` as one
    column, "value (lower-upper)" (``fmt_interval``; headed "<label> (95% CI)" with
    ``rename``); each noise floor as "median / 95th percentile" and its reading as within /
    beyond (the text above the table says what they mean; without ``floor_values`` only the
    reading)."""
    out = df.copy()
    combined = {}
    for m in [c[:-len("_lower")] for c in df.columns if c.endswith("_lower") and c[:-len("_lower")] in df]:
        out[m] = [fmt_interval(v, lo, hi, digits) for v, lo, hi in zip(df[m], df[f"{m}_lower"], df[f"{m}_upper"])]
        out = out.drop(columns=[f"{m}_lower", f"{m}_upper"])
        combined[m] = field_labels.label(m, words, note="95% CI")
    for m, name in FLOOR_MEASURES.items():
        if f"{m}_floor_p95" in df:
            if floor_values:
                out[f"{name} floor (median / 95th)"] = [WITHHELD if fmt(a) == WITHHELD else f"{fmt(a, digits)} / {fmt(b, digits)}"
                                                       for a, b in zip(df[f"{m}_floor_p50"], df[f"{m}_floor_p95"])]
            out[f"{name} vs floor"] = [str(r).split(" ")[0] if isinstance(r, str) else WITHHELD for r in df[f"{m}_reading"]]
            out = out.drop(columns=[f"{m}_floor_p50", f"{m}_floor_p95", f"{m}_reading"])
    return out.rename(columns=combined) if rename else out


def beyond_floor(rows: pd.DataFrame, name: Any) -> list[str]:
    """One sentence per row (a subgroup, a horizon) whose ICI or E90 is beyond its noise
    floor; ``name(row)`` says which row it is."""
    sentences = []
    for _, r in rows.iterrows():
        beyond = [m for m in FLOOR_MEASURES if str(r.get(f"{m}_reading", "")).startswith("beyond")]
        if beyond:
            values = " and ".join(f"{FLOOR_MEASURES[m]} {fmt(r[m], 4)}" for m in beyond)
            floors = " and ".join(fmt(r[f"{m}_floor_p95"], 4) for m in beyond)
            sentences.append(f"{name(r)[:1].upper()}{name(r)[1:]}: {values} {'are' if len(beyond) > 1 else 'is'} beyond what a perfectly "
                             f"calibrated model shows at this size (95th percentile {floors}).")
    return sentences


def floor_sentences(validation: dict[str, Any], subgroups: pd.DataFrame, cox: pd.DataFrame) -> list[str]:
    """The noise floor in words: the validation ICI and E90 against it, then a sentence
    per subgroup or Cox horizon beyond its floor (or that none is)."""
    floor = validation.get("noise_floor", {})
    if not floor:
        return []
    parts = [f"{FLOOR_MEASURES[m]} {fmt(validation.get('eavg' if m == 'ici' else m), 4)} is {floor[m]['reading']} "
             f"(a perfectly calibrated model scored the same way: median {fmt(floor[m]['floor_p50'], 4)}, "
             f"95th percentile {fmt(floor[m]['floor_p95'], 4)})" for m in FLOOR_MEASURES if m in floor]
    groups = beyond_floor(subgroups, lambda r: f"{field_labels.label(r['variable'])} "
                                               f"{field_labels.level(r['variable'], r['level'])}") + beyond_floor(
        cox, lambda r: f"Cox model at {float(r['horizon_months']):g} months")
    return [f"Noise floor (outcomes drawn from the predictions themselves): {'; '.join(parts)}. The floor is a "
            f"reference for reading ICI and E90, not a correction to them; their bootstrap intervals carry the same "
            f"noise, so near the floor they can lie above the estimate.",
            " ".join(groups) if groups else ("Every subgroup's and Cox horizon's ICI and E90 are within what a "
                                             "perfectly calibrated model shows at its size.")]


def cluster_word(params: dict[str, Any], clean: dict[str, Any]) -> str:
    """What the robust variance and every resampling treat as independent units."""
    if params["input"]["source"] == "analysis_table":
        return "cluster" if params["input"]["analysis_table"].get("cluster") else "subject"
    return "child" if str(clean.get("cluster", "family")).startswith("child") else "family"


def strata_words(params: dict[str, Any], surv: dict[str, Any]) -> str:
    strata = (params["input"]["analysis_table"].get("strata") if params["input"]["source"] == "analysis_table"
              else params["survival"].get("strata"))
    return f"baseline hazard per {field_labels.label(strata)}" if strata else "no strata"


def source_statement(params: dict[str, Any], clean: dict[str, Any], epi: dict[str, Any], logi: dict[str, Any],
                     surv: dict[str, Any]) -> str:
    """The input route and what it lacks, said where a reader looks first."""
    source = params["input"]["source"]
    items = [f"Input: {SOURCE_WORDS.get(source, source)}."]
    unit = cluster_word(params, clean)
    if unit in ("child", "subject"):
        items.append(f"The input has no family (cluster) identifier: robust standard errors, bootstrap replicates "
                     f"and validation splits treat each {unit} as independent.")
    not_recorded = sorted(set(clean.get("not_recorded", [])) | set(surv.get("covariates_not_recorded_in_this_input", []))
                          | set(logi.get("covariates_not_recorded_in_this_input", [])))
    if not_recorded:
        items.append("Not recorded in this input, so left out of every model (never counted as absent): "
                     + ", ".join(not_recorded) + ".")
    if surv.get("reference_profiles_dropped"):
        items.append("Reference profiles that need an unrecorded factor were not drawn: "
                     + ", ".join(surv["reference_profiles_dropped"]) + ".")
    counts = epi.get("counts", {})
    if counts.get("duration_unit"):
        items.append(f"Durations were given in {counts['duration_unit']} and are converted to days "
                     "(a month is 365.25 / 12 days).")
    if logi.get("split", {}).get("note"):
        items.append(logi["split"]["note"].capitalize() + ".")
    adapter = clean.get("adapter", {})
    items.extend(str(statement) for statement in adapter.get("statements", []))
    for kind, c in (adapter.get("records") or {}).items():
        shown = {k: c[k] for k in ("records_in", "kept", "rejected", "merged", "conflicts") if k in c}
        if shown:
            items.append(f"Source {kind} ({SOURCE_WORDS.get(source, source).split(' (')[0]}): "
                         + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in shown.items())
                         + " (records in = kept + rejected + merged: a record repeated in another file is merged).")
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def banded_section(root: Path) -> str:
    """Planner table from ``reports/durations/banded_estimates.csv``: per LA and year, pooled rows,
    shares ending in each band, Turnbull shares still open, Weibull median (95% CI), flags."""
    path = root / "reports/durations/banded_estimates.csv"
    est = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if est.empty or "basis" not in est:
        return "<p>No banded counts in this input.</p>"
    count = "published_plans_ended" if "published_plans_ended" in est else "plans_ended"

    def bounded(r: pd.Series, col: str) -> str:
        point, low, high = r.get(col), r.get(f"{col}_low"), r.get(f"{col}_high")
        if pd.notna(point) or pd.isna(low):
            return fmt(point)
        digits = max(decimals(float(low)), decimals(float(high))) if float(low) and float(high) else 2
        return f"{fmt(low, digits)}\u2013{fmt(high, digits)}"

    shares = [c for c in est.columns if c.startswith("share_")]
    opens = [c for c in est.columns if c.startswith("turnbull_open_at_") and not c.endswith(("_low", "_high"))]
    rows = []
    for _, r in est.iterrows():
        name = r.get("la_name")
        row = {"LA": r["la_code"] if r["la_code"] == "all" or pd.isna(name) or not str(name).strip()
               else f"{name} ({r['la_code']})",
               "year": r["year"] if r["basis"] == "year" else f"pooled ({r['years']})",
               "plans ended": r[count]}
        row.update({c.replace("share_", "ended ").replace("_", " "): r[c] for c in shares})
        row.update({c.replace("turnbull_open_at_", "still open at "): bounded(r, c) for c in opens})
        median = ("weibull_median", "weibull_median_days")
        point, lower, upper = (r.get(c) for c in (median[1], "weibull_median_lower95", "weibull_median_upper95"))
        row["Weibull median days (95% CI)"] = (
            fmt_interval(point, lower, upper) if pd.notna(point) else
            f"{bounded(r.rename({median[1]: median[0]}), median[0])} ({fmt(lower)}\u2013{fmt(upper)})"
            if pd.notna(lower) else bounded(r.rename({median[1]: median[0]}), median[0]))
        row["flags"] = r["status"]
        rows.append(row)
    source = ("DfE's published counts (public: shown as published, not suppressed again)" if count ==
              "published_plans_ended" else "bands built from the extract's plans (counts below the threshold withheld)")
    return (f"<p>From {source}. Each band is an interval-censored observation: the Turnbull shares still open are "
            f"exact at the band edges; the Weibull median is from an interval-censored Weibull fit. Rows marked "
            f"pooled add an LA's counts over the years listed (same length distribution assumed each year). Where "
            f"DfE shows a marker instead of a count, values are bounds (low\u2013high) from the published total."
            f"</p>{table_html(pd.DataFrame(rows))}")


def outcome_figures(epi: dict[str, Any], surv: dict[str, Any], err: dict[str, Any], cal: dict[str, Any],
                    words: Labels) -> pd.DataFrame:
    """The "re-referred within a year" figures the stages give (25.5%, 29.3%, 30.0% and 22.6% on
    the default), side by side with what each counts, so readers see why they differ."""
    def share(value: Any) -> str:
        return WITHHELD if value is None else f"{100 * float(value):.1f}%"

    rows = []
    dfe = epi.get("dfe_rereferral_within_12_months")
    if dfe:
        rows.append(("DfE's published measure", share(dfe.get("share")),
                     "of the referrals in the final 12 months, the share within 12 months of the child's previous "
                     "one: backward-looking, counts referrals not children's risk"))
    km = surv.get("cumulative_rereport", {}).get("12_months")
    if km is not None:
        rows.append(("1 - Kaplan-Meier at 12 months (all index episodes)", share(km),
                     "entering care and turning 18 censored: the risk if no child ever left that way (overstates)"))
    aj = surv.get("cumulative_incidence", {}).get("12_months")
    if aj is not None:
        rows.append(("Aalen-Johansen at 12 months (all index episodes)", share(aj),
                     "entering care or turning 18 first counts as not re-referred: the project's observed risk"))
    cox12 = cal.get("cox", {}).get("12_months", {})
    if cox12.get("mean_observed") is not None:
        rows.append(("Aalen-Johansen at 12 months (validation families)", share(cox12["mean_observed"]),
                     "the same definition on the later families the models are judged on"))
    head = err.get("at_default_rule", {})
    events = head.get("events_per_1000")
    if events is not None:
        interval = (f" (95% CI {share(head['events_per_1000_lower'] / 1000)}-{share(head['events_per_1000_upper'] / 1000)})"
                    if head.get("events_per_1000_lower") is not None and head.get("events_per_1000_upper") is not None
                    else "")
        rows.append((f"headline: {words.outcome} within {float(err.get('horizon_days', 0)):g} days (validation)",
                     share(events / 1000) + interval,
                     "the same definition, among validation rows with the whole horizon of possible follow-up "
                     "(later cohorts; per 1,000 rounded)"))
    return pd.DataFrame(rows, columns=["figure", "value", "what it counts"])


def cohort_sentences(params: dict[str, Any], counts: dict[str, Any], logi: dict[str, Any], words: Labels,
                     unit: str) -> list[str]:
    """The cohort in sentences: who was analysed, the logistic outcome and how rows were
    split (from ``metrics/episodes.json`` and ``metrics/logistic.json``)."""
    def n(value: Any) -> str:
        return html.unescape(fmt(value, kind="count"))

    units = UNIT_PLURALS[unit]
    out = []
    if params["input"]["source"] != "analysis_table":
        out.append(f"After cleaning, {n(counts.get('referrals'))} referrals; {n(counts.get('index_referrals'))} index "
                   f"referrals (one per episode) in the survival analysis, {n(counts.get('events'))} of them followed "
                   f"by a {words.outcome} before the extract date.")
    else:
        out.append(f"{n(counts.get('index_referrals'))} {words.subjects} in {n(counts.get('clusters'))} {units} in the "
                   f"survival analysis; {n(counts.get('events'))} with a {words.outcome} observed.")
    outcome, horizon = logi.get("outcome", {}), logi.get("horizon_days")
    if horizon is not None:
        known = (f"; {n(outcome['kept'])} of {n(outcome['rows'])} have a known status at {float(horizon):g} days"
                 if "kept" in outcome and "rows" in outcome else "")
        handling = f" ({outcome['handling']})" if outcome.get("handling") else ""
        out.append(f"The logistic model's outcome: a {words.outcome} within {float(horizon):g} days of the "
                   f"episode's end{known}{handling}.")
    split, dev, val = logi.get("split", {}), logi.get("development", {}), logi.get("validation", {})
    method = split.get("method")

    def side(rows: Any, families: Any, events: Any) -> str:
        return (f"{n(rows)} rows ({n(families)} {units}; {n(events)} with a {words.outcome})")

    if method == "temporal" and "development_rows" in split:
        left = split.get("left_out_rows_of_development_families_after_cutoff")
        out.append(f"Split in time at {split.get('cutoff')}: development {side(split['development_rows'], split.get('development_families'), dev.get('events'))} "
                   f"dated before it; validation {side(split.get('validation_rows'), split.get('validation_families'), val.get('events'))} "
                   f"first seen on or after it"
                   + (f"; {n(left)} later rows of development {units} left out, so that no {unit} is on both sides" if left else "")
                   + ".")
    elif method == "random_clusters" and "development_rows" in split:
        out.append(f"A seeded random {float(split.get('validation_share', 0)):.0%} of {units} validate: development "
                   f"{side(split['development_rows'], split.get('development_families'), dev.get('events'))}; validation "
                   f"{side(split.get('validation_rows'), split.get('validation_families'), val.get('events'))}.")
    elif method == "grouped_kfold" and "rows" in split:
        out.append(f"Out-of-fold validation: {split.get('folds')} folds of whole {units}; each of the {n(split['rows'])} "
                   f"rows ({n(split.get('families'))} {units}) is predicted by the model fitted without its {unit}.")
    elif method:
        out.append(f"Validation split: {str(method).replace('_', ' ')}.")
    return out


TABLE_ONE_GROUPS = ("all", "development", "validation", "outcome", "no_outcome")


def table_one_frame(table1: pd.DataFrame, words: Labels = Labels(), horizon_days: Any = None) -> pd.DataFrame:
    """Table 1 for reading (from ``reports/logistic/table1.csv``, ``pipeline/table_one.py``):
    a row per characteristic (a categorical one: a heading row, then a row per level), a
    column per group headed with its size; "n (%)" and "median (lower-upper quartile)"."""
    if table1.empty:
        return pd.DataFrame()
    groups = [g for g in dict.fromkeys(table1["group"]) if g]
    sizes = table1[table1["variable"] == "rows"].set_index("group")["n"]
    within = {"outcome": f"{words.outcome} within {float(horizon_days):g} days",
              "no_outcome": f"no {words.outcome} within {float(horizon_days):g} days"} if horizon_days is not None else {}

    def head(g: str) -> str:
        return f"{within.get(g) or field_labels.level('group', g, words)}, n = {html.unescape(fmt(sizes.get(g), kind='count'))}"

    def count(r: pd.Series) -> str:
        return WITHHELD if pd.isna(r["n"]) else f"{float(r['n']):,.0f} ({float(r['percent']):.1f}%)"

    def median(r: pd.Series) -> str:
        values = [r["median"], r["lower_quartile"], r["upper_quartile"]]
        whole = all(pd.notna(x) and float(x).is_integer() for x in values)
        return html.unescape(fmt_interval(*values, digits=0 if whole else 1))

    cells = table1.set_index(["variable", "level", "group"])
    rows: list[dict[str, str]] = []

    def add(name: str, variable: str | None, level: str | None, how: Any) -> None:
        rows.append({"characteristic": name, **{head(g): (how(cells.loc[(variable, level, g)])
                                                          if variable is not None and (variable, level, g) in cells.index
                                                          else "") for g in groups}})

    for variable in [v for v in dict.fromkeys(table1["variable"]) if v != "rows"]:
        part = table1[(table1["variable"] == variable) & (table1["group"] == groups[0])]
        name = field_labels.label(variable, words)
        levels = list(part["level"])
        if "recorded" in levels:
            add(f"{name}, median (IQR)", variable, "recorded", median)
        elif set(levels) - {"missing"} == {"0", "1"}:    # a factor: the row with it
            add(f"{name}, n (%)", variable, "1", count)
        else:
            add(f"{name}, n (%)", None, None, None)
            for level in levels:
                if level != "missing":
                    add(f"\u2003{field_labels.level(variable, level, words)}", variable, level, count)
        if "missing" in levels:
            add(f"\u2003{field_labels.level(variable, 'missing', words)}", variable, "missing", count)
    return pd.DataFrame(rows)


def table_one_html(frame: pd.DataFrame, min_count: int, unit: str) -> str:
    """Table 1 under its heading, with what its cells mean."""
    if frame.empty:
        return ""
    return ("<h3>Table 1: characteristics of the rows the logistic model used</h3>"
            f"<p>By split (development, validation) and by outcome at the horizon. n (%) of the column's rows; "
            f"median (IQR: lower\u2013upper quartile). {WITHHELD}: fewer than {min_count}, or a count that would "
            f"give one away by subtraction (withheld with it). A {unit} may have several rows.</p>" + table_html(frame, "table-one"))


def group_error_table(by_group: pd.DataFrame, words: Labels = Labels()) -> pd.DataFrame:
    """Error rates by group at the headline rule for reading: each with its 95% interval in
    one column, the differences and ratios against the reference group ("reference" on its
    own row)."""
    keep = [c for m in ("variable", "level", "n", "false_negative_rate", "false_positive_rate", "ppv",
                        "false_negative_rate_difference", "false_positive_rate_ratio")
            for c in (m, f"{m}_lower", f"{m}_upper") if c in by_group and (c == m or m not in ("variable", "level", "n"))]
    out = with_intervals(by_group[keep], rename=True, words=words)
    if "reference_level" in by_group and len(by_group):
        reference = (by_group["level"].astype(str) == by_group["reference_level"].astype(str)).to_numpy()
        for column in out.columns:
            if column.startswith((field_labels.label("false_negative_rate_difference", words),
                                  field_labels.label("false_positive_rate_ratio", words))):
                out.loc[reference, column] = "reference"
    return readable(out, words)


RILEY_CRITERIA = {
    "shrinkage": "expected uniform shrinkage at least 0.9 (little overfitting)",
    "optimism_r2": "apparent Nagelkerke R\u00b2 at most 0.05 above the adjusted",
    "intercept": "overall risk estimated to within \u00b10.05",
}


def sample_size_html(logi: dict[str, Any], words: Labels = Labels()) -> str:
    """Riley et al.'s minimum development size in words, and a row per criterion."""
    size, dev = logi.get("sample_size", {}), logi.get("development", {})
    if not size:
        return not_estimated(logi, "logistic_model") or "<p>No sample-size calculation (no model was fitted).</p>"
    criteria = pd.DataFrame([(RILEY_CRITERIA.get(k, k.replace("_", " ")), v) for k, v in size.get("criteria", {}).items()],
                            columns=["criterion (Riley et al. 2020)", "rows needed"])
    return (f"<p>The development data need at least {fmt(size.get('riley_minimum_n'), kind='count')} rows: the "
            f"largest of the three criteria below, for {fmt(dev.get('parameters'), kind='count')} model parameters, "
            f"an outcome share of {fmt(dev.get('event_rate'))} and the development model's own Cox-Snell "
            f"R\u00b2 of {fmt(dev.get('r2_cox_snell'))}. They have {fmt(dev.get('n'), kind='count')} rows "
            f"({fmt(dev.get('events'), kind='count')} with a {html.escape(words.outcome)}; "
            f"{fmt(dev.get('events_per_parameter'))} per parameter): "
            f"<strong>{'adequate' if size.get('adequate') else 'NOT adequate'}</strong>.</p>"
            + table_html(criteria))


# Which stage, module, function and files made each section's numbers: the footer of each
# section (tests/test_report_reading.py checks that each function exists in its module and
# each file after a run). Section id -> (stage, module, function, files) entries.
MADE_BY: dict[str, list[tuple[str, str, str, list[str]]]] = {
    "how-often-wrong": [("errors", "pipeline/errors.py", "run",
                         ["reports/errors/headline.txt", "reports/errors/rules.csv", "reports/errors/default_rule.json",
                          "metrics/errors.json"]),
                        ("errors", "pipeline/headline_bootstrap.py", "percentile_intervals",
                         ["reports/errors/headline_intervals.csv"])],
    "data": [("clean", "pipeline/clean.py", "clean_extract", ["metrics/clean.json"])],
    "cohort": [("episodes", "pipeline/derive.py", "derive_rereport", ["metrics/episodes.json"]),
               ("logistic", "pipeline/table_one.py", "describe_split",
                ["reports/logistic/table1.csv", "metrics/logistic.json"])],
    "km": [("survival", "pipeline/survival.py", "plot_curves", ["reports/survival/plot_curves.csv"])],
    "hazard-ratios": [("survival", "pipeline/survival.py", "hazard_ratio_table",
                       ["reports/survival/hazard_ratios.csv", "reports/survival/frailty_hazard_ratios.csv",
                        "reports/survival/ph_tests.csv", "metrics/survival.json"])],
    "durations": [("durations", "pipeline/durations.py", "planner_tables",
                   ["reports/durations/planner_summary.csv", "reports/durations/plot_open_share.csv"])],
    "banded-durations": [("durations", "pipeline/durations.py", "banded_estimates",
                          ["reports/durations/banded_estimates.csv"])],
    "odds-ratios": [("logistic", "pipeline/logistic.py", "fit_logit", ["reports/logistic/odds_ratios.csv"])],
    "calibration": [("calibration", "pipeline/calibration.py", "logistic_calibration",
                     ["reports/calibration/curve.csv", "reports/calibration/deciles.csv",
                      "reports/calibration/optimism.csv", "reports/calibration/recalibration.csv",
                      "metrics/calibration.json"]),
                    ("calibration", "pipeline/calibration.py", "cox_calibration",
                     ["reports/calibration/cox_calibration.csv"])],
    "subgroups": [("calibration", "pipeline/calibration.py", "subgroup_calibration",
                   ["reports/calibration/subgroups.csv"]),
                  ("errors", "pipeline/errors.py", "group_rates", ["reports/errors/by_group.csv"])],
    "decision-curve": [("errors", "pipeline/errors.py", "decision_curve",
                        ["reports/errors/decision_curve.csv", "reports/errors/plot_fp_fn.csv",
                         "reports/errors/survival_ipcw.csv"])],
    "sample-size": [("logistic", "pipeline/samplesize.py", "riley_binary", ["metrics/logistic.json"])],
    "tripod": [("report", "pipeline/report.py", "TRIPOD_AI", [])],
    "limitations": [("report", "pipeline/report.py", "build", [])],
    "reproducibility": [("report", "pipeline/report.py", "provenance", ["dvc.lock"]),
                        ("report", "pipeline/environment.py", "describe", ["metrics/environment.json"])],
}


def made_by_html(section: str) -> str:
    """The section's footer: "made by: stage `x` (`pipeline/x.py`, `function`) -> files"."""
    entries = MADE_BY.get(section, [])
    if not entries:
        return ""
    parts = [f"stage <code>{stage}</code> (<code>{module}</code>, <code>{function}</code>)"
             + (" \u2192 " + ", ".join(f"<code>{f}</code>" for f in files) if files else "")
             for stage, module, function, files in entries]
    return f"<p class='made-by'>made by: {'; '.join(parts)}</p>"


def build(root: Path, params: dict[str, Any]) -> tuple[str, str]:
    """(report.html, summary.md) from the pipeline's outputs under ``root``."""
    def metrics(name: str) -> dict[str, Any]:
        path = root / "metrics" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def csv(rel: str) -> pd.DataFrame:
        return read_csv(root / rel)

    headline_file = root / "reports/errors/headline.txt"
    headline = headline_file.read_text(encoding="utf-8").strip() if headline_file.exists() else ""
    rule_file = root / "reports/errors/default_rule.json"
    err, cal, logi, epi, clean, surv = (metrics(n) for n in ("errors", "calibration", "logistic", "episodes", "clean",
                                                             "survival"))
    err["at_default_rule"] = json.loads(rule_file.read_text()) if rule_file.exists() else {}
    synthetic = params["input"]["source"] == "synthetic"
    words = labels(params)
    source = source_statement(params, clean, epi, logi, surv)
    min_count = int(params["disclosure"]["min_cell_count"])
    rules = csv("reports/errors/rules.csv")
    prov = provenance(root, params)
    software = environment.describe(root)
    as_locked = ("installed as requirements.lock pins" if software["lock"]["installed_as_locked"] else
                 "NOT as requirements.lock pins: " + "; ".join(software["lock"]["differences"]))
    interval_path = root / "reports/errors/headline_intervals.csv"
    intervals = read_csv(interval_path) if interval_path.exists() else None
    first = error_table(rules, err["default_rule"], intervals)
    notice = ("<p class='notice'><strong>Synthetic data.</strong> These results come from the pipeline's embedded "
              "synthetic extract (England-like, generated from a seed), not from any real children. They show what "
              "the pipeline reports; they say nothing about real families.</p>" if synthetic else "")
    v = cal.get("validation", {})

    def estimate(key: str) -> str:
        return fmt_interval(v.get(key), v.get(f"{key}_lower"), v.get(f"{key}_upper"))

    hierarchy = pd.DataFrame([
        ("mean", field_labels.label("observed_expected"), estimate("observed_expected"), "1"),
        ("mean", field_labels.label("citl"), estimate("citl"), "0"),
        ("weak", field_labels.label("slope"), estimate("slope"), "1"),
        *(("moderate", f"{field_labels.label(key)} ({MEASURE_DEFINITIONS[key]})", estimate(key), "0")
          for key in ("eavg", "e50", "e90", "emax")),
        ("discrimination", field_labels.label("c"), estimate("c"), "1"),
        ("overall", field_labels.label("brier"), estimate("brier"), f"scaled {fmt(v.get('scaled_brier'))}"),
        ("mean", field_labels.label("spiegelhalter_z"), estimate("spiegelhalter_z"),
         html.unescape(p_words(v.get("spiegelhalter_p")))),
    ], columns=["level (Van Calster 2016)", "measure", "value (95% interval)", "ideal / note"])
    reconciliation = pd.DataFrame([{"table": t, "rows in": d["rows_in"], "kept": d["rows_kept"],
                                    "rejected": d["rows_rejected"]} for t, d in clean.get("tables", {}).items()])
    reasons = pd.DataFrame([{"table": t, "reason": field_labels.level("reason", r), "rows": n}
                            for t, d in clean.get("tables", {}).items() for r, n in d.get("rejected_by_reason", {}).items()])
    counts = epi.get("counts", {})
    unit = cluster_word(params, clean)
    units = UNIT_PLURALS[unit]
    figs = figures(root, words, units, min_count)
    cohort = cohort_sentences(params, counts, logi, words, unit)
    table1_path = root / "reports/logistic/table1.csv"
    table1 = table_one_frame(read_csv(table1_path) if table1_path.exists() else pd.DataFrame(), words,
                             logi.get("horizon_days"))
    figures_table = outcome_figures(epi, surv, err, cal, words)
    hr = csv("reports/survival/hazard_ratios.csv")
    hr_shown = readable(with_intervals(hr[[c for c in ("covariate", "hr", "hr_lower", "hr_upper", "p", "true_hr") if c in hr]],
                                       rename=True), words)
    frailty_html = not_estimated(surv, "frailty")
    if surv.get("frailty"):   # the shared-frailty model's hazard ratios beside the Cox model's
        frailty = csv("reports/survival/frailty_hazard_ratios.csv").merge(
            hr[["covariate", "hr"]].rename(columns={"hr": "hr_without_frailty"}), on="covariate", how="left").rename(
            columns={"lower": "hazard_ratio_lower", "upper": "hazard_ratio_upper"})
        frailty_html = (f"<h3>With a shared gamma frailty per {unit} (hazard ratios conditional on the {unit})</h3>"
                        f"<p>{html.escape(surv['frailty']['sentence'])}</p>" + table_html(readable(with_intervals(frailty[[
                            c for c in ("covariate", "hr_without_frailty", "hazard_ratio", "hazard_ratio_lower",
                                        "hazard_ratio_upper", "p", "true_hr") if c in frailty]], rename=True), words)))
    odds = readable(with_intervals(csv("reports/logistic/odds_ratios.csv")[["term", "or", "or_lower", "or_upper", "p"]],
                                   rename=True), words)
    planner = csv("reports/durations/planner_summary.csv").rename(
        columns={"median_lower": "median_days_lower", "median_upper": "median_days_upper"})
    planner = readable(with_intervals(planner[[c for c in (
        "variable", "level", "plans", "median_days", "median_days_lower", "median_days_upper", "open_at_12m",
        "open_at_12m_lower", "open_at_12m_upper", "lasting_2y_plus") if c in planner]], rename=True), words)
    durations_html = (f"{image(figs, 'durations', 'Plans still open')}{table_html(planner)}" if len(planner)
                      else "<p>No child protection plans in this input: no plan durations.</p>"
                      if metrics("durations").get("status", "no plans in this input") == "no plans in this input"
                      else f"<p>{html.escape(metrics('durations')['status'].capitalize())}.</p>")
    banded_html = banded_section(root)
    optimism = csv("reports/calibration/optimism.csv")
    subgroups = csv("reports/calibration/subgroups.csv")
    by_group = group_error_table(csv("reports/errors/by_group.csv"), words)
    recal = readable(csv("reports/calibration/recalibration.csv"), words)
    cox_cal = csv("reports/calibration/cox_calibration.csv")
    size = logi.get("sample_size", {})
    cox_calibration, cox_overall = (with_intervals(cox_cal[[c for c in cox_cal.columns if c == "horizon_months" or any(
        c == k or c in (f"{k}_lower", f"{k}_upper") or (floors and c.startswith((f"{k}_floor", f"{k}_reading")))
        for k in keys)]], rename=True, words=words, floor_values=False) for keys, floors in (
        (("observed_expected", "citl", "slope", "ici", "e90"), True),   # (E50: in the CSV)
        (("mean_predicted", "mean_observed", "auc", "brier", "null_brier", "ipa"), False)))
    tripod = pd.DataFrame(TRIPOD_AI, columns=["TRIPOD+AI item", "asks for", "where (section id)"])
    survival_ipcw = err.get("survival_model", {})
    head = err.get("at_default_rule", {})

    sections = [
        ("data", "Data and cleaning",
         f"<p>Every row read is kept or quarantined with its reason; rows in = kept + rejected for every table. "
         f"Rejected rows are never imputed; what a route estimates (an NCANDS birth date, say) is stated "
         f"below.</p>{source}{table_html(reconciliation)}{table_html(reasons)}"),
        ("cohort", "Cohort", "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in cohort) + "</ul>"
         + table_one_html(table1, min_count, unit) + (
            f"<h3>How many {html.escape(words.have_outcome)} within a year? Each figure and what it counts</h3>"
            f"{table_html(figures_table)}" if len(figures_table) else "")),
        ("km", f"Time to {words.outcome} (Kaplan-Meier)",
         image(figs, "km", f"Kaplan-Meier cumulative {words.outcome}") + not_estimated(surv, "survival_curves")),
        ("hazard-ratios", f"Hazard ratios (Cox model; {html.escape(strata_words(params, surv))}; "
                          f"robust CIs by {cluster_word(params, clean)})",
         f"{image(figs, 'forest', 'Forest plot of hazard ratios')}{not_estimated(surv, 'cox')}"
         f"{not_estimated(surv, 'parametric_models')}{table_html(hr_shown, words=words)}{frailty_html}"
         f"{ph_section(surv, csv('reports/survival/ph_tests.csv'), figs)}"),
        ("durations", "Plan durations for planners", durations_html),
        ("banded-durations", "Plan durations from published counts", banded_html),
        ("odds-ratios", f"Logistic model: odds ratios (95% CIs robust by {cluster_word(params, clean)})",
         not_estimated(logi, "logistic_model") + table_html(odds, words=words)),
        ("calibration", "Calibration",
         f"{image(figs, 'calibration', 'Calibration curve')}{not_estimated(cal, 'logistic_calibration')}"
         f"{table_html(hierarchy)}{''.join(f'<p>{html.escape(t)}</p>' for t in floor_sentences(v, subgroups, cox_cal))}"
         f"<h3>Bootstrap optimism correction ({cal.get('bootstrap_replicates')} replicates of whole {units})</h3>"
         f"{table_html(readable(optimism, words))}<h3>Recalibration (fitted on half the validation {units})</h3>"
         f"{table_html(recal, words=words)}"
         f"<h3>Cox model calibration (Austin, Harrell and van Klaveren 2020)</h3>{not_estimated(cal, 'cox_calibration')}"
         f"<p>With each horizon: AUC(t) (cases: {words.outcome} by t; controls: the rest whose status at t is known, "
         f"a competing end counting as a control), the Brier score, the null model's (everyone given the "
         f"Kaplan-Meier/Aalen-Johansen risk) and IPA = 1 - Brier / null Brier; censoring by inverse probability "
         f"weights, 95% intervals from the influence function, as R's riskRegression::Score.</p>"
         f"{table_html(cox_calibration, words=words)}{table_html(cox_overall, words=words)}"),
        ("subgroups", "Subgroups: calibration and error rates",
         f"<p>Calibration within each group of the validation {html.escape(words.subjects)} (mean calibration as "
         f"observed / expected; calibration-in-the-large is in reports/calibration/subgroups.csv; 95% intervals "
         f"resampling whole {units}; each ICI and E90 against what a perfectly calibrated model shows at the "
         f"group's size: the noise floor, section Calibration).</p>"
         f"{table_html(readable(with_intervals(subgroups.drop(columns=[c for c in subgroups if c.startswith('citl')]), rename=True, words=words, floor_values=False), words), words=words)}"
         f"<h3>Error rates at the headline rule, by group (differences and ratios against "
         f"the largest group, 95% intervals resampling whole {units})</h3>"
         f"<p>The false-negative rate is 1 - sensitivity: the share of those with a {html.escape(words.outcome)} "
         f"whom the rule does not flag.</p>{table_html(by_group, words=words)}"),
        ("decision-curve", "Decision curve and the threshold trade-off",
         f"{image(figs, 'decision', 'Decision curve')}"
         f"{image(figs, 'fp_fn', 'False positives and negatives by threshold')}{not_estimated(err, 'error_rates')}"
         f"{not_estimated(err, 'survival_model_error_rates')}"
         f"<p>Survival model at {fmt(survival_ipcw.get('horizon_months'))} months: {html.escape(str(survival_ipcw.get('method', '')))}"
         f" (reports/errors/survival_ipcw.csv).</p>"),
        ("sample-size", "Sample size (Riley et al. 2020)", sample_size_html(logi, words)),
        ("tripod", "TRIPOD+AI checklist", table_html(tripod)),
        ("limitations", "Limitations",
         "<ul><li>Associations, not causes: no figure here says what would happen to a family if a factor changed."
         "</li><li>Records reflect who was referred and recorded, not all maltreatment; bias in referral and "
         "recording passes into the model.</li><li>A flag must never decide a case; error rates above apply to "
         "groups of referrals, not to a child.</li><li>Differences between groups in error rates can arise from "
         "different base rates; they are shown so that they can be questioned.</li>"
         "<li>No patient or public involvement in this synthetic demonstration.</li>"
         f"{'<li><strong>The input is the synthetic default</strong>: no result describes real children.</li>' if synthetic else ''}"
         "</ul>"),
        ("reproducibility", "Reproducibility",
         "<p>Built from this content (git object ids; the commit that introduced each: "
         "<code>git log --all --format=%H --find-object=&lt;id&gt;</code>):</p>"
         + table_html(pd.DataFrame([{"path": k, "git object id": v or "unknown (not a git checkout)"}
                                    for k, v in prov["code"].items()]))
         + f"<p>Parameters SHA-256 {prov['params_sha256'][:16]}; seed {params.get('seed')}. Outputs of every "
         f"stage (dvc.lock):</p>{table_html(prov['hashes'])}"
         f"<p>Software: Python {software['python']} ({software['implementation']}, {software['platform']}); "
         f"libraries {html.escape(as_locked)} (sha256 {str(software['lock']['sha256'])[:16]}; "
         "<code>metrics/environment.json</code>):</p>"
         + table_html(pd.DataFrame(list(software["dependencies"].items()), columns=["library", "installed version"]))
         + f"<pre>{html.escape(yaml.safe_dump({k: params[k] for k in ('seed', 'input', 'logistic', 'errors', 'disclosure')}, sort_keys=False))}</pre>"),
    ]
    nav = "".join(f"<li><a href='#{sid}'>{html.escape(title)}</a></li>" for sid, title, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{content}{made_by_html(sid)}</section>"
                   for sid, title, content in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(words.outcome.capitalize())} risk model: how often it is wrong</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem 2rem; max-width: 80rem; color: #111; }}
h2 {{ margin-top: 0.4rem; }} table {{ border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }}
th, td {{ border: 1px solid #bbb; padding: 0.2rem 0.4rem; text-align: right; }} th {{ background: #eee; }}
td:first-child, th:first-child, td.text, th.text {{ text-align: left; }} img {{ max-width: 100%; }}
th {{ vertical-align: bottom; }} td {{ white-space: nowrap; }} td:first-child, td.text {{ white-space: normal; }}
td:first-child {{ min-width: 7.5rem; }}
.table {{ overflow-x: auto; max-width: 100%; }}
.made-by {{ font-size: 0.8rem; color: #555; border-top: 1px solid #ddd; padding-top: 0.2rem; }}
#how-often-wrong {{ border: 3px solid #b00; padding: 0.3rem 1rem; }} #natural-frequencies {{ font-size: 1.15rem; }}
.warning {{ background: #fff3cd; padding: 0.4rem; }} .notice {{ background: #e7f0ff; padding: 0.4rem; }}
</style></head>
<body>
<section id="how-often-wrong">
<h2>How often this model is wrong</h2>
<p id="natural-frequencies">{html.escape(headline)}</p>
{table_html(first, "error-table")}
<p class="warning">{html.escape(WARNING)}</p>
{notice}
<p>Validation {html.escape(words.subjects)}: {fmt(err.get('validation_referrals'))}. Headline rule: {html.escape(err['default_rule'])}
(risk at least {fmt(head.get('threshold'))}); sensitivity {fmt(head.get('sensitivity'))}
({fmt(head.get('sensitivity_lower'))}-{fmt(head.get('sensitivity_upper'))}), PPV {fmt(head.get('ppv'))}
({fmt(head.get('ppv_lower'))}-{fmt(head.get('ppv_upper'))}). Intervals: {html.escape(str(err.get('headline_intervals', '')))}
(Wilson intervals holding the fitted model fixed, which leave out the refit's uncertainty: PPV
{fmt(head.get('ppv_wilson_lower'))}-{fmt(head.get('ppv_wilson_upper'))}).
{WITHHELD} marks a value withheld because a count is below {min_count}, or not defined.</p>
{made_by_html("how-often-wrong")}
</section>
<nav><h2>Contents</h2><ol>{nav}</ol></nav>
{body}
</body></html>
"""
    summary = "\n".join([
        f"# {words.outcome.capitalize()} risk model: summary", "",
        "## How often this model is wrong", "", headline, "",
        table_markdown(first), "", WARNING, "",
        *(["**Synthetic data**: the embedded synthetic default, not real children.", ""] if synthetic else []),
        *(["## Model warnings", "", *(f"- survival, {w['model'].replace('_', ' ')}: {w['message']}"
                                      for w in surv.get("warnings", [])), ""] if surv.get("warnings") else []),
        *(["## Could not be estimated", "", *(f"- {stage}: {m['status']}" for stage, m in (
            ("survival", surv), ("logistic", logi), ("calibration", cal), ("errors", err)) if m.get("status")), ""]
          if any(m.get("status") for m in (surv, logi, cal, err)) else []),
        *(["## Cohort", "", *cohort, "", "Table 1 (n (%), or median (IQR); "
           f"{WITHHELD}: withheld, a count below {min_count} or one that would give it away):", "",
           table_markdown(table1), ""] if len(table1) else []),
        "## Calibration on validation data", "", table_markdown(hierarchy), "",
        *(f"{t}\n" for t in floor_sentences(v, subgroups, cox_cal)),
        "## Optimism-corrected (bootstrap)", "", table_markdown(readable(optimism, words)), "",
        "## Sample size", "", f"Riley minimum n {html.unescape(fmt(size.get('riley_minimum_n'), kind='count'))}; "
        f"development rows {html.unescape(fmt(logi.get('development', {}).get('n'), kind='count'))}.", "",
        "## Reproducibility", "", f"Seed {params.get('seed')}; the code's git object ids, dvc.lock hashes and parameters are in the "
        "report's last section.", "",
        f"Python {software['python']} ({software['platform']}); libraries {as_locked}; their versions are in "
        "`metrics/environment.json`.", "",
        f"Values shown as {WITHHELD} are withheld (a count below {min_count}) or not defined.", "",
        "The full report with figures: `reports/report.html`.", "",
    ])
    return page, summary


def main() -> None:
    from pipeline import config
    from pipeline.io import write_json, write_text

    from pipeline.cli import InputError

    params = config.load_params()
    needed = ["metrics/errors.json", "metrics/calibration.json", "metrics/logistic.json", "reports/errors/rules.csv",
              "reports/survival/hazard_ratios.csv", "reports/durations/planner_summary.csv"]
    missing = [p for p in needed if not Path(p).exists()]
    if missing:
        raise InputError(f"{missing[0]}: not found; the report reads the other stages' outputs (run dvc repro)")
    page, summary = build(Path.cwd(), params)
    write_json(environment.describe(Path.cwd()), Path("metrics/environment.json"))
    write_text(page, Path("reports/report.html"))
    write_text(summary, Path("reports/summary.md"))
    print("report: reports/report.html, reports/summary.md, metrics/environment.json")


if __name__ == "__main__":
    from pipeline.cli import stage_entry

    stage_entry(main)()
