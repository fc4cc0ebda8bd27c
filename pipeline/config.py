"""The one place that reads ``params.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.cli import InputError

PARAMS_FILE = Path("params.yaml")
INPUT_SOURCES = ("synthetic", "extract", "analysis_table", "cin_census", "ncands")
SYNTHETIC_DIR = Path("data/raw/synthetic")
#: Written by simulate beside its tables: each file's SHA-256, so that clean lets only those
#: files meet the public synthetic key (real data always need a secret one).
SIMULATED_MARKER = "simulated.json"


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and sanity-check the parameters file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: parameters file not found (run from the project root)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}:{where} not valid YAML") from None
    for key in ("seed", "input", "simulate", "clean", "episodes", "disclosure"):
        if key not in params:
            raise InputError(f"{path}: missing top-level key '{key}'")
    source = params["input"].get("source")
    if source not in INPUT_SOURCES:
        raise InputError(f"{path}: input.source is '{source}'; expected one of {', '.join(INPUT_SOURCES)}")
    extract_date(params)  # validate early
    return params


def extract_date(params: dict[str, Any]) -> pd.Timestamp:
    raw = params["input"].get("extract_date")
    try:
        return pd.Timestamp(str(raw)).normalize()
    except ValueError:
        raise InputError(f"params.yaml: input.extract_date '{raw}' is not a date (YYYY-MM-DD)") from None


def input_path(params: dict[str, Any], table: str) -> Path:
    """Path of an input table ('children', 'referrals', 'plans' or 'analysis_table')."""
    inp = params["input"]
    name = inp["analysis_table"]["file"] if table == "analysis_table" else inp[table]
    return Path(inp["dir"]) / name


def seed_sequence(seed: int, stream: str) -> np.random.SeedSequence:
    """The seed of one named random step. Stable across Python runs (unlike hash()): the name's
    bytes are the spawn key, so two steps share a stream only if they share a name, and no
    name (two or more characters) meets a child of ``SeedSequence(seed).spawn()``, whose keys
    are single numbers."""
    if len(stream) < 2:
        raise ValueError(f"random stream names have two or more characters: {stream!r}")
    return np.random.SeedSequence(int(seed), spawn_key=[int(b) for b in stream.encode("utf-8")])


def rng(params: dict[str, Any], stream: str) -> np.random.Generator:
    """An independent, reproducible random stream for one named step."""
    return np.random.default_rng(seed_sequence(int(params["seed"]), stream))
