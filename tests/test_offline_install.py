"""The offline install (a Trusted Research Environment): `make setup` on a copy of the
project with wheelhouse/ beside it and no network builds a fresh virtual environment of
exactly the locked versions, and the package imports.

Network off, three ways: pip is run with --no-index (it cannot reach an index by
construction), PIP_NO_INDEX=1 and every proxy variable point at a closed local port (any
attempt fails), and, where `unshare -n` works (root on Linux), the install runs in a new
network namespace with no interface but a down loopback. The machine's pip configuration
is ignored (PIP_CONFIG_FILE=/dev/null): a configured mirror or find-links folder must not
fill a gap in the wheelhouse.

Slow (a fresh venv of ~160 packages, minutes) and needs the wheelhouse: it runs when
wheelhouse/ exists (`make wheelhouse`, ~220 MB) or when PIPELINE_TEST_WHEELHOUSE=1 asks
for one, which `make wheelhouse` then downloads into a temporary folder. `make test`
downloads nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import environment
from tests.conftest import ROOT

WHEELHOUSE = ROOT / "wheelhouse"
ASKED = os.environ.get("PIPELINE_TEST_WHEELHOUSE") == "1"
CLOSED = "http://127.0.0.1:9"          # the discard port: nothing listens, a connection is refused

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (WHEELHOUSE.is_dir() or ASKED),
                       reason="no wheelhouse/: run `make wheelhouse`, or set PIPELINE_TEST_WHEELHOUSE=1 to download one"),
    pytest.mark.skipif(shutil.which("make") is None or not sys.platform.startswith("linux"),
                       reason="needs make on Linux"),
]


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("PIP_", "VIRTUAL_ENV", "PYTHON")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "DVC_NO_ANALYTICS": "1",
                **{k: CLOSED for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
                "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                        if not p.startswith(str(Path(sys.executable).parent)))})
    return env


def without_network() -> list[str]:
    """`unshare -n` when it works here (root, a kernel that allows it), else nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    if WHEELHOUSE.is_dir():
        return WHEELHOUSE
    folder = tmp_path_factory.mktemp("download") / "wheelhouse"       # asked for: download one here
    run(["make", "-C", str(ROOT), "wheelhouse", f"WHEELHOUSE={folder}", f"PYTHON={sys.executable}"], ROOT,
        dict(os.environ))
    return folder


def test_make_setup_installs_the_lock_from_the_wheelhouse_with_no_network(tmp_path, wheelhouse):
    work = tmp_path / "project"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
    (work / "wheelhouse").symlink_to(wheelhouse)       # "copy the repository and wheelhouse/ in"
    base = Path(getattr(sys, "_base_executable", sys.executable))   # the interpreter, not this venv's
    env = offline_env()

    start = time.perf_counter()
    # The install itself (the .installed target of make setup; setup's chromium step uses apt).
    proc = run([*without_network(), "make", ".venv/.installed", f"PYTHON={base}"], work, env)
    seconds = time.perf_counter() - start
    assert "installing from wheelhouse/ only (--no-index)" in proc.stdout
    print(f"offline install: {seconds:.0f} s ({'unshare -n' if without_network() else 'proxies closed'})")

    python = str(work / ".venv/bin/python")
    run([*without_network(), python, "-m", "pip", "check"], work, env)
    check = ("import importlib, json, pkgutil, sys; from pathlib import Path; import pipeline; "
             "from pipeline import environment; "
             "[importlib.import_module(m.name) for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.')]; "
             "print(json.dumps({'file': pipeline.__file__, **environment.describe(Path.cwd())}))")

    described = json.loads(run([*without_network(), python, "-c", check], work, env).stdout)
    assert described["file"] == str(work / "pipeline/__init__.py")          # the editable install of the copy
    assert described["lock"]["installed_as_locked"], described["lock"]["differences"]
    pins = environment.locked(work / environment.LOCK_FILE)
    assert all(described["dependencies"][name] == pins[name][0] for name in described["dependencies"])
    run([*without_network(), str(work / ".venv/bin/dvc"), "--version"], work, env)
