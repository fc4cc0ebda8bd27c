"""The data contract: every table's fields, their codes and aliases, and pandera schemas.

One module, so the simulator, the cleaner, the episode builder and the tests agree on
what a valid children / referrals / plans table is. Codes follow the English Children in
Need census in spirit; aliases map the spellings real extracts use onto one code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pandera.pandas as pa

FACTORS = (
    "substance_misuse",
    "domestic_violence",
    "mental_health",
    "learning_disability",
    "financial_problems",
    "low_social_support",
    "parent_maltreated_as_child",
)

SEX = {"M": ("m", "male", "1", "boy"), "F": ("f", "female", "2", "girl"),
       "U": ("u", "unknown", "0", "9", "not known", "indeterminate")}
ETHNICITY = {
    "WHITE": ("white", "w", "wbri", "wiri", "woth", "wirt", "wrom"),
    "MIXED": ("mixed", "mwbc", "mwba", "mwas", "moth"),
    "ASIAN": ("asian", "aind", "apkn", "aban", "aoth", "chne"),
    "BLACK": ("black", "bcrb", "bafr", "both"),
    "OTHER": ("other", "ooth"),
    "UNKNOWN": ("unknown", "not known", "refu", "nobt"),
}
FLAG = {1: ("1", "y", "yes", "true", "t", "1.0"), 0: ("0", "n", "no", "false", "f", "0.0")}
REFERRAL_SOURCE = {
    "POLICE": ("police",), "SCHOOL": ("school", "education"), "HEALTH": ("health", "gp", "hospital"),
    "LA_SERVICES": ("la_services", "local authority", "la services"),
    "INDIVIDUAL": ("individual", "family", "self"), "OTHER": ("other",), "UNKNOWN": ("unknown",),
}
OUTCOME = {
    "NFA": ("nfa", "no further action"),
    "ASSESSED": ("assessed", "assessment only", "assessed_nfa"),
    "CIN": ("cin", "child in need"),
    "CPP": ("cpp", "plan", "child protection plan"),
}
#: Referral outcomes that mean no service followed (Fuller et al 2001: "no service in 60 days").
NO_SERVICE_OUTCOMES = ("NFA", "ASSESSED")
CATEGORY = {
    "NEGLECT": ("neglect", "n", "neg"),
    "EMOTIONAL": ("emotional", "emotional abuse", "e", "emo"),
    "PHYSICAL": ("physical", "physical abuse", "p", "phy"),
    "SEXUAL": ("sexual", "sexual abuse", "s", "sex"),
    "MULTIPLE": ("multiple", "m", "mul"),
}
END_REASON = {
    "NO_LONGER_REQUIRED": ("no_longer_required", "no longer required"),
    "LOOKED_AFTER": ("looked_after", "looked after", "care"),
    "AGE_18": ("age_18", "18", "turned 18"),
    "MOVED_LA": ("moved_la", "moved"),
    "OTHER": ("other",),
}


@dataclass(frozen=True)
class Field:
    """One input column: its kind ('id', 'text', 'code', 'flag', 'date') and rules."""

    name: str
    kind: str
    required: bool = True
    codes: dict | None = None
    #: what a column absent from the input means: None (it must be there); "empty" (read as all
    #: missing); "child_id" (a copy of child_id: with no family id each child is its own
    #: cluster); "not_recorded" (the source does not record it: the column is dropped, never
    #: invented as 0, and the stages after clean do without it)
    if_absent: str | None = None

    @property
    def optional_column(self) -> bool:
        return self.if_absent is not None

    def alias_map(self) -> dict[str, object]:
        """Lower-case spelling -> canonical code (the canonical codes map to themselves)."""
        out: dict[str, object] = {}
        for code, aliases in (self.codes or {}).items():
            out[str(code).lower()] = code
            for alias in aliases:
                out[alias] = code
        return out


@dataclass(frozen=True)
class Table:
    name: str
    id_field: str
    fields: tuple[Field, ...]
    #: (later date, earlier date, reason): later must not precede earlier
    date_order: tuple[tuple[str, str, str], ...] = field(default=())

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def get(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def without(self, names: list[str] | tuple[str, ...]) -> "Table":
        """The same table without the named fields (columns a source does not record)."""
        return replace(self, fields=tuple(f for f in self.fields if f.name not in names))


CHILDREN = Table("children", "child_id", (
    Field("child_id", "id"),
    Field("family_id", "id", if_absent="child_id"),
    Field("la_code", "text"),
    Field("sex", "code", codes=SEX),
    Field("date_of_birth", "date"),
    Field("ethnicity", "code", codes=ETHNICITY),
    Field("disability", "flag", codes=FLAG),
    Field("looked_after_date", "date", required=False, if_absent="empty"),  # entered care
))

REFERRALS = Table("referrals", "referral_id", (
    Field("referral_id", "id"),
    Field("child_id", "id"),
    Field("referral_date", "date"),
    Field("referral_source", "code", codes=REFERRAL_SOURCE),
    Field("closure_date", "date", required=False),
    Field("outcome", "code", codes=OUTCOME),
    *(Field(name, "flag", codes=FLAG, if_absent="not_recorded") for name in FACTORS),
    Field("abuse_category", "code", required=False, codes=CATEGORY),
), date_order=(("closure_date", "referral_date", "closure_before_referral"),))

PLANS = Table("plans", "plan_id", (
    Field("plan_id", "id"),
    Field("child_id", "id"),
    Field("start_date", "date"),
    Field("end_date", "date", required=False),
    Field("category", "code", codes=CATEGORY),
    Field("end_reason", "code", required=False, codes=END_REASON, if_absent="empty"),
), date_order=(("end_date", "start_date", "end_before_start"),))

TABLES = {t.name: t for t in (CHILDREN, REFERRALS, PLANS)}

#: Columns of data/clean/rejects.csv (clean's quarantine and every adapter's own rejects).
REJECT_COLUMNS = ["table", "source_row", "field", "value", "reason"]

#: Every reason a row can be quarantined for, in the order rules are applied.
REJECT_REASONS = (
    "missing_id", "missing_value", "unknown_code", "unparseable_date", "partial_date", "invalid_value",
    "duplicate_row",
    "duplicate_id", "date_after_extract", "closure_before_referral", "end_before_start",
    "unknown_child", "child_rejected", "referral_before_birth", "plan_before_birth",
    "overlapping_plan",
)


def _pandera_column(f: Field, extract_date: pd.Timestamp) -> pa.Column:
    nullable = not f.required
    if f.kind == "date":
        return pa.Column("datetime64[ns]", pa.Check.le(extract_date), nullable=nullable)
    if f.kind == "flag":
        return pa.Column("int8", pa.Check.isin([0, 1]), nullable=False)
    if f.kind == "code":
        return pa.Column(str, pa.Check.isin(list(f.codes)), nullable=nullable)
    return pa.Column(str, pa.Check.str_length(min_value=1), nullable=False)


def clean_schema(table: Table, extract_date: pd.Timestamp) -> pa.DataFrameSchema:
    """The contract a cleaned table meets (checked on every clean output)."""
    columns = {f.name: _pandera_column(f, extract_date) for f in table.fields}
    columns[table.id_field] = pa.Column(str, unique=True, nullable=False)
    checks = [
        pa.Check(lambda df, a=later, b=earlier: df[a].isna() | (df[a] >= df[b]), name=reason)
        for later, earlier, reason in table.date_order
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=True, ordered=True)


def analysis_table_schema(id_col: str, cluster: str | None, duration: str, event: str,
                          covariates: list[str]) -> pa.DataFrameSchema:
    """Contract for the prepared one-row-per-subject entry point."""
    columns = {
        id_col: pa.Column(str, unique=True, nullable=False),
        duration: pa.Column(float, pa.Check.ge(0), nullable=False),
        event: pa.Column("int8", pa.Check.isin([0, 1]), nullable=False),
        **{c: pa.Column(nullable=False) for c in covariates},
    }
    if cluster:
        columns[cluster] = pa.Column(str, nullable=False)
    return pa.DataFrameSchema(columns, strict=False)


#: Columns of data/predictions/validation.parquet that are not groups: every other column
#: is a grouping variable for subgroup calibration and error rates by group.
PREDICTION_KEYS = ("p", "y", "weight", "family", "index_date", "fold")
#: Groups of the case-level routes (a prepared table names its own: ``analysis_table.km_groups``).
CASE_LEVEL_GROUPS = ("sex", "ethnicity", "age_band", "la_code")


def group_columns(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c not in PREDICTION_KEYS]


#: Columns of data/analysis/rereport.parquet that are not covariates.
REREPORT_KEYS = ("index_referral_id", "child_id", "family_id", "la_code", "index_date", "origin_date",
                 "time_days", "event", "censor_reason", "event_type")
AGE_BANDS = ((0, 1, "under_1"), (1, 5, "1_4"), (5, 10, "5_9"), (10, 16, "10_15"), (16, 18, "16_17"),
             (18, 200, "18_plus"))


#: The one days-per-year constant (a month is a twelfth of it: ``nonparametric.DAYS_PER_MONTH``).
#: Durations and horizons count days; "the 12 months to a date" is a calendar year (``years_before``).
DAYS_PER_YEAR = 365.25


def years_before(date, years: int = 1):
    """The same calendar date ``years`` earlier (29 February -> 28 February): the start of
    "the 12 months to" a date, as DfE's statistics count a year ending 31 March. ``date`` may
    be a Timestamp or a datetime Series."""
    return date - pd.DateOffset(years=years)
#: Days in one unit of a prepared table's durations (``input.analysis_table.duration_unit``);
#: a month is a twelfth of a year (``nonparametric.DAYS_PER_MONTH``, defined from the same constant).
DURATION_UNITS = {"days": 1.0, "weeks": 7.0, "months": DAYS_PER_YEAR / 12, "years": DAYS_PER_YEAR}


def age_in_years(on, date_of_birth) -> np.ndarray:
    """Exact age in years on a date (days / 365.25)."""
    return (np.asarray(on, dtype="datetime64[ns]") - np.asarray(date_of_birth, dtype="datetime64[ns]")
            ) / np.timedelta64(1, "D") / DAYS_PER_YEAR


def age_band(age_years: pd.Series) -> pd.Series:
    """DfE children-in-need age bands from exact age in years."""
    edges = [b[0] for b in AGE_BANDS] + [AGE_BANDS[-1][1]]
    labels = [b[2] for b in AGE_BANDS]
    return pd.cut(age_years, bins=edges, right=False, labels=labels).astype(str)
