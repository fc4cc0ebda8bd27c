"""Every third-party import is declared in pyproject.toml, every declaration is pinned in
requirements.lock within its declared range, and pipeline/environment.py reports the
installation against the lock.

Rule (project standard): "Dependencies are locked with hashes; a new one goes into the lock
in the same commit." Runtime code (``pipeline/``) may import only pyproject's
``dependencies``; the tests and the notebooks the tests execute may also import the ``test``
extra. Import names map to distributions through ``importlib.metadata.packages_distributions()``
(``sklearn`` -> scikit-learn, ``yaml`` -> PyYAML), so the check runs in the installed
environment (``make setup``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pipeline import environment
from tests.conftest import ROOT

LOCAL_PACKAGES = {"pipeline", "tests"}


def imported_top_level(source: str) -> set[str]:
    """Top-level names of every absolute import in a source text, at any depth (a function's
    lazy ``import pyreadstat`` counts like a module-level one)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def notebook_source(path: Path) -> str:
    """A notebook's code cells as one Python text (IPython magics and shell lines left out)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = [line for cell in cells if cell["cell_type"] == "code"
             for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def sources(folder: Path) -> dict[Path, str]:
    out = {p: p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.py"))}
    out.update({p: notebook_source(p) for p in sorted(folder.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts})
    return out


def undeclared_imports(files: dict[Path, str], allowed: set[str]) -> list[str]:
    """One line per third-party import whose distribution is not in ``allowed`` (canonical
    names), or that no installed distribution provides."""
    providers = metadata.packages_distributions()
    problems = []
    for path, source in files.items():
        for name in sorted(imported_top_level(source) - LOCAL_PACKAGES - set(sys.stdlib_module_names)):
            distributions = {environment.canonical(d) for d in providers.get(name, [])}
            if not distributions:
                problems.append(f"{path.name}: import {name}: no installed distribution provides it")
            elif not distributions & allowed:
                problems.append(f"{path.name}: import {name}: {', '.join(sorted(distributions))} not declared")
    return problems


def unlocked(requirements: list[str], pins: dict[str, tuple[str, str]]) -> list[str]:
    """Requirements the lock does not pin, or pins outside the requirement's range."""
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        name = environment.canonical(requirement.name)
        if name not in pins:
            problems.append(f"{text}: not in {environment.LOCK_FILE}")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{text}: {environment.LOCK_FILE} pins {pins[name][0]}")
    return problems


@pytest.fixture(scope="module")
def declared() -> dict[str, list[str]]:
    return environment.declared(ROOT / environment.PYPROJECT)


def test_pipeline_imports_only_declared_dependencies(declared):
    files = sources(ROOT / "pipeline")
    assert len(files) > 30 and any("joblib" in s for s in files.values())      # the walk sees the code
    assert undeclared_imports(files, set(declared["dependencies"])) == []


def test_tests_and_notebooks_import_only_declared_or_test_dependencies(declared):
    files = {**sources(ROOT / "tests"), **sources(ROOT / "notebooks")}
    assert any(p.suffix == ".ipynb" for p in files)
    assert undeclared_imports(files, set(declared["dependencies"]) | set(declared["extra:test"])) == []


def test_the_import_check_catches_an_undeclared_import(tmp_path):
    """requests is installed (DVC needs it) but not declared; numpy is declared; os is the
    standard library; a module no distribution provides is named as such."""
    module = tmp_path / "stage.py"
    module.write_text("import os\nimport numpy as np\n\ndef f():\n    import requests\n"
                      "    from no_such_module_anywhere import x\n    from . import sibling\n")
    problems = undeclared_imports({module: module.read_text()}, {"numpy"})
    assert problems == ["stage.py: import no_such_module_anywhere: no installed distribution provides it",
                        "stage.py: import requests: requests not declared"]
    notebook = tmp_path / "walkthrough.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "import requests"]},
                                              {"cell_type": "markdown", "source": ["import numpy"]}]}))
    assert undeclared_imports({notebook: notebook_source(notebook)}, {"numpy"}) == [
        "walkthrough.ipynb: import requests: requests not declared"]


def test_every_declaration_is_pinned_in_the_lock_within_its_range():
    """pyproject's dependencies, the test extra, the `setup` group (pip and the build
    backend: make setup installs the project offline with them) and build-system."""
    import tomllib

    data = tomllib.loads((ROOT / environment.PYPROJECT).read_text())
    pins = environment.locked(ROOT / environment.LOCK_FILE)
    assert len(pins) > 100 and pins["numpy"][0]                     # the lock was read
    requirements = [*data["project"]["dependencies"], *data["project"]["optional-dependencies"]["test"],
                    *data["dependency-groups"]["setup"], *data["build-system"]["requires"]]
    assert unlocked(requirements, pins) == []
    # The check can fail: a requirement absent from the lock, and one outside its range.
    assert unlocked(["no-such-package>=1", "numpy<1"], pins) == [
        f"no-such-package>=1: not in {environment.LOCK_FILE}", f"numpy<1: {environment.LOCK_FILE} pins {pins['numpy'][0]}"]


def test_every_lock_pin_carries_hashes():
    """pip install --require-hashes refuses a lock with a pin and no hash; check it here too."""
    text = (ROOT / environment.LOCK_FILE).read_text()
    entries = [entry for entry in text.replace("\\\n", " ").splitlines() if entry and not entry.startswith(("#", " "))]
    assert len(entries) == len(environment.locked(ROOT / environment.LOCK_FILE))
    assert [e.split()[0] for e in entries if "--hash=sha256:" not in e] == []
    assert "make lock" in "".join(text.splitlines(keepends=True)[:6])      # the header says how to regenerate


def test_lock_file_parsing_and_names():
    assert environment.requirement_name("pandera[pandas]>=0.20") == "pandera"
    assert environment.requirement_name("PyYAML>=6") == "pyyaml"
    assert environment.requirement_name("zc.lockfile; python_version>'3'") == "zc-lockfile"
    with pytest.raises(ValueError):
        environment.requirement_name("  >=1")


def fake_project(tmp_path: Path, lock_lines: list[str]) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\ndependencies = ["numpy>=1", "PyYAML"]\n')
    (tmp_path / "requirements.lock").write_text("\n".join(lock_lines) + "\n")
    return tmp_path


def test_environment_reports_the_installed_versions_against_the_lock(tmp_path):
    numpy, pyyaml = metadata.version("numpy"), metadata.version("PyYAML")
    root = fake_project(tmp_path, [
        "# a comment", f"numpy=={numpy} \\", "    --hash=sha256:" + "0" * 64, "    # via x",
        f"pyyaml=={pyyaml}", "not-installed-here==1.0 ; sys_platform == 'plan9'"])
    described = environment.describe(root)
    assert described["dependencies"] == {"numpy": numpy, "pyyaml": pyyaml}
    assert described["lock"]["installed_as_locked"] is True and described["lock"]["differences"] == []
    assert described["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment.describe(root) == described                 # nothing varies between calls
    # Another version installed, and a pin with no marker that is not installed: both differences.
    fake_project(tmp_path, ["numpy==0.0.1", "no-such-package==1.0", f"pyyaml=={pyyaml}"])
    assert environment.describe(root)["lock"] == {
        "file": "requirements.lock", "sha256": hashlib.sha256((root / "requirements.lock").read_bytes()).hexdigest(),
        "installed_as_locked": False,
        "differences": ["no-such-package: locked 1.0, not installed", f"numpy: locked 0.0.1, installed {numpy}"]}
    (root / "requirements.lock").unlink()
    assert environment.describe(root)["lock"]["differences"] == ["requirements.lock not found"]


def test_environment_json_has_no_count_for_the_disclosure_scan():
    """metrics/environment.json holds strings and booleans only: the disclosure scan checks
    every JSON integer below the threshold as a count."""
    def leaves(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from leaves(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from leaves(v)
        else:
            yield obj

    assert all(isinstance(v, (str, bool)) or v is None for v in leaves(environment.describe(ROOT)))


def test_report_prints_the_versions_it_was_built_with(params):
    """The report's reproducibility section and summary name Python and every declared
    library's installed version (built here from the committed stage outputs)."""
    from pipeline import report

    page, summary = report.build(ROOT, params)
    software = environment.describe(ROOT)
    reproducibility = page[page.index("<section id='reproducibility'>"):]
    for name, version in software["dependencies"].items():
        assert f"<tr><td>{name}</td><td>{version}</td></tr>" in reproducibility
    assert f"Python {software['python']} ({software['platform']})" in summary
    assert "`metrics/environment.json`" in summary
