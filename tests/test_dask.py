"""Beyond one machine: the work ``compute.scheduler`` sends to a Dask cluster gives the
single-machine outputs, byte for byte.

A real ``dask.distributed.LocalCluster`` (2 worker processes, 1 thread each) runs each
piece of work that ``pipeline.compute`` hands out: the optimism bootstrap, the
family-bootstrap intervals and noise floor of the calibration measures, the per-group error
rates' intervals, the grouped k-fold predictions, the simulation replicates of
``frailty_coverage`` and the ``episodes`` derivation on partitions of whole families. Each
result is compared with the same call on this machine with ``==`` on every value (NaN equal
to NaN), and the analysis tables also as Parquet bytes: no tolerance is needed anywhere,
because every task computes exactly what the local run computes for the same item (same
seeds, same arithmetic, one BLAS thread) and the results are put together in submission
order. The slow test runs the stages themselves in a scratch project, with and without the
scheduler, and compares every output file's bytes. All data are synthetic.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dask.distributed import Client, LocalCluster

from pipeline import bootstrap, compute, errors, logistic, logistic_model, simulate
from pipeline import calibration_uncertainty as uncertainty
from pipeline.cli import InputError
from pipeline.derive import derive_cpp_durations, derive_rereport
from pipeline.family_partitions import cpp_durations_by_family, family_partition, rereport_by_family
from pipeline.io import write_parquet
from tests.conftest import ROOT, with_changes


@pytest.fixture(scope="module")
def dask_client():
    """A real cluster on this machine: 2 worker processes, one thread each, as the brief asks."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def on_dask(client, function, *args, **kwargs):
    """``function(*args, **kwargs)`` with every ``pipeline.compute`` task on the cluster."""
    with compute.using(client):
        return function(*args, **kwargs)


def assert_identical(here, there):
    """Equal in every value and type (NaN equal to NaN): frames, arrays, dicts, numbers."""
    if isinstance(here, pd.DataFrame):
        pd.testing.assert_frame_equal(here, there, check_exact=True)
    elif isinstance(here, dict):
        assert here.keys() == there.keys()
        for key in here:
            assert_identical(here[key], there[key])
    elif isinstance(here, (tuple, list)):
        assert len(here) == len(there)
        for a, b in zip(here, there):
            assert_identical(a, b)
    elif isinstance(here, np.ndarray):
        assert here.dtype == there.dtype and np.array_equal(here, there, equal_nan=here.dtype.kind == "f")
    else:
        assert type(here) is type(there) and (here == there or (here != here and there != there)), (here, there)


def _logistic_data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"x{j}": rng.normal(size=n) for j in range(5)})
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-(-0.7 + 0.8 * df["x0"] - 0.4 * df["x1"])))).astype(int)
    df["family"] = rng.integers(0, n // 3, size=n)     # about three rows per family
    df["weight"] = 1.0
    return df


def _sleep_then_square(delay: float, item: int) -> int:
    time.sleep(delay * (5 - item))        # the first items finish last
    return item * item


def _draw(seed: np.random.SeedSequence) -> float:
    return float(np.random.default_rng(seed).normal())


def test_results_come_back_in_submission_order_with_the_local_draws(dask_client):
    assert compute.map_tasks(_sleep_then_square, range(5), (0.1,), dask_client=dask_client) == [0, 1, 4, 9, 16]
    seeds = np.random.SeedSequence(7).spawn(6)
    assert compute.map_tasks(_draw, seeds, dask_client=dask_client) == compute.map_tasks(_draw, seeds)
    assert compute.slots(1, dask_client) == 2 and compute.slots(3) == 3


def test_optimism_bootstrap_is_identical(dask_client):
    df = _logistic_data(1500, 1)
    args = (df[[f"x{j}" for j in range(5)]].to_numpy(), df["y"].to_numpy(), df["weight"].to_numpy(),
            df["family"].to_numpy(), logistic_model.fit_model, logistic_model.score_model)
    here = bootstrap.optimism(*args, replicates=24, seed=3, n_jobs=1, progress=False)
    there = on_dask(dask_client, bootstrap.optimism, *args, replicates=24, seed=3, n_jobs=1, progress=False)
    assert_identical(here, there)
    assert here.loc["slope", "optimism"] != 0          # the replicates did something


def test_calibration_intervals_and_noise_floor_are_identical(dask_client):
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.6, 2000)
    y = (rng.random(2000) < p).astype(float)
    w = rng.choice([1.0, 1.5, 0.0], 2000, p=[0.8, 0.15, 0.05])      # IPCW-like, some rows weigh 0
    family = rng.integers(0, 700, 2000)
    here = uncertainty.binary_uncertainty(p, y, w, family, 30, 5, "test")
    there = on_dask(dask_client, uncertainty.binary_uncertainty, p, y, w, family, 30, 5, "test")
    assert_identical(here, there)
    assert here["ici_lower"] < here["ici_upper"]


def test_subgroup_calibration_is_identical(dask_client):
    from pipeline.calibration import subgroup_calibration

    rng = np.random.default_rng(8)
    n = 2400
    p = rng.uniform(0.05, 0.6, n)
    pred = pd.DataFrame({"p": p, "y": (rng.random(n) < p).astype(int), "weight": 1.0, "family": rng.integers(0, 800, n),
                         "sex": rng.choice(["female", "male"], n), "la_code": rng.choice(["E1", "E2", "E3"], n)})
    here = subgroup_calibration(pred, 10, replicates=12, seed=9)
    there = on_dask(dask_client, subgroup_calibration, pred, 10, replicates=12, seed=9)
    assert_identical(here, there)
    assert here["ici_lower"].notna().sum() == 5           # every group measured, one task each


def test_a_tasks_own_pieces_run_inside_it_on_a_cluster_of_threads():
    """Workers that are threads of the client's own process (processes=False): a task that
    hands out pieces itself (a subgroup's intervals) runs them in the task, not as tasks
    of its own, and the answer is the same."""
    from pipeline.calibration import subgroup_calibration

    rng = np.random.default_rng(12)
    n = 1200
    p = rng.uniform(0.05, 0.6, n)
    pred = pd.DataFrame({"p": p, "y": (rng.random(n) < p).astype(int), "weight": 1.0,
                         "family": rng.integers(0, 400, n), "sex": rng.choice(["female", "male"], n)})
    here = subgroup_calibration(pred, 10, replicates=6, seed=9)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert_identical(here, on_dask(client, subgroup_calibration, pred, 10, replicates=6, seed=9))


def test_group_error_rate_intervals_are_identical(dask_client):
    rng = np.random.default_rng(4)
    n = 3000
    pred = pd.DataFrame({"p": rng.uniform(0, 1, n), "y": rng.integers(0, 2, n), "weight": 1.0,
                         "family": rng.integers(0, 1000, n),
                         "sex": rng.choice(["female", "male"], n), "la_code": rng.choice(["E1", "E2", "E3"], n)})
    flags = errors.top_percent_flags(pred["p"].to_numpy(), 20)
    here = errors.group_rates(pred, flags, min_count=10, replicates=25, seed=6)
    there = on_dask(dask_client, errors.group_rates, pred, flags, min_count=10, replicates=25, seed=6)
    assert_identical(here, there)
    assert here["sensitivity_difference_lower"].notna().any()


def test_grouped_kfold_predictions_are_identical(dask_client):
    df = _logistic_data(2000, 7)
    X = df[[f"x{j}" for j in range(5)]]
    args = (X, df["y"].to_numpy(), df["weight"].to_numpy(), df["family"].to_numpy(), {"x2": 4}, 5, 11)
    here = logistic.grouped_kfold_predictions(*args)
    there = on_dask(dask_client, logistic.grouped_kfold_predictions, *args)
    assert_identical(here, there)
    assert set(here[1]) == {1, 2, 3, 4, 5} and not np.isnan(here[0]).any()


def test_headline_refitting_bootstrap_is_identical(dask_client):
    """Both designs: development / validation split, and grouped k-fold on the resample."""
    import functools

    from pipeline import headline_bootstrap

    rng = np.random.default_rng(10)
    frames = [_logistic_data(900, seed) for seed in (11, 12)]
    dev, val = (headline_bootstrap.rows(f[[f"x{j}" for j in range(5)]], f["y"], f["weight"], f["family"]) for f in frames)
    statistic = functools.partial(errors.headline_measures, percent=20)
    for args in ((dev, val), (dev, None)):
        kw = dict(replicates=8, seed=int(rng.integers(100)), folds=None if args[1] is not None else 4)
        here = headline_bootstrap.refit_replicates(*args, statistic, **kw)
        there = on_dask(dask_client, headline_bootstrap.refit_replicates, *args, statistic, **kw)
        assert_identical(here, there)
        assert here.attrs == there.attrs and len(here) + here.attrs["failed_replicates"] == 8


@pytest.fixture(scope="module")
def small_extract(params):
    """A simulated extract of 3,000 children (its families of one to several children)."""
    return simulate.simulate(with_changes(params, simulate={"n_children": 3000}))


def test_episode_derivation_on_family_partitions_is_identical(dask_client, small_extract, params, tmp_path):
    children, referrals, plans = small_extract.children, small_extract.referrals, small_extract.plans
    rules = dict(extract_date=pd.Timestamp(params["input"]["extract_date"]), index="every_closed",
                 time_origin="closure", same_episode_days=14)
    whole, whole_counts = derive_rereport(children, referrals, plans, **rules)
    durations = derive_cpp_durations(children, plans, extract_date=rules["extract_date"])
    # The partitions hold whole families and split the extract (else the test shows nothing).
    part = family_partition(children, 4)
    assert part.nunique() == 4 and children.assign(part=part.to_numpy()).groupby("family_id")["part"].nunique().max() == 1
    # 7 partitions on this machine (in turn), and on the cluster (2 per worker thread).
    for found, counts, plan_table in (
            (*rereport_by_family(children, referrals, plans, pieces=7, **rules),
             cpp_durations_by_family(children, plans, extract_date=rules["extract_date"], pieces=7)),
            (*on_dask(dask_client, rereport_by_family, children, referrals, plans, **rules),
             on_dask(dask_client, cpp_durations_by_family, children, plans, extract_date=rules["extract_date"]))):
        assert_identical(whole, found)
        assert counts == whole_counts
        assert_identical(durations, plan_table)
        for name, a, b in (("rereport", whole, found), ("durations", durations, plan_table)):
            write_parquet(a, tmp_path / f"{name}_whole.parquet")
            write_parquet(b, tmp_path / f"{name}_parts.parquet")
            assert (tmp_path / f"{name}_whole.parquet").read_bytes() == (tmp_path / f"{name}_parts.parquet").read_bytes()


def test_a_partition_it_cannot_reproduce_runs_as_one_piece(small_extract, params):
    """A referral of a child not in the children table: the whole derivation's own error,
    not a silently dropped row."""
    extract_date = pd.Timestamp(params["input"]["extract_date"])
    whole, _ = derive_rereport(small_extract.children, small_extract.referrals, small_extract.plans,
                               extract_date=extract_date)
    children = small_extract.children[small_extract.children["child_id"] != whole["child_id"].iloc[0]]
    with pytest.raises(KeyError):
        derive_rereport(children, small_extract.referrals, small_extract.plans, extract_date=extract_date)
    with pytest.raises(KeyError):
        rereport_by_family(children, small_extract.referrals, small_extract.plans, pieces=3, extract_date=extract_date)


def test_simulation_replicates_are_identical(dask_client, params):
    from pipeline import frailty_coverage

    small = with_changes(params, survival={**params["survival"], "frailty": "gamma"})
    here = frailty_coverage.coverage(small, replicates=2, n_children=800, frailty_variance=0.25)
    there = on_dask(dask_client, frailty_coverage.coverage, small, replicates=2, n_children=800, frailty_variance=0.25)
    assert_identical(here, there)


def test_an_unreachable_scheduler_is_one_line(monkeypatch):
    with socket.socket() as sock:           # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(compute, "CONNECT_TIMEOUT", 1)
    monkeypatch.delenv(compute.SCHEDULER_ENV, raising=False)
    with pytest.raises(InputError) as err:
        compute.client({"compute": {"scheduler": f"tcp://127.0.0.1:{port}"}})
    message = str(err.value)
    assert message.startswith(f"params.yaml: compute.scheduler: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert "\n" not in message
    assert compute.client({"compute": {"scheduler": None}}) is None and compute.client({}) is None


def test_the_environment_variable_takes_the_place_of_the_parameter(monkeypatch):
    params = {"compute": {"scheduler": "tcp://scheduler.example.org:8786"}}
    monkeypatch.delenv(compute.SCHEDULER_ENV, raising=False)
    assert compute.scheduler_address(params) == "tcp://scheduler.example.org:8786"
    monkeypatch.setenv(compute.SCHEDULER_ENV, "none")
    assert compute.scheduler_address(params) is None and compute.client(params) is None
    monkeypatch.setenv(compute.SCHEDULER_ENV, "tcp://127.0.0.1:8786")
    assert compute.scheduler_address({"compute": {"scheduler": None}}) == "tcp://127.0.0.1:8786"


def test_a_worker_with_another_installation_is_refused(dask_client):
    """Every task compares its worker's installation (Python, libraries, pipeline code) with
    the client's: a mismatch is a one-line error, never a silently different number."""
    future = dask_client.submit(compute._task, abs, "0" * 64, -3, pure=False)
    with pytest.raises(InputError, match="a worker runs another installation than the client"):
        future.result()
    assert dask_client.submit(compute._task, abs, compute.installation(), -3, pure=False).result() == 3


# -- the stages themselves ------------------------------------------------------------------

BIN = str(Path(sys.executable).parent)
STAGES_WITH_TASKS = ("episodes", "logistic", "calibration", "errors")


def _run(stage: str, cwd: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != compute.SCHEDULER_ENV},
           "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(cwd)}
    proc = subprocess.run([sys.executable, "-m", f"pipeline.{stage}"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{stage}:\n{proc.stdout}\n{proc.stderr}"


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("data/analysis", "data/predictions", "metrics", "reports", "models")
            for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_stages_on_the_cluster_write_the_same_files(dask_client, tmp_path):
    """A scratch copy of the project at 5,000 children and 20 replicates: simulate, clean,
    episodes, survival (Cox model only), logistic, calibration and errors here; then the
    stages that hand out tasks again with ``compute.scheduler`` set to the cluster: every
    output file the same bytes. Then the same for the logistic, calibration and errors stages
    with ``logistic.split: grouped_kfold`` (the folds as tasks)."""
    for rel in ("params.yaml", "pyproject.toml"):
        shutil.copy2(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["simulate"]["n_children"] = 5000
    params["calibration"]["bootstrap_replicates"] = params["errors"]["bootstrap_replicates"] = 20
    params["survival"].update(frailty=None, recurrent=False, competing_risks=False, parametric=[])   # not tested here

    def run(stages: tuple[str, ...], scheduler: str | None, split: str) -> dict[str, str]:
        params["compute"], params["logistic"]["split"] = {"scheduler": scheduler}, split
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        for stage in stages:
            _run(stage, tmp_path)
        return _digests(tmp_path)

    address = dask_client.scheduler.address
    here = run(("simulate", "clean", "episodes", "survival", "logistic", "calibration", "errors"), None, "temporal")
    there = run(STAGES_WITH_TASKS, address, "temporal")
    assert len(here) > 30 and here == there, sorted(k for k in here if here[k] != there.get(k))
    temporal = here["metrics/logistic.json"]
    here = run(STAGES_WITH_TASKS[1:], None, "grouped_kfold")
    there = run(STAGES_WITH_TASKS[1:], address, "grouped_kfold")
    assert here["metrics/logistic.json"] != temporal, "the k-fold run changed nothing"
    assert here == there, sorted(k for k in here if here[k] != there.get(k))
