"""How often 95% intervals cover the true hazard ratios when families share a frailty.

    python -m pipeline.frailty_coverage --replicates 60 --children 25000 --frailty-variance 0.25

Simulates ``--replicates`` extracts with ``pipeline.simulate`` (the project's params, seed
``seed + r`` for replicate r, ``simulate.frailty_variance`` and ``simulate.n_children`` as
given), derives the analysis table as the ``episodes`` stage does, and fits the survival
stage's two models on the survival stage's covariates, LA strata and family clusters:

* ``cox``: ``pipeline.cox.CoxPH``, family-robust (sandwich) standard errors (the stage's
  ``hazard_ratios.csv``);
* ``frailty``: ``pipeline.frailty.GammaFrailtyCox`` (``frailty_hazard_ratios.csv``).

The truth is the simulation's conditional log hazard ratio (``truth.json``); a categorical
indicator the simulation gives no effect has truth 0. Prints coverage per model and
covariate, pooled over the simulated effects and over the null indicators, and writes
every interval to ``--out`` (CSV) when given. With ``compute.scheduler`` in params.yaml the
replicates run as Dask tasks (``pipeline.compute``), each from its own seed as here.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from pipeline import compute, config, simulate, survival
from pipeline.cox import CoxPH
from pipeline.derive import derive_rereport
from pipeline.design import design_matrix
from pipeline.frailty import GammaFrailtyCox

Z95 = stats.norm.ppf(0.975)


def replicate(params: dict[str, Any], seed: int, n_children: int, frailty_variance: float) -> pd.DataFrame:
    """One simulated extract, both models: a row per (model, covariate) with the interval."""
    p = copy.deepcopy(params)
    p["seed"] = seed
    p["simulate"].update(n_children=n_children, frailty_variance=frailty_variance)
    extract = simulate.simulate(p)
    df, _ = derive_rereport(extract.children, extract.referrals, extract.plans,
                            extract_date=config.extract_date(p))
    df = df.reset_index(drop=True)
    s = p["survival"]
    X, _ = design_matrix(df, s["covariates"], s.get("categorical", []))
    truth = survival.truth_for(list(X.columns), extract.truth)
    strata = df[s["strata"]] if s.get("strata") else None
    cox = CoxPH(ties=s["ties"]).fit(X, df["time_days"], df["event"], strata=strata, cluster=df[s["cluster"]])
    frail = GammaFrailtyCox(ties=s["ties"]).fit(X, df["time_days"], df["event"], df[s["cluster"]], strata=strata)
    rows = []
    for model, coef, se in (("cox", cox.coef_, cox.robust_se_), ("frailty", frail.coef_, frail.se_)):
        rows.append(pd.DataFrame({"replicate": seed, "model": model, "covariate": X.columns, "truth": truth.to_numpy(),
                                  "coef": coef, "se": se}))
    out = pd.concat(rows, ignore_index=True)
    out["lower"], out["upper"] = out["coef"] - Z95 * out["se"], out["coef"] + Z95 * out["se"]
    out["covered"] = (out["lower"] <= out["truth"]) & (out["truth"] <= out["upper"])
    out["theta"] = frail.theta_
    out["simulated_effect"] = out["covariate"].isin(simulate.HAZARD_COVARIATES)
    return out


def coverage(params: dict[str, Any], replicates: int, n_children: int, frailty_variance: float,
             progress: bool = False) -> pd.DataFrame:
    """Every interval of every replicate (seeds ``params['seed'] + r``)."""
    parts = []
    seeds = [int(params["seed"]) + r for r in range(replicates)]
    with threadpool_limits(limits=1, user_api="blas"):
        for r, part in enumerate(compute.iter_tasks(_replicate_task, seeds, (params, n_children, frailty_variance))):
            parts.append(part)
            if progress:
                print(f"replicate {r + 1}/{replicates}", file=sys.stderr, flush=True)
    return pd.concat(parts, ignore_index=True)


def _replicate_task(params: dict[str, Any], n_children: int, frailty_variance: float, seed: int) -> pd.DataFrame:
    return replicate(params, seed, n_children, frailty_variance)


def summarise(intervals: pd.DataFrame) -> pd.DataFrame:
    """Per simulated effect, then pooled over the simulated effects and over the null
    indicators: the truth, each model's mean estimate and coverage (share of 95% intervals
    holding the truth), and the number of intervals."""
    def per(group: pd.DataFrame) -> pd.Series:
        out = {"truth": group["truth"].iloc[0] if group["truth"].nunique() == 1 else np.nan}
        for model in ("cox", "frailty"):
            m = group[group["model"] == model]
            out.update({f"{model}_mean_coef": m["coef"].mean(), f"{model}_coverage": m["covered"].mean()})
        out["intervals_per_model"] = int((group["model"] == "cox").sum())
        return pd.Series(out)

    effects = intervals[intervals["simulated_effect"]]
    rows = [per(g).rename(c) for c, g in effects.groupby("covariate")]
    rows.append(per(effects).rename("simulated effects (pooled)"))
    rows.append(per(intervals[~intervals["simulated_effect"]]).rename("null indicators (pooled)"))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--children", type=int, default=25_000)
    parser.add_argument("--frailty-variance", type=float, default=0.25)
    parser.add_argument("--out", default=None, help="write every interval to this CSV")
    args = parser.parse_args()
    t0 = time.perf_counter()
    params = config.load_params()
    compute.use(params)
    intervals = coverage(params, args.replicates, args.children, args.frailty_variance, progress=True)
    if args.out:
        intervals.to_csv(args.out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summarise(intervals).round(3).to_string())
    theta = intervals.drop_duplicates("replicate")["theta"]
    print(f"\nfrailty variance: mean {theta.mean():.4f}, sd {theta.std():.4f} (true {args.frailty_variance}); "
          f"{args.replicates} replicates of {args.children:,} children in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
