"""Atomic output writers and the input reader shared by every stage.

Every output is written to a temporary file in the same folder and renamed into place,
so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.cli import InputError


_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)      # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    # Drop pandas' metadata blob: it can embed timing-dependent details; keep files byte-stable.
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """CSV with floats to 10 significant digits (ample for estimates; keeps files small)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", float_format="%.10g")


def write_csv_fast(df: pd.DataFrame, path: str | Path) -> None:
    """CSV of an all-string frame through Arrow's writer (fast for millions of rows)."""
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="needed"))


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | Path) -> None:
    """JSON with NaN/inf as null (strict JSON: DVC, browsers and jq all read it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(obj), indent=2, sort_keys=False, default=_json_default,
                                  allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (pd.Timestamp,)):
        return value.date().isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_table(path: str | Path, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV (every column as text) or Parquet table; bad files raise ``InputError``.

    CSV values are kept as raw strings so that validation, not the reader, decides what
    is a date, a code or a fault, and can quote the value it rejects.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            df = pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    elif suffix in (".csv", ".txt"):
        raw = path.read_bytes()
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise InputError(
                f"{path}: row {line - 1} (line {line}): unreadable encoding, byte "
                f"0x{raw[err.start]:02x} is not {encoding}; set input.encoding in params.yaml"
            ) from None
        except LookupError:
            raise InputError(f"params.yaml: input.encoding '{encoding}' is not a known encoding") from None
        if not text.strip():
            raise InputError(f"{path}: empty file (no header, no rows)")
        header = next(csv.reader(io.StringIO(text.split("\n", 1)[0])))
        try:
            table = pacsv.read_csv(
                io.BytesIO(text.encode("utf-8")),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True),
            )
        except pa.ArrowInvalid as err:
            raise InputError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
        df = table.to_pandas()
    else:
        raise InputError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    if len(df) == 0:
        raise InputError(f"{path}: empty table (a header but no rows)")
    return df
