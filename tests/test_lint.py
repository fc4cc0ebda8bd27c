"""Static check: no undefined names, unused imports or syntax errors (ruff, pyflakes rules)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyflakes_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--output-format",
                           "concise", "pipeline", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pipeline_imports(path: Path) -> set[str]:
    """Every ``pipeline.x`` module a file imports (module-level or inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            if node.module == "pipeline":
                found |= {f"pipeline.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pipeline.")}
    return found


def _closure(module: str) -> set[str]:
    """Every pipeline module ``module`` imports, directly or through others."""
    todo, seen = [module], set()
    while todo:
        current = todo.pop()
        file = _module_file(current)
        if current in seen or file is None:
            continue
        seen.add(current)
        todo.extend(_pipeline_imports(file))
    return seen - {module}


def test_no_stage_imports_another_stage():
    """Style rule: no stage imports another, directly or through a shared module; shared
    pieces live in modules of their own. The stages are the ``python -m`` commands in
    dvc.yaml. (Tools that drive stages, such as the benchmark, may import them.)"""
    import yaml

    stages = {spec["cmd"].split()[-1] for spec in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()}
    assert "pipeline.survival" in stages and "pipeline.calibration" in stages   # the rule can bite
    offenders = [f"{stage} imports {other}" for stage in sorted(stages) for other in sorted(_closure(stage) & stages)]
    assert not offenders, offenders


def _module_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_every_stage_depends_on_the_code_it_runs():
    """A stage's dvc.yaml deps name every pipeline module it imports, directly or not, so
    `dvc repro` reruns it when that code changes (a missing dep leaves stale outputs)."""
    import yaml

    missing = []
    for name, spec in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        deps = [ROOT / d for d in spec.get("deps", [])]
        stage = spec["cmd"].split()[-1]
        for module in {stage} | _closure(stage):
            file = _module_file(module)
            if not any(file == d or d in file.parents for d in deps):
                missing.append(f"{name}: {file.relative_to(ROOT)}")
    assert not missing, missing
