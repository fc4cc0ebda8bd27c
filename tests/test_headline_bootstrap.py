"""The headline's intervals: a family bootstrap that refits the model (pipeline.headline_bootstrap),
its wiring into the errors stage and the report, and the validation design the logistic stage
writes for it. Synthetic data only."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from pipeline import errors, headline_bootstrap as hb, logistic, report
from pipeline.bootstrap import family_multiplicity
from pipeline.config import seed_sequence
from pipeline.logistic_model import fit_model

HEADLINE = functools.partial(errors.headline_measures, percent=20)


def _rows(rng: np.random.Generator, n_families: int, beta=(0.9, 0.5, -0.4), intercept: float = -1.3) -> hb.Rows:
    """Families of 1-4 rows, a family-level factor, a row-level factor and a normal covariate."""
    family = np.repeat(np.arange(n_families), 1 + rng.poisson(0.6, n_families))
    n = family.size
    X = np.column_stack([(rng.random(n_families) < 0.3)[family], rng.random(n) < 0.4, rng.normal(size=n)]).astype(float)
    lp = intercept + X @ np.asarray(beta) + rng.normal(0, 0.5, n_families)[family]
    return hb.rows(X, (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(float), np.ones(n), family)


def test_each_replicate_draws_whole_families_refits_and_scores_the_refit():
    """Development weights handed to the fit, and validation weights handed to the rule,
    are whole-family multiplicities (every row of a family drawn as often as its family)
    from the two named streams; the validation predictions are the refitted model's."""
    rng = np.random.default_rng(1)
    dev, val = _rows(rng, 300), _rows(rng, 200)
    dev, val = (r._replace(weight=rng.uniform(1, 2, len(r.y))) for r in (dev, val))   # IPCW-like weights carried
    fits, scored = [], []

    def fit(X, y, w, start=None):
        model = fit_model(X, y, w, start=start)
        fits.append((w, model))
        return model

    def statistic(p, y, w):
        scored.append((p, w))
        return HEADLINE(p, y, w)

    draws = hb.refit_replicates(dev, val, statistic, replicates=5, seed=7, fit=fit)
    assert len(draws) == 5 and draws.attrs["failed_replicates"] == 0
    assert np.array_equal(fits[0][0], dev.weight)                       # the start: all development rows
    dev_seeds = seed_sequence(7, "headline_development").spawn(5)
    val_seeds = seed_sequence(7, "headline_validation").spawn(5)
    for b in range(5):
        times = family_multiplicity(np.random.default_rng(dev_seeds[b]), dev.family, dev.family.max() + 1)
        np.testing.assert_array_equal(fits[b + 1][0], (dev.weight * times)[times > 0])  # drawn rows x family's draws
        v = family_multiplicity(np.random.default_rng(val_seeds[b]), val.family, val.family.max() + 1)
        p, w = scored[b]
        np.testing.assert_array_equal(w, (val.weight * v)[v > 0])
        np.testing.assert_allclose(p, fits[b + 1][1].predict_proba(val.X[v > 0])[:, 1])
    assert len({round(float(m.coef_[0, 0]), 12) for _, m in fits}) == 6   # each replicate its own fit


def test_grouped_kfold_replicates_predict_every_row_without_its_family():
    """With folds, a replicate reruns the cross-validation on the resample: each fold's
    model is trained on drawn families other than those it predicts."""
    rng = np.random.default_rng(2)
    data = _rows(rng, 300)
    data = data._replace(X=np.column_stack([data.X, data.family]))   # the family code travels in X (last column)
    trained: list[set] = []

    class Spy:
        def __init__(self, model, families):
            self.model, self.families = model, families

        def predict_proba(self, X):
            assert not set(X[:, -1].astype(int)) & self.families   # never a family it was trained on
            return self.model.predict_proba(X)

    def fit(X, y, w, start=None):
        families = set(X[:, -1].astype(int))
        trained.append(families)
        return Spy(fit_model(X, y, w), families)

    draws = hb.refit_replicates(data, None, HEADLINE, replicates=3, seed=3, folds=4, fit=fit)
    assert len(draws) == 3 and len(trained) == 1 + 3 * 4
    seeds = seed_sequence(3, "headline_development").spawn(3)
    for b in range(3):
        times = family_multiplicity(np.random.default_rng(seeds[b]), data.family, data.family.max() + 1)
        drawn = set(data.family[times > 0])
        folds = trained[1 + 4 * b: 5 + 4 * b]
        for k in range(4):   # each fold's training families: the drawn ones minus one quarter of them
            assert folds[k] < drawn and len(drawn - folds[k]) in (len(drawn) // 4, len(drawn) // 4 + 1)
        assert set.union(*(drawn - f for f in folds)) == drawn          # every drawn family predicted once


def test_replicates_that_cannot_be_refitted_are_skipped_and_counted():
    """One family holds every event: a replicate that does not draw it has one outcome only.
    Recount from the same stream: the skipped replicates are exactly those."""
    rng = np.random.default_rng(4)
    dev, val = _rows(rng, 40), _rows(rng, 100)
    y = np.zeros_like(dev.y)
    y[dev.family == 0] = 1
    dev = dev._replace(y=y)
    draws = hb.refit_replicates(dev, val, HEADLINE, replicates=30, seed=5)
    seeds = seed_sequence(5, "headline_development").spawn(30)
    missed = sum(family_multiplicity(np.random.default_rng(s), dev.family, 40)[dev.family == 0][0] == 0
                 for s in seeds)
    assert missed > 0 and draws.attrs["failed_replicates"] == missed and len(draws) == 30 - missed


def test_results_do_not_depend_on_the_number_of_workers(monkeypatch):
    rng = np.random.default_rng(5)
    dev, val = _rows(rng, 150), _rows(rng, 100)
    serial = hb.refit_replicates(dev, val, HEADLINE, replicates=6, seed=9, n_jobs=1)
    monkeypatch.setattr(hb, "PARALLEL_FROM_ROWS", 0)          # workers even for these few rows
    parallel = hb.refit_replicates(dev, val, HEADLINE, replicates=6, seed=9, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_percentile_intervals_by_hand():
    """Values 0, 1, ..., 100 (and a NaN, left out): numpy's linear quantiles at 2.5% and
    97.5% are positions 0.025 * 100 = 2.5 and 97.5, i.e. 2.5 and 97.5."""
    draws = pd.DataFrame({"ppv": [*range(101), np.nan]})
    out = hb.percentile_intervals(draws, {"ppv": 50.0, "npv": 0.5}).set_index("measure")
    assert out.loc["ppv", ["lower", "upper", "replicates"]].tolist() == pytest.approx([2.5, 97.5, 101], abs=1e-12)
    assert np.isnan(out.loc["npv", "lower"]) and out.loc["npv", "replicates"] == 0


def test_headline_measures_by_hand():
    """10 rows, top 20% = the 2 highest p (0.9: event, 0.8: none); 4 events in all.
    TP 1, FP 1, FN 3, TN 5 -> per 1,000: 100, 100, 300, 500; PPV 1/2, sensitivity 1/4.
    Weighting the first row 3 (drawn three times): 12 weighted rows, top 20% by midpoints
    (1.5 < 2.4, 3.5 >= 2.4): only the first row; TP 3, FP 0, FN 3, TN 6 -> 250, 0, 250, 500."""
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0])
    got = errors.headline_measures(p, y, np.ones(10), 20)
    assert [got[f"{c}_per_1000"] for c in ("tp", "fp", "fn", "tn")] == [100, 100, 300, 500]
    assert got["ppv"] == 0.5 and got["sensitivity"] == 0.25 and got["events_per_1000"] == 400
    w = np.array([3.0, *[1.0] * 9])
    got = errors.headline_measures(p, y, w, 20)
    assert [got[f"{c}_per_1000"] for c in ("tp", "fp", "fn", "tn")] == [250, 0, 250, 500]


def test_headline_sentence_carries_the_intervals():
    row = {"events_per_1000": 255, "flagged_per_1000": 200, "tp_per_1000": 88, "fp_per_1000": 112,
           "fn_per_1000": 167, "tn_per_1000": 633}
    bounds = {"events_per_1000": (241.2, 268.4), "tp_per_1000": (79.5, 96.49), "fp_per_1000": (104, 120),
              "fn_per_1000": (155, 180), "flagged_per_1000": (199.8, 200.2)}
    text = errors.headline(row, 365, "the 20% with the highest predicted risk", intervals=bounds)
    assert text == ("Of 1,000 referrals, 255 (95% CI 241-268) are re-referred within a year. Flagging the 20% with the "
                    "highest predicted risk flags 200: 88 (80-96) of them are re-referred and 112 (104-120) are not; "
                    "167 (155-180) re-referred children are not flagged.")


def _stage_inputs(n_dev: int, n_val: int, seed: int = 6) -> tuple[pd.DataFrame, tuple[pd.DataFrame, pd.DataFrame]]:
    """Predictions and design files as the logistic stage writes them."""
    rng = np.random.default_rng(seed)
    dev, val = _rows(rng, n_dev), _rows(rng, n_val)
    columns = ["factor", "other", "score"]
    p = fit_model(dev.X, dev.y, dev.weight).predict_proba(val.X)[:, 1]
    pred = pd.DataFrame({"p": p, "y": val.y.astype(int), "weight": 1.0, "family": val.family,
                         "sex": rng.choice(["F", "M"], len(p))})
    development = pd.DataFrame(dev.X, columns=columns).assign(y=dev.y, weight=dev.weight, family=dev.family)
    return pred, (development, pd.DataFrame(val.X, columns=columns))


SETTINGS = {"thresholds": [0.2, 0.5], "top_percents": [10, 20], "default_top_percent": 20, "bootstrap_replicates": 40,
            "decision_curve": {"from": 0.1, "to": 0.3, "step": 0.1}, "survival_horizon_months": 12}


def test_errors_stage_reports_the_refit_intervals_and_keeps_wilson_named_as_such():
    pred, design = _stage_inputs(600, 500)
    tables, metrics = errors.run(pred, None, SETTINGS, 365, min_count=10, seed=1, design=design)
    table = tables["headline_intervals"].set_index("measure")
    head = tables["rules"].set_index("rule").loc["top 20%"]
    at = metrics["at_default_rule"]
    assert table.loc["tp_per_1000", "estimate"] == head["tp_per_1000"] == at["tp_per_1000"]
    assert at["tp_per_1000_lower"] == int(np.floor(table.loc["tp_per_1000", "lower"] + 0.5))
    assert at["ppv_lower"] == round(table.loc["ppv", "lower"], 4) and at["ppv_wilson_lower"] == round(head["ppv_lower"], 4)
    assert (table["lower"] <= table["upper"]).all() and (table["replicates"] == 40).all()
    assert f" {at['tp_per_1000']} ({at['tp_per_1000_lower']}-{at['tp_per_1000_upper']}) of them" in metrics["statement"]
    assert "40 bootstrap resamples" in metrics["statement"] and "refitted" in metrics["headline_intervals"]


def test_intervals_are_withheld_with_the_figures():
    """40 validation rows: a cell below 10, so the figures are withheld, and their
    intervals with them (no bootstrap is run, nothing about the cells escapes)."""
    pred, design = _stage_inputs(200, 25)
    tables, metrics = errors.run(pred, None, SETTINGS, 365, min_count=10, seed=1, design=design)
    assert "below the disclosure threshold" in metrics["statement"] and "95%" not in metrics["statement"]
    assert tables["headline_intervals"][["estimate", "lower", "upper"]].isna().all().all()
    assert all(v is None for k, v in metrics["at_default_rule"].items() if k != "threshold")


def test_report_table_shows_the_headline_rule_with_its_intervals():
    rules = pd.DataFrame({"rule": ["top 10%", "top 20%"], "kind": "top_percent", "flagged_per_1000": [100, 200],
                          "tp_per_1000": [60, 111], "fp_per_1000": [40, 89], "fn_per_1000": [195, 144],
                          "tn_per_1000": [705, 656], "ppv": [0.6, 0.555], "false_negative_rate": [0.76, 0.564],
                          "tp": 1, "fp": 1, "fn": 1, "tn": 1})
    intervals = pd.DataFrame({"measure": ["tp_per_1000", "fp_per_1000", "fn_per_1000", "tn_per_1000", "ppv",
                                          "false_negative_rate"],
                              "lower": [104.04, 82.5, 133.1, 646.8, 0.52, 0.5434],
                              "upper": [117.5, 96.2, 153.2, 666.9, 0.5874, 0.5880]})
    table = report.error_table(rules, "top 20%", intervals)
    row = table.iloc[1]
    # Intervals written as the report writes every interval (report.fmt_interval: an en dash, the
    # estimate's 2-3 significant figures): 1 - PPV = 1 - 0.555 = 0.44499999... in floating point,
    # so 0.44; 1 - upper = 0.4126 -> 0.41; 1 - lower = 0.48.
    assert row["rule"] == "top 20% (headline)" and row["flagged, re-referred (true positives)"] == "111 (104\u2013118)"
    assert row["not flagged, not re-referred"] == "656 (647\u2013667)"
    assert row["share of flags that are wrong (1 - PPV)"] == "0.44 (0.41\u20130.48)"   # 1 - upper, 1 - lower
    assert table.iloc[0]["flagged, re-referred (true positives)"] == 60                # other rules: no intervals


@pytest.mark.parametrize("split", ["random_clusters", "grouped_kfold"])
def test_logistic_writes_the_validation_design_the_model_predicts_from(split):
    """The validation design has the development design's columns (splines included) and one
    row per prediction; the model refitted to the development design predicts the stage's
    validation risks from it (temporal / random split; the k-fold predictions are out-of-fold)."""
    rng = np.random.default_rng(8)
    n = 3000
    family = rng.integers(0, 1500, n)
    df = pd.DataFrame({"family_id": [f"F{f}" for f in family], "a": rng.integers(0, 2, n),
                       "age_years": rng.uniform(0, 17, n), "band": rng.choice(["x", "y", "z"], n)})
    lp = -1.2 + 0.8 * df["a"] + 0.05 * (df["age_years"] - 8) ** 2 / 4
    df["time_days"] = np.where(rng.random(n) < 1 / (1 + np.exp(-lp)), rng.uniform(1, 364, n), 400.0)
    df["event"] = (df["time_days"] < 365).astype(int)
    df["event_type"] = np.where(df["event"] == 1, "re_referral", "extract_date")
    s = {"horizon_days": 365, "censoring": "exclude", "split": split, "validation_share": 0.3, "folds": 3,
         "covariates": ["a", "age_years"], "categorical": ["band"], "splines": {"age_years": 3}, "groups": []}
    _, _, out = logistic.run(df, s, seed=2)
    development, design, pred = out["development"], out["validation_design"], out["predictions"]
    assert list(design.columns) == [c for c in development.columns if c not in ("y", "weight", "family")]
    assert {"age_years", "age_years'"} <= set(design.columns) and len(design) == len(pred)
    dev_rows, val_rows, folds = hb.design_rows(development, design, pred)
    if split == "grouped_kfold":
        assert val_rows is None and folds == 3
        return
    refit = fit_model(dev_rows.X, dev_rows.y, dev_rows.weight)
    np.testing.assert_allclose(refit.predict_proba(val_rows.X)[:, 1], pred["p"], rtol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        hb.design_rows(development, design.iloc[:-1], pred)


# --- coverage: does the interval cover the across-replicate expected value? -------------------

def _misspecified_extract(rng: np.random.Generator, n_families: int) -> hb.Rows:
    """Families of 1 + Poisson(0.6) rows with a shared random effect (sd 0.6 on the logit)
    and a family-level factor; the true logit has a quadratic term and an interaction that
    the fitted (linear) model leaves out, as a real model leaves out what it does not know."""
    family = np.repeat(np.arange(n_families), 1 + rng.poisson(0.6, n_families))
    n = family.size
    b = (rng.random((6, n)) < np.array([[.3], [.35], [.4], [.15], [.1], [.2]])).astype(float)
    b[0] = (rng.random(n_families) < 0.3)[family]
    z = rng.normal(size=(2, n))
    lp = (-1.9 + b.T @ np.array([0.8, 0.6, 0.5, 0.4, -0.3, 0.0]) + 0.3 * z[0] + 0.4 * z[0] ** 2
          + 0.6 * b[1] * z[1] + rng.normal(0, 0.6, n_families)[family])
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(float)
    return hb.rows(np.column_stack([*b, *z]), y, np.ones(n), family)


COVERED = ("events_per_1000", "tp_per_1000", "fp_per_1000", "fn_per_1000", "ppv")


@pytest.mark.slow
def test_refit_intervals_cover_the_expected_headline_and_wilson_falls_short():
    """Simulation (fixed population, new samples): each of N = 100 replicates draws a
    development extract (300 families, ~480 rows) and a validation extract (2,000
    families, ~3,200 rows), fits the model, flags the top 20% of validation rows and gets
    95% intervals from B = 100 refitting-bootstrap replicates. The target is the expected
    value of each figure over replicates (the mean of 1,000 further replicates; its Monte
    Carlo error is ~1/30 of a replicate's spread).

    Bound: each figure covered in >= 85 of 100 replicates. With a true coverage of 95% the
    count is Binomial(100, 0.95): P(count <= 84) = 3.7e-5 (scipy.stats.binom.cdf(84, 100,
    0.95)), so a failure means intervals that are too narrow (e.g. the model not refitted,
    or families split up), not bad luck; the streams are seeded, so the test is repeatable.
    The fixed-model Wilson interval of the PPV, on the same replicates, covers less often
    than the refitting bootstrap's (it leaves the refit's uncertainty out): asserted too."""
    rng = np.random.default_rng(20261201)

    def replicate() -> tuple[hb.Rows, hb.Rows, np.ndarray]:
        dev, val = _misspecified_extract(rng, 300), _misspecified_extract(rng, 2000)
        return dev, val, fit_model(dev.X, dev.y, dev.weight).predict_proba(val.X)[:, 1]

    expected = pd.DataFrame([HEADLINE(p, val.y, val.weight) for _, val, p in (replicate() for _ in range(1000))]).mean()
    covered, wilson = dict.fromkeys(COVERED, 0), 0
    for r in range(100):
        dev, val, p = replicate()
        estimate = HEADLINE(p, val.y, val.weight)
        draws = hb.refit_replicates(dev, val, HEADLINE, replicates=100, seed=r)
        intervals = hb.percentile_intervals(draws, {m: estimate[m] for m in COVERED}).set_index("measure")
        for m in COVERED:
            covered[m] += int(intervals.loc[m, "lower"] <= expected[m] <= intervals.loc[m, "upper"])
        fixed = errors.confusion(val.y, errors.top_percent_flags(p, 20))
        wilson += int(fixed["ppv_lower"] <= expected["ppv"] <= fixed["ppv_upper"])
    assert min(covered.values()) >= 85, (covered, wilson)
    assert wilson < covered["ppv"], (covered, wilson)
