"""Where the heavy, independent work runs: this machine, or a ``dask.distributed`` cluster.

``params.yaml: compute.scheduler`` is null (this machine) or the address of a running
``dask.distributed`` scheduler (``tcp://host:8786``); the environment variable
``PIPELINE_COMPUTE_SCHEDULER``, when set, takes its place (``none`` for this machine), so a
run can be moved without editing ``params.yaml``, whose content the report records. A stage's ``main`` calls
``use(params)`` once; the pure functions then hand their independent pieces of work
(bootstrap replicates, folds, per-group intervals, partitions of whole families, simulated
extracts) to ``map_tasks``, which runs them

* **here**: in order in this process (``n_jobs`` 1), or in ``n_jobs`` joblib processes with
  one BLAS thread each (as the bootstrap always has);
* **on the cluster**: one Dask task per item, the ``shared`` arguments scattered to every
  worker once (not once per task), one BLAS thread per task.

Rules that keep a Dask run's outputs equal to a local one (``tests/test_dask.py``):

* results come back in submission order, whatever finishes first;
* randomness is drawn from named streams before the work is split, or by each task from its
  own child seed (``SeedSequence.spawn``, as before), never from a worker's state;
* every task checks that its worker runs the same installation as the client (Python,
  platform, the version of each library that computes or moves the numbers,
  ``COMPUTING_LIBRARIES``, and the ``pipeline`` sources): a worker set up differently is a
  one-line error, not a silently different number. Other packages (dask-jobqueue or
  dask-kubernetes beside the client, say) may differ;
* what a call sends is what the function needs; what comes back is what it returns
  (aggregates: scores, rates, predicted risks, derived rows), never more.

The scheduler address is not a parameter of any stage's outputs (``dvc.yaml`` does not list
it): moving the work changes where it runs, not what it makes.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import platform
import sys
import threading
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from threadpoolctl import threadpool_limits

from pipeline.cli import InputError

#: Seconds to wait for the scheduler before giving up with a one-line error.
CONNECT_TIMEOUT = 10
#: Overrides ``compute.scheduler`` when set (``none`` or empty: this machine).
SCHEDULER_ENV = "PIPELINE_COMPUTE_SCHEDULER"
#: Distributions whose version must match between the client and every worker: those whose
#: code computes the pipeline's numbers (NumPy carries its BLAS), reads or writes its tables,
#: or carries the tasks.
COMPUTING_LIBRARIES = ("numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "statsmodels", "lifelines",
                       "autograd", "autograd-gamma", "formulaic", "threadpoolctl", "joblib", "dask",
                       "distributed", "cloudpickle", "msgpack")

_active: Any = None     # the dask.distributed.Client that map_tasks uses when none is passed
_task_state = threading.local()   # in_task: this thread is running a Dask task


def scheduler_address(params: dict[str, Any]) -> str | None:
    """``PIPELINE_COMPUTE_SCHEDULER`` when set, else ``compute.scheduler`` (None: this machine)."""
    if SCHEDULER_ENV in os.environ:
        address = os.environ[SCHEDULER_ENV].strip()
        return None if address.lower() in ("", "none", "null") else address
    address = (params.get("compute") or {}).get("scheduler")
    return str(address) if address else None


def client(params: dict[str, Any]):
    """None (``compute.scheduler`` null), or a ``dask.distributed.Client`` connected to it.
    An unreachable scheduler is a one-line ``InputError``."""
    address = scheduler_address(params)
    if address is None:
        return None
    from dask.distributed import Client

    where = SCHEDULER_ENV if SCHEDULER_ENV in os.environ else "params.yaml: compute.scheduler"
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{where}: cannot reach the Dask scheduler at {address} ({reason})") from None


def use(params: dict[str, Any]):
    """Connect to ``compute.scheduler`` (when set) for the rest of this process: every
    ``map_tasks`` call without a client of its own uses it. Returns the client or None."""
    global _active
    found = client(params)
    if found is not None:
        _active = found
        atexit.register(found.close)
        print(f"compute: tasks run on the Dask scheduler at {found.scheduler.address}", file=sys.stderr)
    return found


@contextmanager
def using(dask_client) -> Iterator[None]:
    """``map_tasks`` calls inside the block use ``dask_client`` (None: this machine)."""
    global _active
    previous, _active = _active, dask_client
    try:
        yield
    finally:
        _active = previous


def active():
    """The client ``map_tasks`` uses when none is passed (None: this machine, and inside a
    task: a task's own pieces run in the task, even on a cluster whose workers share the
    client's process)."""
    return None if getattr(_task_state, "in_task", False) else _active


def slots(n_jobs: int = 1, dask_client=None) -> int:
    """How many tasks can run at once: ``n_jobs`` here; the cluster's worker threads on Dask
    (callers split their work into about this many pieces or a few times more)."""
    dask_client = dask_client if dask_client is not None else active()
    if dask_client is None:
        return max(1, int(n_jobs))
    threads = sum(dask_client.nthreads().values())
    return max(1, threads)


@functools.lru_cache(maxsize=1)
def installation() -> str:
    """SHA-256 of what decides a task's numbers: Python, the platform, the version of each of
    ``COMPUTING_LIBRARIES`` (or its absence), and the ``pipeline`` package's source files."""
    digest = hashlib.sha256()
    digest.update(f"{platform.python_version()} {platform.machine()} {sys.platform}\n".encode())
    for name in COMPUTING_LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}=={version}\n".encode())
    root = Path(__file__).resolve().parent
    for source in sorted(root.rglob("*.py")) + sorted(root.rglob("*.yaml")):
        digest.update(str(source.relative_to(root)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _task(fn: Callable, expected: str, item: Any, *shared: Any) -> Any:
    """One Dask task: the installation check, then ``fn(*shared, item)`` with one BLAS thread."""
    here = installation()
    if here != expected:
        raise InputError(f"compute.scheduler: a worker runs another installation than the client "
                         f"(Python, libraries or pipeline code differ: {here[:12]} vs {expected[:12]}); "
                         "set every worker up from the same requirements.lock and checkout")
    _task_state.in_task = True
    try:
        with threadpool_limits(limits=1):
            return fn(*shared, item)
    finally:
        _task_state.in_task = False


def _one_thread(fn: Callable, shared: tuple, item: Any) -> Any:
    with threadpool_limits(limits=1):
        return fn(*shared, item)


def iter_tasks(fn: Callable[..., Any], items: Sequence[Any], shared: tuple = (), n_jobs: int = 1,
               dask_client=None) -> Iterator[Any]:
    """``fn(*shared, item)`` for each item, yielded in the order of ``items``.

    ``fn`` must be importable (a module-level function of ``pipeline``) for the joblib and
    Dask routes. With ``n_jobs`` 1 and no client the calls run here, one after another, as
    plain calls; otherwise each runs with one BLAS thread (module docstring)."""
    items = list(items)
    dask_client = dask_client if dask_client is not None else active()
    if dask_client is not None and items:
        # The shared arguments go to every worker once; each item to one worker (spread
        # round-robin), and its task runs where its item is.
        scattered = [dask_client.scatter([value], broadcast=True, hash=False)[0] for value in shared]
        placed = dask_client.scatter(items, hash=False)
        expected = installation()
        futures = [dask_client.submit(_task, fn, expected, item, *scattered, pure=False) for item in placed]
        try:
            for future in futures:                 # submission order: outputs do not depend on timing
                yield future.result()
        finally:
            dask_client.cancel(futures + placed + scattered)
        return
    if n_jobs <= 1 or len(items) < 2:
        for item in items:
            yield fn(*shared, item)
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_one_thread)(fn, shared, item) for item in items)


def map_tasks(fn: Callable[..., Any], items: Iterable[Any], shared: tuple = (), n_jobs: int = 1,
              dask_client=None) -> list:
    """``iter_tasks`` as a list (results in the order of ``items``)."""
    return list(iter_tasks(fn, list(items), shared, n_jobs, dask_client))


def chunks(items: Sequence[Any], pieces: int) -> list:
    """``items`` cut into at most ``pieces`` consecutive runs of near-equal length (order kept)."""
    items = list(items)
    pieces = max(1, min(int(pieces), len(items)))
    size, extra = divmod(len(items), pieces)
    out, start = [], 0
    for k in range(pieces):
        stop = start + size + (k < extra)
        out.append(items[start:stop])
        start = stop
    return [c for c in out if c]
