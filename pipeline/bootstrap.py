"""Harrell's bootstrap optimism correction, resampling whole families.

For B replicates: draw families with replacement (all rows of a drawn family come
along, as often as it is drawn), refit the whole modelling step on the replicate, and
score the refitted model on the replicate (apparent) and on the original data (test).
optimism = mean(apparent_b - test_b); corrected = apparent - optimism (Harrell, Lee and
Mark 1996; Steyerberg 2019, ch. 17).

A replicate is the original rows with frequency weights, each row weighted by the number
of times its family was drawn: every likelihood, sum and smooth of the modelling and
scoring steps is then that of the repeated rows (tested), and nothing is copied. For the
same reason rows sharing one (x, y) are pooled into one row weighted by their summed weight
(``distinct_rows``; on the default's coded covariates a million rows are ~70,000): the same
likelihood and measures, up to the order of floating-point sums.
Replicates run in parallel (``pipeline.compute.iter_tasks``: joblib with ``n_jobs``, or
Dask tasks with ``compute.scheduler``), a few per task so that the data travel to each
worker a few times rather than once per replicate, with one BLAS thread per worker:
measured on 2 cores, default BLAS threading made parallel replicates 2.7-8.6x slower.
Each replicate's random stream is spawned from one seed, so results do not depend on the
number of workers, the tasks, their scheduling or the machine they ran on.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline import compute
from pipeline.config import seed_sequence

Fit = Callable[..., Any]                               # fit(X, y, weight, start=None) -> model
Score = Callable[[Any, np.ndarray, np.ndarray, np.ndarray], dict[str, float]]


def family_multiplicity(rng: np.random.Generator, family_code: np.ndarray, n_families: int) -> np.ndarray:
    """How many times each row's family is drawn in one replicate (families with replacement)."""
    drawn = np.bincount(rng.integers(0, n_families, size=n_families), minlength=n_families)
    return drawn[family_code]


def family_draws(family: np.ndarray, replicates: int, seed: int, stream: str) -> Iterator[np.ndarray]:
    """Each replicate's family multiplicity per row, for the percentile intervals of the
    calibration and errors stages (each its own named ``stream``, so their draws are independent)."""
    code = pd.factorize(np.asarray(family))[0]
    for child in family_seeds(replicates, seed, stream):
        yield family_multiplicity(np.random.default_rng(child), code, int(code.max()) + 1)


def distinct_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code among the distinct (x, y) rows (bit for bit), and the first row of each."""
    rows = np.ascontiguousarray(np.column_stack([X, y]), dtype=float)
    as_bytes = rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).ravel()
    code = pd.factorize(as_bytes)[0]
    first = np.full(int(code.max()) + 1 if len(code) else 0, len(code), dtype=np.int64)
    np.minimum.at(first, code, np.arange(len(code)))
    return code, first


def family_seeds(replicates: int, seed: int, stream: str) -> list[np.random.SeedSequence]:
    """The child seed of each replicate of ``family_draws``: a task given some of them draws
    exactly the multiplicities ``family_draws`` gives for those replicates."""
    return seed_sequence(seed, stream).spawn(replicates)


def seed_chunks(replicates: int, seed: int, stream: str, n_jobs: int = 1) -> list[list[np.random.SeedSequence]]:
    """``family_seeds`` cut into a few runs per parallel slot (``compute.slots``), in order."""
    return compute.chunks(family_seeds(replicates, seed, stream), 2 * compute.slots(n_jobs))


def _replicates(X: np.ndarray, y: np.ndarray, weight: np.ndarray, family_code: np.ndarray, fit: Fit,
                score: Score, start: Any, pooled: tuple[np.ndarray, np.ndarray] | None,
                seeds: list[np.random.SeedSequence]) -> list[tuple[dict, dict]]:
    """Apparent and test scores of the replicates of ``seeds`` (one task); ``pooled``:
    ``distinct_rows`` of (X, y), or None for row by row."""
    n_families = int(family_code.max()) + 1
    out = []
    if pooled is not None:                  # rows with one (x, y) as one row weighted by their sum
        code, first = pooled
        Xp, yp = X[first], y[first]
        w_all = np.bincount(code, weights=weight, minlength=len(first))
        kept = w_all > 0
    with threadpool_limits(limits=1):
        for seed in seeds:
            w = weight * family_multiplicity(np.random.default_rng(seed), family_code, n_families)
            if pooled is None:
                drawn = w > 0
                model = fit(X[drawn], y[drawn], w[drawn], start=start)
                out.append((score(model, X[drawn], y[drawn], w[drawn]), score(model, X, y, weight)))
                continue
            wp = np.bincount(code, weights=w, minlength=len(first))
            drawn = wp > 0
            model = fit(Xp[drawn], yp[drawn], wp[drawn], start=start)
            out.append((score(model, Xp[drawn], yp[drawn], wp[drawn]), score(model, Xp[kept], yp[kept], w_all[kept])))
    return out


def optimism(X: np.ndarray, y: np.ndarray, weight: np.ndarray, family: np.ndarray, fit: Fit, score: Score,
             replicates: int, seed: int, n_jobs: int = 2, progress: bool = True, pool: bool = True) -> pd.DataFrame:
    """Apparent, optimism and optimism-corrected value of each measure ``score`` returns.

    ``pool``: replicates on the distinct (x, y) rows with summed weights (``fit`` and
    ``score`` must treat weights as frequency weights, as the logistic model and
    ``val_prob`` do): the same answer up to the order of floating-point sums (on the
    default, optimism within 1e-12), ten times faster at a million rows.

    ``fit(X, y, weight, start=model)`` refits the modelling step; ``start`` is the fit to
    the original data, from which a replicate's fit may start (an unpenalised logistic
    likelihood has one maximum, so the start changes the iterations, not the answer).
    """
    X, y, weight = np.ascontiguousarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(weight, dtype=float)
    family_code = pd.factorize(np.asarray(family))[0]
    model = fit(X, y, weight)
    apparent = score(model, X, y, weight)
    # Replicates fit and score the distinct (x, y) rows, each weighted by the sum of its rows'
    # weights: the same weighted likelihood and measures (rows count as frequency weights,
    # module docstring) on a few per cent of the rows when the covariates are codes.
    pooled = distinct_rows(X, y) if pool else None
    if pooled is not None and len(pooled[1]) > len(y) / 2:
        pooled = None                       # (mostly distinct rows, e.g. splines: nothing to gain)
    seeds = seed_sequence(seed, "optimism_bootstrap").spawn(replicates)
    per_task = max(1, -(-replicates // (10 * compute.slots(n_jobs))))
    chunks = [seeds[i:i + per_task] for i in range(0, replicates, per_task)]
    tasks = compute.iter_tasks(_replicates, chunks, (X, y, weight, family_code, fit, score, model, pooled), n_jobs)
    results = []
    with tqdm(total=replicates, desc="bootstrap replicates", unit="rep", disable=not progress, file=sys.stderr) as bar:
        for chunk in tasks:                 # in submission order: results do not depend on timing
            results.extend(chunk)
            bar.update(len(chunk))
    boot = pd.DataFrame([r[0] for r in results])
    test = pd.DataFrame([r[1] for r in results])
    out = pd.DataFrame({"apparent": pd.Series(apparent), "optimism": (boot - test).mean()})
    out["corrected"] = out["apparent"] - out["optimism"]
    out.index.name = "measure"
    return out
