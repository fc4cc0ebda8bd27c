"""Static check: no undefined names, unused imports or syntax errors (ruff, pyflakes rules)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyflakes_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--output-format",
                           "concise", "pipeline", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
