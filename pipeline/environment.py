"""The software a run used: Python, the platform, the installed version of every dependency
``pyproject.toml`` declares, and whether the installation is the one ``requirements.lock`` pins.

The report stage writes ``describe()`` to ``metrics/environment.json`` and shows it in the
report's reproducibility section, so that an output names the library versions that made it.
Nothing in it changes between runs on one installation (no time, host name or path): a rerun
stays byte-identical, and another installation shows up as a difference.

Rules:

* names are compared in PEP 503 form (``PyYAML`` = ``pyyaml``, ``zc.lockfile`` = ``zc-lockfile``);
* a lock line ``name==version [; marker]`` pins a package (``--hash`` and ``#`` lines are
  skipped);
* a pinned package installed at another version is a difference; one not installed is a
  difference unless its line carries an environment marker (``appnope==1.0.0 ; sys_platform ==
  'darwin'``): markers are not evaluated here, so such a package is taken to be another
  platform's. Packages installed but not pinned (tools added by hand) are not listed.

Standard library only, so that it runs in any interpreter (the offline-install test's too).
"""

from __future__ import annotations

import hashlib
import platform
import re
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

LOCK_FILE = "requirements.lock"
PYPROJECT = "pyproject.toml"

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")        # PEP 508: a requirement starts with its name
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?\s*$")


def canonical(name: str) -> str:
    """PEP 503 normalised name: runs of '-', '_', '.' become '-', lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The canonical distribution name of a PEP 508 requirement (``pandera[pandas]>=0.20`` -> ``pandera``)."""
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def declared(pyproject: Path) -> dict[str, list[str]]:
    """Canonical names pyproject.toml declares, by where: ``dependencies``, ``extra:<name>``
    (optional-dependencies), ``group:<name>`` (dependency-groups) and ``build-system``."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data.get("project", {})
    out = {"dependencies": [requirement_name(r) for r in project.get("dependencies", [])]}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        out[f"extra:{extra}"] = [requirement_name(r) for r in requirements]
    for group, requirements in data.get("dependency-groups", {}).items():
        out[f"group:{group}"] = [requirement_name(r) for r in requirements if isinstance(r, str)]
    out["build-system"] = [requirement_name(r) for r in data.get("build-system", {}).get("requires", [])]
    return out


def locked(lock: Path) -> dict[str, tuple[str, str]]:
    """Canonical name -> (pinned version, environment marker or '') for every pin in a lock file."""
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = (match.group(2), (match.group(3) or "").strip())
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def lock_differences(pins: dict[str, tuple[str, str]]) -> list[str]:
    """How the running installation differs from the pins (rules in the module docstring)."""
    differences = []
    for name, (version, marker) in sorted(pins.items()):
        have = installed_version(name)
        if have is None and not marker:
            differences.append(f"{name}: locked {version}, not installed")
        elif have is not None and have != version:
            differences.append(f"{name}: locked {version}, installed {have}")
    return differences


def installed_dependencies() -> list[str]:
    """The runtime dependencies the installed package declares (when the working directory is
    not the project's root, e.g. a stage run in a copy holding only its inputs)."""
    from importlib import metadata

    try:
        requires = metadata.requires("rereferral-pipeline") or []
    except metadata.PackageNotFoundError:
        return []
    return sorted({canonical(requirement_name(r)) for r in requires if "extra ==" not in r})


def describe(root: Path) -> dict[str, Any]:
    """Python, platform, each declared dependency's installed version, and the lock check."""
    names = sorted(declared(root / PYPROJECT)["dependencies"] if (root / PYPROJECT).exists()
                   else installed_dependencies())
    lock = root / LOCK_FILE
    if lock.exists():
        differences = lock_differences(locked(lock))
        lock_sha256 = hashlib.sha256(lock.read_bytes()).hexdigest()
    else:
        differences, lock_sha256 = [f"{LOCK_FILE} not found"], None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": sysconfig.get_platform(),
        "dependencies": {name: installed_version(name) for name in names},
        "lock": {"file": LOCK_FILE, "sha256": lock_sha256, "installed_as_locked": not differences,
                 "differences": differences},
    }
