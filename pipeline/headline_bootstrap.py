"""Uncertainty of the headline figures: a family bootstrap of the whole modelling process.

The headline ("of 1,000 referrals, ... flagging the top 20% flags 200: TP of them ...")
is a statistic of the validation rows scored by a model fitted to the development rows.
Its sampling variation has two sources: which families happened to be in the
development data (the fitted coefficients, hence who is flagged) and which families are
in the validation data. A Wilson interval for, say, the PPV treats the fitted model as
fixed and leaves the first source out (issue 11: it covered the across-replicate mean
PPV of 200 simulated extracts in 85.5% of them, not 95%). This bootstrap repeats the
whole process instead (Efron and Tibshirani 1993, "An Introduction to the Bootstrap",
ch. 13 and 17; Harrell 2015, "Regression Modeling Strategies", 2nd ed., ch. 5;
Steyerberg 2019, "Clinical Prediction Models", 2nd ed., ch. 5): for each of B replicates

1. draw development families with replacement (all rows of a drawn family come along,
   as often as it is drawn: ``bootstrap.family_multiplicity``, frequency weights, nothing
   copied) from the named stream ``headline_development``;
2. refit the prediction model to that replicate (``logistic_model.fit_model``, warm
   start from the fit to all development rows: one likelihood maximum, fewer iterations);
3. predict every validation row with the refitted model;
4. draw validation families with replacement from an independent named stream
   (``headline_validation``);
5. compute the statistic (the headline rule and its measures, given by the caller) on the
   resampled validation rows, weighted by multiplicity x the row's own weight (IPCW
   weights are carried; the censoring distribution behind them is not re-estimated).

The 95% interval of each measure is the 2.5th and 97.5th percentiles of its B
replicate values (percentile method; replicates whose statistic is undefined are left
out of that measure, and counted). Per-1,000 figures enter unrounded: rounding each
replicate (largest remainders, so that the four cells add up to 1,000) would tie one
cell's rounding to the others' remainders; the limits are rounded once, for display.

Coverage of the expected value over new samples from a fixed population (a misspecified
logistic model with family clustering; ``tests/test_headline_bootstrap.py``): with 300
development and 2,000 validation families, 200 replicates of B = 200, events / TP / FP /
FN per 1,000 and PPV were covered in 91.5 / 98.5 / 98.5 / 93.5 / 98.5% of replicates, the
fixed-model Wilson interval of the PPV in 87.5%. The percentile intervals of the figures
that depend on who is flagged err on the wide side: a replicate's refit adds its own
estimation error to the original's, and the PPV of a top-k% rule falls with either.

As in the optimism bootstrap of ``calibration`` (``bootstrap.optimism`` on the saved
development design), the design is fixed: indicator coding and spline knots are those
of the full development fit, and only the final logistic model is refitted (rms's
``validate`` reuses the fitted design matrix the same way). With the grouped k-fold
split the validation predictions are out-of-fold predictions of the development rows
themselves; a replicate then draws families once (the development stream), assigns the
drawn families to k folds at random, refits the model k times without each fold and
scores the replicate's own rows on their out-of-fold predictions: the cross-validation
repeated on the resample, with no second (validation) draw, since there is no separate
validation set.

A replicate whose development draw has one outcome only, or whose fit fails, cannot
be refitted: it is skipped and counted (``attrs["failed_replicates"]``).

Replicates run in parallel (joblib, ``n_jobs``) in chunks with one BLAS thread per
worker, from ``PARALLEL_FROM_ROWS`` development rows (with ``compute.scheduler``, as Dask
tasks at any size: ``pipeline.compute``): below that, starting the workers
(each imports scikit-learn) costs more than it saves (measured at the 25k-children
default: 5.9-6.8 s for the stage serially, 11.7-13.2 s with two workers). Each
replicate's streams are spawned from the seed up front, so results do not depend on the
number of workers.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline import compute
from pipeline.bootstrap import distinct_rows, family_multiplicity
from pipeline.config import seed_sequence
from pipeline.logistic_model import fit_model

#: statistic(p, y, weight) -> {measure: value} on (weighted) validation rows
Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, float]]
Fit = Callable[..., Any]                  # fit(X, y, weight, start=None) -> model with predict_proba

#: Development rows from which replicates run in parallel (see the module docstring).
PARALLEL_FROM_ROWS = 100_000
DEVELOPMENT_STREAM = "headline_development"
VALIDATION_STREAM = "headline_validation"


class Rows(NamedTuple):
    """A design matrix with its outcome, weight and family code per row."""
    X: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    family: np.ndarray


def rows(X: Any, y: Any, weight: Any, family: Any) -> Rows:
    """``Rows`` as contiguous floats, families as codes 0..F-1."""
    return Rows(np.ascontiguousarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(weight, dtype=float),
                pd.factorize(np.asarray(family))[0])


def _predict(model: Any, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(X)[:, 1]


def _split_replicate(dev: Rows, val: Rows, statistic: Statistic, fit: Fit, start: Any,
                     pooled: tuple[np.ndarray, np.ndarray] | None,
                     dev_seed: np.random.SeedSequence, val_seed: np.random.SeedSequence) -> dict[str, float] | None:
    """Steps 1-5 for a development / validation split; None when the refit is impossible.
    ``pooled``: ``bootstrap.distinct_rows`` of the development rows, whose replicate is then
    fitted on its distinct (x, y) rows with summed weights (the same likelihood)."""
    w = dev.weight * family_multiplicity(np.random.default_rng(dev_seed), dev.family, int(dev.family.max()) + 1)
    drawn = w > 0
    if np.unique(dev.y[drawn]).size < 2:
        return None
    if pooled is None:
        model = fit(dev.X[drawn], dev.y[drawn], w[drawn], start=start)
    else:
        code, first = pooled
        summed = np.bincount(code, weights=w, minlength=len(first))
        rows = first[summed > 0]
        model = fit(dev.X[rows], dev.y[rows], summed[summed > 0], start=start)
    p = _predict(model, val.X)
    v = val.weight * family_multiplicity(np.random.default_rng(val_seed), val.family, int(val.family.max()) + 1)
    keep = v > 0
    return statistic(p[keep], val.y[keep], v[keep])


def _kfold_replicate(data: Rows, folds: int, statistic: Statistic, fit: Fit, start: Any,
                     seed: np.random.SeedSequence) -> dict[str, float] | None:
    """Grouped k-fold cross-validation repeated on one family resample of the data."""
    rng = np.random.default_rng(seed)
    n_families = int(data.family.max()) + 1
    w = data.weight * family_multiplicity(rng, data.family, n_families)
    drawn = np.flatnonzero(w > 0)
    family_fold = np.full(n_families, -1)
    chosen = np.unique(data.family[drawn])
    family_fold[rng.permutation(chosen)] = np.arange(chosen.size) % folds   # near-equal numbers of families
    fold = family_fold[data.family[drawn]]
    p = np.empty(drawn.size)
    for k in range(folds):
        train, test = drawn[fold != k], fold == k
        if np.unique(data.y[train]).size < 2 or not test.any():
            return None
        model = fit(data.X[train], data.y[train], w[train], start=start)
        p[test] = _predict(model, data.X[drawn[test]])
    return statistic(p, data.y[drawn], w[drawn])


def _chunk(task: tuple, seeds: list[tuple]) -> list[dict[str, float] | None]:
    kind, args = task
    out = []
    with threadpool_limits(limits=1):
        for seed in seeds:
            try:
                out.append(_split_replicate(*args, *seed) if kind == "split" else _kfold_replicate(*args, *seed))
            except (ValueError, np.linalg.LinAlgError):   # a refit that cannot be done: skipped, counted
                out.append(None)
    return out


def refit_replicates(dev: Rows, val: Rows | None, statistic: Statistic, replicates: int, seed: int,
                     folds: int | None = None, fit: Fit = fit_model, n_jobs: int = 1,
                     progress: bool = False, pool: bool = True) -> pd.DataFrame:
    """The statistic on each of ``replicates`` bootstrap replicates of the modelling process.

    ``val``: the validation rows (development / validation split); with ``folds`` (grouped
    k-fold), ``val`` is None and the statistic is of out-of-fold predictions of ``dev``.
    ``n_jobs``: workers, used from ``PARALLEL_FROM_ROWS`` development rows. ``pool``
    (split only): fit each replicate on the distinct development (x, y) rows with summed
    weights (``fit`` must take weights as frequency weights, as the logistic model does).
    One row per successful replicate; ``attrs["failed_replicates"]`` counts the others.
    """
    start = fit(dev.X, dev.y, dev.weight)
    dev_seeds = seed_sequence(seed, DEVELOPMENT_STREAM).spawn(replicates)
    if folds is None:
        if val is None:
            raise ValueError("refit_replicates: validation rows are needed without folds")
        seeds = list(zip(dev_seeds, seed_sequence(seed, VALIDATION_STREAM).spawn(replicates)))
        # Coded covariates: a replicate's fit on its distinct (x, y) rows, weights summed
        # (at 1M children 661,315 development rows are 67,433 distinct: 8 times faster).
        pooled = distinct_rows(dev.X, dev.y) if pool else None
        if pooled is not None and len(pooled[1]) > len(dev.y) / 2:
            pooled = None
        task = ("split", (dev, val, statistic, fit, start, pooled))
    else:
        seeds = [(s,) for s in dev_seeds]
        task = ("kfold", (dev, int(folds), statistic, fit, start))
    n_jobs = n_jobs if len(dev.y) >= PARALLEL_FROM_ROWS else 1
    per_task = max(1, -(-replicates // (10 * compute.slots(n_jobs))))
    chunks = [seeds[i:i + per_task] for i in range(0, replicates, per_task)]
    # Here in turn or in n_jobs processes, or as Dask tasks with compute.scheduler (pipeline.compute).
    results_iter = compute.iter_tasks(_chunk, chunks, (task,), n_jobs)
    results: list[dict[str, float] | None] = []
    with tqdm(total=replicates, desc="headline bootstrap", unit="rep", disable=not progress, file=sys.stderr) as bar:
        for chunk in results_iter:            # in submission order: results do not depend on timing
            results.extend(chunk)
            bar.update(len(chunk))
    table = pd.DataFrame([r for r in results if r is not None])
    table.attrs["failed_replicates"] = sum(r is None for r in results)
    return table


def design_rows(development: pd.DataFrame, validation_design: pd.DataFrame, predictions: pd.DataFrame
                ) -> tuple[Rows, Rows | None, int | None]:
    """The development and validation ``Rows`` from the logistic stage's files, and the number
    of folds when the predictions are out-of-fold (a ``fold`` column: grouped k-fold; the
    validation rows are then the development rows, in the same order).

    ``development``: design columns, y, weight, family; ``validation_design``: the same design
    columns, one row per row of ``predictions`` (p, y, weight, family)."""
    columns = [c for c in development.columns if c not in ("y", "weight", "family")]
    if list(validation_design.columns) != columns:
        raise ValueError("data/predictions/validation_design.parquet: columns differ from the development design's "
                         "(rerun the logistic stage)")
    if len(validation_design) != len(predictions):
        raise ValueError(f"data/predictions/validation_design.parquet: {len(validation_design)} rows, but "
                         f"{len(predictions)} validation predictions (rerun the logistic stage)")
    dev = rows(development[columns], development["y"], development["weight"], development["family"])
    if "fold" in predictions:
        if len(development) != len(predictions) or not np.array_equal(development["family"], predictions["family"]):
            raise ValueError("grouped k-fold: the development rows are not the rows of the out-of-fold predictions")
        return dev, None, int(predictions["fold"].max())
    val = rows(validation_design, predictions["y"], predictions["weight"], predictions["family"])
    return dev, val, None


def describe(folds: int | None, replicates: int, failed: int) -> str:
    """The method in one sentence, for the metrics."""
    how = (f"whole families resampled, the {folds}-fold cross-validation repeated on each resample (the model refitted "
           "without each fold)" if folds else
           "whole development families resampled and the model refitted, whole validation families resampled")
    left_out = f"; {failed} replicates could not be refitted and are left out" if failed else ""
    return (f"95% percentile intervals from {replicates} bootstrap replicates of the modelling process: {how}; "
            f"the design's coding and spline knots fixed{left_out}")


def percentile_intervals(draws: pd.DataFrame, estimate: dict[str, float], level: float = 0.95) -> pd.DataFrame:
    """measure, estimate, lower, upper (percentiles of the replicate values; NaN ignored)
    and the number of replicates behind each interval."""
    tail = (1 - level) / 2
    out = []
    for measure, value in estimate.items():
        values = draws[measure].to_numpy(dtype=float) if measure in draws else np.array([])
        values = values[~np.isnan(values)]
        lower, upper = np.quantile(values, [tail, 1 - tail]) if values.size else (np.nan, np.nan)
        out.append({"measure": measure, "estimate": value, "lower": float(lower), "upper": float(upper),
                    "replicates": int(values.size)})
    return pd.DataFrame(out)
