"""``simulate`` stage: an England-like synthetic case-level extract with known truth.

Generative model (all parameters in ``params.yaml: simulate``):

* Children are nested in families (size 1 + Poisson), families in local authorities.
* Each child's first referral falls uniformly in the window; siblings are usually
  referred together. Age at first referral follows an assumed children-in-need mix.
* Each referral records assessment factors. A factor is ``1{z_j + a u_f < c_j}`` with a
  family adversity ``u_f ~ N(0,1)`` (so factors co-occur within families) and a per-child
  AR(1) ``z_j`` (so they persist across a child's referrals); ``c_j`` gives the stated
  prevalence.
* Outcome (NFA / assessed / child in need / plan) depends on the factors, age and a
  previous plan. A plan's length is drawn from the DfE length bands (proportional-odds
  shifted by LA and age) and bunches at review conferences (3 months, then every 6).
* **Re-referral** (the modelled outcome): time from the episode's end,
  ``origin = max(closure_date, referral_date + same_episode_days)``, follows a
  proportional-hazards Weibull model

      h(t | x) = w_f * exp(beta' x + gamma_LA) * h0(t),   h0(t) = (k / s) (t / s)^(k - 1)

  with ``x`` the index referral's factors, the child's disability, ``no_service``
  (outcome NFA or assessed-only) and the number of prior referrals in the window;
  ``w_f`` a gamma family frailty (mean 1, variance ``frailty_variance``). Shape ``k < 1``
  makes the hazard highest just after closure. The event day is ``ceil(T)``; a
  re-referral is only recorded before the extract date and the 18th birthday.
* A share of referrals is followed within ``same_episode_days`` by a second report of
  the same incident (not a re-referral; the episode stage must ignore it).

``truth.json`` holds the true log-hazard ratios, the baseline, LA effects, the achieved
marginal figures against their published targets, and the log of injected faults.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import special, stats

from pipeline import config, faults, published
from pipeline.cli import InputError, stage_entry
from pipeline.formats import cin_census, ncands
from pipeline.io import file_sha256, write_csv_batches, write_csv_fast, write_json
from pipeline.schema import DAYS_PER_YEAR, FACTORS, NO_SERVICE_OUTCOMES

#: Covariates carrying a true effect on the re-referral hazard, in truth.json order.
HAZARD_COVARIATES = (*FACTORS, "disability", "no_service", "prior_referrals")

# Assumed shares (no published figure in reach; England-like, stated as assumptions).
AGE_AT_FIRST_REFERRAL = ((0, 1, 0.17), (1, 5, 0.24), (5, 10, 0.25), (10, 16, 0.28), (16, 18, 0.06))
ETHNICITY_SHARES = {"WHITE": 0.72, "MIXED": 0.09, "ASIAN": 0.08, "BLACK": 0.07, "OTHER": 0.03, "UNKNOWN": 0.01}
SOURCE_SHARES = {"POLICE": 0.30, "SCHOOL": 0.20, "HEALTH": 0.15, "LA_SERVICES": 0.12,
                 "INDIVIDUAL": 0.08, "OTHER": 0.13, "UNKNOWN": 0.02}
# Plan categories: neglect + emotional = 0.73, emotional 0.27 (DCSF SFR 2009, literature.yaml).
CATEGORY_SHARES = {"NEGLECT": 0.46, "EMOTIONAL": 0.27, "PHYSICAL": 0.09, "SEXUAL": 0.04, "MULTIPLE": 0.14}
# Outcome model: baseline log-odds against NFA, and what tilts it.
OUTCOME_CODES = ("NFA", "ASSESSED", "CIN", "CPP")
SEX_CODES = ("M", "F")
END_REASON_CODES = ("AGE_18", "LOOKED_AFTER", "NO_LONGER_REQUIRED")
OUTCOME_BASE_LOGIT = np.array([0.0, 0.45, 0.15, -1.55])
OUTCOME_PER_FACTOR = np.array([0.0, 0.10, 0.30, 0.45])
CPP_AGE_LOGIT = {0: 0.8, 1: 0.3, 5: 0.0, 10: -0.55, 16: -1.2}   # plans concentrate on under-5s
CPP_PRIOR_PLAN_LOGIT = 1.0
FACTOR_FAMILY_LOADING = 0.6   # a: co-occurrence of factors within a family
FACTOR_PERSISTENCE = 0.8      # AR(1) correlation of a child's factors between referrals
SIBLINGS_TOGETHER = 0.7       # share of siblings first referred with the family's first referral
# Plan lengths: DfE table D7 2025 shares of plans ended, by band (literature.yaml).
BAND_EDGES_DAYS = (0, 91, 182, 365, 730)
REVIEW_DAYS = (88, 273, 456, 638, 821, 1003, 1186)  # review conferences: 3 months, then every 6
DURATION_LA_SD = 0.25
DURATION_AGE_SHIFT = {0: 0.1, 1: 0.05, 5: 0.0, 10: -0.1, 16: -0.3}
# Ended-plan shares are measured on plans ending in the final year, a flow that mixes start
# cohorts, LA and age shifts and 18th-birthday ends; this offset restores the published shares.
DURATION_GLOBAL_SHIFT = 0.18


@dataclass
class Extract:
    """A simulated extract: clean tables (typed) and the truth behind them."""

    children: pd.DataFrame
    referrals: pd.DataFrame
    plans: pd.DataFrame
    truth: dict[str, Any]


def _lookup_by_age(table: dict[int, float], age_years: np.ndarray) -> np.ndarray:
    lower = np.array(sorted(table))
    values = np.array([table[k] for k in sorted(table)])
    return values[np.searchsorted(lower, age_years, side="right") - 1]


def _sample_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    bands = np.array(AGE_AT_FIRST_REFERRAL)
    which = rng.choice(len(bands), size=n, p=bands[:, 2] / bands[:, 2].sum())
    return bands[which, 0] + rng.random(n) * (bands[which, 1] - bands[which, 0])


def _plan_durations(rng: np.random.Generator, shift: np.ndarray, targets: list[float]) -> np.ndarray:
    """Plan length in days: DfE band shares, proportional-odds ``shift`` (> 0: longer),
    bunched at review conferences within each band."""
    n = len(shift)
    cum = np.clip(np.cumsum(targets)[:-1], 1e-9, 1 - 1e-9)
    cum_shifted = special.expit(special.logit(cum)[None, :] - shift[:, None])
    band = (rng.random(n)[:, None] > cum_shifted).sum(axis=1)
    lo = np.array(BAND_EDGES_DAYS)[np.minimum(band, 4)]
    hi = np.array([*BAND_EDGES_DAYS[1:], 730])[np.minimum(band, 4)]
    uniform = lo + 1 + np.floor(rng.random(n) * (hi - lo)).astype(int)
    jitter = rng.integers(-6, 1, size=n)
    at_review = rng.random(n)
    days = uniform.copy()
    # <= 3 months: 60% end at the first review conference.
    m = (band == 0) & (at_review < 0.6)
    days[m] = REVIEW_DAYS[0] + jitter[m]
    # 6-12 months: 70% at the 9-month review; 1-2 years: 70% at 15 or 21 months.
    m = (band == 2) & (at_review < 0.7)
    days[m] = REVIEW_DAYS[1] + jitter[m]
    m = (band == 3) & (at_review < 0.7)
    days[m] = np.where(rng.random(m.sum()) < 0.6, REVIEW_DAYS[2], REVIEW_DAYS[3]) + jitter[m]
    # 2+ years: later reviews (geometric), or a continuous tail.
    m = band == 4
    k = np.minimum(rng.geometric(0.5, size=m.sum()), 3)
    tail = 731 + rng.exponential(250, size=m.sum()).astype(int)
    days[m] = np.where(rng.random(m.sum()) < 0.75, np.array(REVIEW_DAYS)[3 + k] + jitter[m], tail)
    return days.astype(np.int64)


def simulate(params: dict[str, Any], progress: bool = False) -> Extract:
    """Generate the clean synthetic extract and its truth (pure: params in, tables out):
    ids and codes as Python strings (object columns), missing codes None."""
    extract = simulate_lean(params, progress)
    return Extract(*(classic_frame(frame) for frame in (extract.children, extract.referrals, extract.plans)),
                   extract.truth)


def simulate_lean(params: dict[str, Any], progress: bool = False) -> Extract:
    """``simulate`` with ids as Arrow strings and codes as categoricals: the same values in
    about a fifth of the memory (the stage's own form: 10 million children)."""
    sim = params["simulate"]
    rng = config.rng(params, "simulate")
    extract = config.extract_date(params)
    extract_day = int(extract.value // 86_400_000_000_000)  # days since 1970-01-01
    window_days = int(round(sim["window_years"] * DAYS_PER_YEAR))
    start_day = extract_day - window_days
    episode_window = int(params["episodes"]["same_episode_days"])
    n = int(sim["n_children"])
    n_la = int(sim["n_local_authorities"])

    # --- families and children -------------------------------------------------------
    sizes = 1 + rng.poisson(sim["children_per_family_mean"] - 1, size=n)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= sizes.sum() - n
    n_fam = len(sizes)
    family = np.repeat(np.arange(n_fam), sizes)
    la_weights = rng.gamma(4.0, size=n_la)
    fam_la = rng.choice(n_la, size=n_fam, p=la_weights / la_weights.sum())
    theta = float(sim["frailty_variance"])
    fam_frailty = rng.gamma(1 / theta, theta, size=n_fam) if theta > 0 else np.ones(n_fam)
    fam_adversity = rng.standard_normal(n_fam)
    eth_codes = np.array(list(ETHNICITY_SHARES))
    fam_eth = rng.choice(len(eth_codes), size=n_fam, p=np.array(list(ETHNICITY_SHARES.values())))
    # LA effects are centred (weighted by LA size) so LA variation does not move the
    # national figures the extract is calibrated to.
    la_share = la_weights / la_weights.sum()
    la_effect = rng.normal(0.0, sim["la_log_hazard_sd"], size=n_la)
    la_effect -= la_share @ la_effect
    la_duration_shift = rng.normal(0.0, DURATION_LA_SD, size=n_la)
    la_duration_shift -= la_share @ la_duration_shift

    fam_first = start_day + rng.integers(0, window_days, size=n_fam)
    own_first = start_day + rng.integers(0, window_days, size=n)
    together = rng.random(n) < SIBLINGS_TOGETHER
    first_day = np.where(together, fam_first[family], np.maximum(fam_first[family], own_first))
    age_first = _sample_ages(rng, n)
    dob_day = first_day - np.round(age_first * DAYS_PER_YEAR).astype(np.int64)
    # 18th birthday as a calendar date (29 Feb births turn 18 on 1 Mar).
    dob_dates = pd.to_datetime(dob_day, unit="D")
    day18 = (dob_dates + pd.DateOffset(years=18)).values.astype("datetime64[D]").astype(np.int64)
    sex = np.where(rng.random(n) < 0.55, 0, 1).astype(np.int8)  # SEX_CODES; 55% boys among children in need (DCSF 2009)
    disability = (rng.random(n) < sim["prevalence"]["disability"]).astype(np.int8)

    # --- referral chains, one round per referral --------------------------------------
    beta = {k: math.log(v) for k, v in sim["hazard_ratios"].items()}
    shape = float(sim["baseline_weibull_shape"])
    scale = float(sim["baseline_weibull_scale_days"])
    prev = np.array([sim["prevalence"][f] for f in FACTORS])
    cut = stats.norm.ppf(prev) * math.sqrt(1 + FACTOR_FAMILY_LOADING**2)
    z = rng.standard_normal((n, len(FACTORS)))
    rho = FACTOR_PERSISTENCE

    # Codes stay integers (positions in the label tuples) until the tables are written.
    cat_codes = np.array(list(CATEGORY_SHARES))
    cat_p = np.array(list(CATEGORY_SHARES.values()))
    src_codes = np.array(list(SOURCE_SHARES))
    src_p = np.array(list(SOURCE_SHARES.values()))
    no_service_codes = [OUTCOME_CODES.index(code) for code in NO_SERVICE_OUTCOMES]

    care = sim["care_entry"]
    looked_after_day = np.full(n, -1, dtype=np.int64)
    refs: list[dict[str, np.ndarray]] = []
    plans: list[dict[str, np.ndarray]] = []
    child = np.arange(n)
    day = first_day.copy()
    prior = np.zeros(n, dtype=np.int64)
    prior_plan = np.zeros(n, dtype=bool)
    active = (day <= extract_day) & (day < day18)
    child, day = child[active], day[active]
    round_no = 0
    while len(child):
        round_no += 1
        if progress:
            print(f"simulate: round {round_no}, {len(child):,} referrals", file=sys.stderr)
        m = len(child)
        fam = family[child]
        # In place, the same floating-point operations as rho * z + sqrt(1 - rho^2) * e (a child
        # appears once per round, so z[child] after the update is z_child).
        z_child = z[child]
        z_child *= rho
        innovation = rng.standard_normal((m, len(FACTORS)))
        innovation *= math.sqrt(1 - rho**2)
        z_child += innovation
        del innovation
        z[child] = z_child
        z_child += FACTOR_FAMILY_LOADING * fam_adversity[fam, None]
        flags = (z_child < cut).astype(np.int8)
        del z_child
        age = (day - dob_day[child]) / DAYS_PER_YEAR
        logits = (OUTCOME_BASE_LOGIT[None, :] + flags.sum(1, keepdims=True) * OUTCOME_PER_FACTOR[None, :])
        logits[:, 3] += _lookup_by_age(CPP_AGE_LOGIT, age) + CPP_PRIOR_PLAN_LOGIT * prior_plan[child]
        gumbel = rng.gumbel(size=logits.shape)
        outcome = np.argmax(logits + gumbel, axis=1)
        category = rng.choice(len(cat_codes), size=m, p=cat_p)
        has_category = (outcome >= 2) | (rng.random(m) < 0.5)

        # A plan cannot start on or after the 18th birthday: such cases stay child-in-need.
        plan_lag = rng.integers(10, 26, size=m)
        outcome[(outcome == 3) & (day + plan_lag >= day18[child])] = 2
        closure = day.copy()
        closure[outcome == 0] += rng.integers(0, 8, size=(outcome == 0).sum())
        closure[outcome == 1] += rng.integers(15, 46, size=(outcome == 1).sum())
        closure[outcome == 2] += rng.integers(60, 366, size=(outcome == 2).sum())
        is_plan = outcome == 3
        pidx = np.flatnonzero(is_plan)
        plan_start = day[pidx] + plan_lag[pidx]
        shift = (DURATION_GLOBAL_SHIFT + la_duration_shift[fam_la[fam[pidx]]]
                 + _lookup_by_age(DURATION_AGE_SHIFT, age[pidx]))
        plan_end = plan_start + _plan_durations(rng, shift, published.CPP_DURATION_BAND_SHARES_2025)
        turns18 = plan_end >= day18[child[pidx]]
        plan_end = np.where(turns18, day18[child[pidx]], plan_end)
        to_care = ~turns18 & (rng.random(len(pidx)) < care["plan_end_looked_after_share"])
        end_reason = np.where(turns18, 0, np.where(to_care, 1, 2)).astype(np.int8)  # END_REASON_CODES
        # A plan ending because the child became looked after closes the case; care starts next day.
        closure[pidx] = plan_end + np.where(to_care, 0, rng.integers(0, 121, size=len(pidx)))
        started = plan_start <= extract_day
        plans.append({
            "child": child[pidx][started], "start": plan_start[started],
            "end": np.where(plan_end[started] <= extract_day, plan_end[started], -1),
            "category": category[pidx][started].astype(np.int8),
            "end_reason": np.where(plan_end[started] <= extract_day, end_reason[started], -1).astype(np.int8),
        })
        refs.append({
            "child": child.astype(np.int32), "day": day.astype(np.int32),
            "closure": np.where(closure <= extract_day, closure, -1).astype(np.int32),
            "source": rng.choice(len(src_codes), size=m, p=src_p).astype(np.int8),
            "outcome": outcome.astype(np.int8), "flags": flags,
            "category": np.where(has_category, category, -1).astype(np.int8),
            "round": np.full(m, round_no, dtype=np.int16),
        })
        # A second report of the same incident, inside the same-episode window.
        dup = np.flatnonzero(rng.random(m) < sim["same_episode_duplicate_share"])
        dup_day = day[dup] + rng.integers(1, episode_window + 1, size=len(dup))
        keep = (dup_day <= extract_day) & (dup_day < day18[child[dup]])
        dup, dup_day = dup[keep], dup_day[keep]
        dup_closure = dup_day + rng.integers(0, 4, size=len(dup))
        refs.append({
            "child": child[dup].astype(np.int32), "day": dup_day.astype(np.int32),
            "closure": np.where(dup_closure <= extract_day, dup_closure, -1).astype(np.int32),
            "source": rng.choice(len(src_codes), size=len(dup), p=src_p).astype(np.int8),
            "outcome": np.full(len(dup), OUTCOME_CODES.index("NFA"), dtype=np.int8), "flags": flags[dup],
            "category": np.where(has_category[dup], category[dup], -1).astype(np.int8),
            "round": np.full(len(dup), round_no, dtype=np.int16),
        })

        # Time to re-referral from the episode's end (Weibull PH, inverse transform).
        no_service = np.isin(outcome, no_service_codes)
        lp = (flags @ np.array([beta[f] for f in FACTORS])
              + beta["disability"] * disability[child] + beta["no_service"] * no_service
              + beta["prior_referrals"] * prior[child] + la_effect[fam_la[fam]])
        origin = np.maximum(closure, day + episode_window)
        e = rng.exponential(size=m)
        t = scale * (e / (fam_frailty[fam] * np.exp(lp))) ** (1 / shape)
        nxt = origin + np.ceil(np.minimum(t, 1e6)).astype(np.int64)
        # Competing event: entering care (constant hazard from the same origin).
        care_lp = sum(math.log(hr) * (no_service if k == "no_service" else flags[:, FACTORS.index(k)])
                      for k, hr in care["hazard_ratios"].items())
        t_care = rng.exponential(size=m) / (care["rate_per_year"] / DAYS_PER_YEAR * np.exp(care_lp))
        care_day = origin + np.ceil(np.minimum(t_care, 1e6)).astype(np.int64)
        care_day[pidx[to_care]] = plan_end[to_care] + 1
        enters = ((care_day < nxt) | np.isin(np.arange(m), pidx[to_care])) & (closure <= extract_day)
        enters &= (care_day <= extract_day) & (care_day < day18[child])
        looked_after_day[child[enters]] = care_day[enters]
        prior_plan[child[pidx]] = True
        prior[child] += 1
        go = (closure <= extract_day) & (nxt <= extract_day) & (nxt < day18[child]) & ~enters
        child, day = child[go], nxt[go]

    # --- assemble tables ----------------------------------------------------------------
    # Lean columns: ids as Arrow strings (about 12 bytes a row, no Python object each), codes
    # as categoricals (1 byte a row), so 10 million children fit; ``classic_frame`` gives
    # the object-string tables the readers of ``simulate()`` always had.
    def cat(key: str, parts: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]) if parts else np.array([])

    child_ids = _id_array("C", n, 7)
    r_child = cat("child", refs).astype(np.int64)
    order = np.lexsort((cat("round", refs), cat("day", refs), r_child))
    for part in refs:
        del part["round"]
    referrals = pd.DataFrame({
        "referral_id": _id_series(_id_array("R", len(order), 8)),
        "child_id": _id_series(child_ids.take(r_child[order])),
        "referral_date": pd.to_datetime(cat("day", refs)[order].astype(np.int64), unit="D"),
        "referral_source": _codes(cat("source", refs)[order], SOURCE_SHARES),
        "closure_date": _nat_dates(cat("closure", refs)[order].astype(np.int64)),
        "outcome": _codes(cat("outcome", refs)[order], OUTCOME_CODES),
        **{f: np.concatenate([p["flags"][:, j] for p in refs])[order] for j, f in enumerate(FACTORS)},
        "abuse_category": _codes(cat("category", refs)[order], CATEGORY_SHARES),
    })
    del refs, order
    p_child = cat("child", plans)
    porder = np.lexsort((cat("start", plans), p_child))
    plans_df = pd.DataFrame({
        "plan_id": _id_series(_id_array("P", len(porder), 8)),
        "child_id": _id_series(child_ids.take(p_child[porder].astype(np.int64))),
        "start_date": pd.to_datetime(cat("start", plans)[porder], unit="D"),
        "end_date": _nat_dates(cat("end", plans)[porder]),
        "category": _codes(cat("category", plans)[porder], CATEGORY_SHARES),
        "end_reason": _codes(cat("end_reason", plans)[porder], END_REASON_CODES),
    })
    referred = np.unique(r_child)
    del r_child
    n_families = int(len(np.unique(family[referred])))
    children = pd.DataFrame({
        "child_id": _id_series(child_ids.take(referred)),
        "family_id": _id_series(_id_array("F", n_fam, 7).take(family[referred])),
        "la_code": _codes(fam_la[family[referred]], _ids("LA", n_la, 2)),
        "sex": _codes(sex[referred], SEX_CODES),
        "date_of_birth": pd.to_datetime(dob_day[referred], unit="D"),
        "ethnicity": _codes(fam_eth[family[referred]], ETHNICITY_SHARES),
        "disability": disability[referred],
        "looked_after_date": _nat_dates(looked_after_day[referred]),
    })
    truth = {
        "description": (
            "Synthetic England-like extract. Effects are associations reported in the literature, "
            "used here as the simulation's true multiplicative effects; they are not causal effects."
        ),
        "model": "h(t|x) = frailty_family * exp(beta'x + la_effect) * h0(t); t in days from "
                 "max(closure_date, referral_date + same_episode_days); event day = ceil(T)",
        "log_hazard_ratios": {k: beta[k] for k in HAZARD_COVARIATES},
        "hazard_ratios": {k: float(sim["hazard_ratios"][k]) for k in HAZARD_COVARIATES},
        "baseline_hazard": {
            "family": "weibull", "shape": shape, "scale_days": scale,
            "cumulative_hazard": "H0(t) = (t / scale_days) ** shape",
            "reference": "all covariates 0, frailty 1, la_effect 0",
        },
        "frailty": {"family": "gamma", "mean": 1.0, "variance": theta,
                    "note": "log_hazard_ratios are conditional on the frailty; with variance > 0 a Cox "
                            "model without frailty estimates attenuated population-averaged effects "
                            "(and prior_referrals absorbs part of the frailty)"},
        "competing_event_entering_care": {
            "model": "constant hazard rate_per_year * exp(gamma'x) from the same origin; plans ending "
                     "LOOKED_AFTER start care the next day",
            "rate_per_year": care["rate_per_year"],
            "log_hazard_ratios": {k: math.log(v) for k, v in care["hazard_ratios"].items()},
            "plan_end_looked_after_share": care["plan_end_looked_after_share"],
        },
        "la_log_hazard_effects": {f"LA{i + 1:02d}": float(v) for i, v in enumerate(la_effect)},
        "n_children": int(len(children)), "n_families": n_families,
        "n_referrals": int(len(referrals)), "n_plans": int(len(plans_df)),
    }
    return Extract(children, referrals, plans_df, truth)


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    """``prefix`` + 1..n zero-padded, vectorised (numpy.strings) for millions of rows."""
    numbers = np.strings.zfill(np.arange(1, n + 1).astype(str), width)
    return np.strings.add(prefix, numbers).astype(object)


def _id_array(prefix: str, n: int, width: int) -> pa.Array:
    """``_ids`` as an Arrow string array (no Python object per id)."""
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, numbers, "")


def _id_series(ids: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(ids))


def _codes(codes: np.ndarray, labels: Any) -> pd.Categorical:
    """Integer codes (positions in ``labels``; -1 missing) as a categorical."""
    return pd.Categorical.from_codes(codes.astype(np.int8), categories=list(labels))


def classic_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow-string and categorical columns as object columns of Python strings, None where
    missing (the form ``simulate`` returns)."""
    out = {}
    for name, column in frame.items():
        if isinstance(column.dtype, pd.CategoricalDtype):
            values = np.asarray(column.cat.categories, dtype=object)[column.cat.codes.to_numpy()]
            values[column.cat.codes.to_numpy() < 0] = None
            out[name] = values
        elif isinstance(column.dtype, pd.StringDtype):
            out[name] = column.to_numpy(dtype=object)
        else:
            out[name] = column.to_numpy()
    return pd.DataFrame(out, columns=frame.columns)


def _nat_dates(days: np.ndarray) -> pd.Series:
    out = pd.Series(pd.to_datetime(np.where(days >= 0, days, 0), unit="D"))
    return out.where(days >= 0, pd.NaT).to_numpy()


def integer_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """The Arrow-string id columns (``*_id``: a letter prefix, then digits) as their numbers.

    The calibration figures only group and match rows by id, and the numbers keep the ids'
    order and identity, so the figures are the same, without a Python string per row (the
    episode derivation turns ids into Python objects: gigabytes at 10 million children).
    """
    out = frame.copy(deep=False)
    for name, column in frame.items():
        if name.endswith("_id") and isinstance(column.dtype, pd.StringDtype):
            digits = pc.utf8_ltrim(pa.array(column.array), characters="ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            out[name] = pc.cast(digits, pa.int64()).to_numpy()
    return out


#: Where ``simulate.cin_census: true`` writes the clean extract as CIN census returns.
CIN_CENSUS_DIR = config.SYNTHETIC_DIR / "cin_census"
#: Where ``simulate.ncands: true`` writes it as an NCANDS Child File.
NCANDS_DIR = config.SYNTHETIC_DIR / "ncands"


def main() -> None:
    params = config.load_params()
    out_dir = config.SYNTHETIC_DIR
    # A cin_census or ncands input inside the synthetic folder is made here too (the extract
    # written in that format).
    in_dir = Path(params["input"]["dir"])
    inside = out_dir.resolve() in in_dir.resolve().parents
    cin_input = params["input"]["source"] == "cin_census" and inside
    ncands_input = params["input"]["source"] == "ncands" and inside
    if params["input"]["source"] != "synthetic" and not (cin_input or ncands_input):
        # The stage stays in the DAG but makes nothing when a real extract is the input.
        for name in ("children", "referrals", "plans"):
            write_csv_fast(pd.DataFrame(), out_dir / f"{name}.csv")
        write_json({"source": params["input"]["source"], "note": "no synthetic data: real input in use"},
                   out_dir / "truth.json")
        print(f"simulate: input.source is {params['input']['source']!r}; nothing simulated")
        return
    if not (cin_input or ncands_input) and params["input"]["dir"] != str(out_dir):
        raise InputError(f"params.yaml: input.source is synthetic but input.dir is "
                         f"'{params['input']['dir']}'; set it to '{out_dir}'")
    result = simulate_lean(params, progress=params["simulate"]["n_children"] >= 200_000)
    result.truth["achieved"] = published.achieved_figures(
        *(integer_ids(t) for t in (result.children, result.referrals, result.plans)), config.extract_date(params),
        int(params["episodes"]["same_episode_days"]))
    result.truth["achieved_meets_target"] = published.check_against_targets(result.truth["achieved"])
    result.truth["targets"] = published.TARGETS
    classic: list[pd.DataFrame] = []   # the object-string tables, made once if a writer needs them
    if cin_input or params["simulate"].get("cin_census", False):
        classic = classic or [classic_frame(t) for t in (result.children, result.referrals, result.plans)]
        # The clean, fault-free extract, written before faults are injected.
        cin_dir = in_dir if cin_input else CIN_CENSUS_DIR
        for old in cin_dir.glob("*.xml"):
            old.unlink()
        lea = cin_census.write(*classic, cin_dir,
                               extract_date=config.extract_date(params), progress=params["simulate"]["n_children"] >= 200_000)
        print(f"simulate: CIN census returns ({len(set(lea.values()))} LAs) -> {cin_dir}")
    if ncands_input or params["simulate"].get("ncands", False):
        # The clean, fault-free extract as a Child File (closed referrals; one file per FFY).
        ncands_dir = in_dir if ncands_input else NCANDS_DIR
        classic = classic or [classic_frame(t) for t in (result.children, result.referrals, result.plans)]
        for old in ncands_dir.glob(ncands.load_field_map()["writer"]["file_name"].format(year="*")):
            old.unlink()
        states = ncands.write(*classic, ncands_dir,
                              extract_date=config.extract_date(params),
                              progress=params["simulate"]["n_children"] >= 200_000)
        print(f"simulate: NCANDS Child File ({len(set(states.values()))} states) -> {ncands_dir}")
    del classic
    raw, fault_log = faults.inject_lazy(
        {"children": result.children, "referrals": result.referrals, "plans": result.plans},
        config.rng(params, "faults"), float(params["simulate"]["fault_rate"]), config.extract_date(params))
    result.truth["faults"] = fault_log
    for name, table in raw.items():   # in row batches: the text of a whole table is never held
        write_csv_batches(table.batches(), table.columns, out_dir / params["input"][name])
    write_json(result.truth, out_dir / "truth.json")
    write_json({params["input"][name]: file_sha256(out_dir / params["input"][name]) for name in raw},
               out_dir / config.SIMULATED_MARKER)
    print(f"simulate: {len(raw['children']):,} children, {len(raw['referrals']):,} referrals, "
          f"{len(raw['plans']):,} plans -> {out_dir}")


if __name__ == "__main__":
    stage_entry(main)()
