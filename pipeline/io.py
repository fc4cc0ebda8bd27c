"""Atomic output writers and the input reader shared by every stage.

Every output is written to a temporary file in the same folder and renamed into place,
so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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


def write_csv_batches(batches: Iterable[dict[str, np.ndarray]], columns: list[str], path: str | Path) -> None:
    """``write_csv_fast`` of an all-string table given in row batches (column -> values): the
    same bytes, one header, and only one batch's text held at a time."""
    schema = pa.schema([(name, pa.string()) for name in columns])
    with atomic_path(path) as tmp:
        with pacsv.CSVWriter(tmp, schema, write_options=pacsv.WriteOptions(quoting_style="needed")) as writer:
            for batch in batches:
                writer.write_table(pa.table([pa.array(batch[name], type=pa.string()) for name in columns],
                                            schema=schema))


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


#: Leading bytes of files that are not text tables, and what they are.
BINARY_SIGNATURES = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one): save the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or other OLE document: save the sheet as CSV"),
    (b"\x1f\x8b", "a gzip-compressed file: decompress it first"),
    (b"BZh", "a bzip2-compressed file: decompress it first"),
    (b"\xfd7zXZ", "an xz-compressed file: decompress it first"),
    (b"7z\xbc\xaf", "a 7-Zip archive: extract it first"),
    (b"PAR1", "a Parquet file: name it .parquet"),
    (b"%PDF", "a PDF document, not a table"),
)


def _file_kind(raw: bytes) -> str | None:
    for magic, what in BINARY_SIGNATURES:
        if raw.startswith(magic):
            return what
    return None


def csv_records(text: str, path: Path, header: list[str], delimiter: str = ",", data: bytes | None = None,
                rows_before: int = 0, lines_before: int = 0) -> int:
    """Data rows in a CSV text, checked record by record; a broken one stops with one line.

    Stops on: a NUL byte; a row with more or fewer fields than the header (a cut file's last
    row, an unquoted comma, a misplaced quote); a quote opened and never closed. A ragged row
    stops the file rather than being quarantined: its values cannot be assigned to columns,
    and the fault usually shifts more than one row. The count is what the file holds, so
    "rows in" never depends on what a parser returned. Blank lines are not rows. A block of a
    streamed file (``iter_csv``: its header line, then the block) names rows and lines of the
    whole file through ``rows_before`` and ``lines_before``.
    """
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        field = text[text.rfind("\n", 0, nul) + 1:nul].count(delimiter)
        name = header[field] if field < len(header) else f"field {field + 1}"
        raise InputError(f"{path}: row {lines_before + line - 1} (line {lines_before + line}), field {name}: "
                         "NUL byte in the file "
                         "(a corrupt or UTF-16 file read as UTF-8? set input.encoding)")
    width = len(header)
    if '"' not in text:   # fast path: one record per non-blank line
        lines = text.split("\n")
        last = len(lines) - 1 if lines[-1].strip("\r") else len(lines) - 2   # the final line with content
        rows = 0
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip("\r"):
                continue
            rows += 1
            fields = line.count(delimiter) + 1
            if fields != width:
                cut = fields < width and number - 1 == last and not text.endswith("\n")
                raise InputError(f"{path}: row {rows_before + rows} (line {lines_before + number}): {fields} fields, "
                                 f"the header has {width}"
                                 + (" (the file ends inside this row: cut short?)" if cut else ""))
        return rows
    data = text.encode("utf-8") if data is None else data
    stray = stray_quote(data, delimiter)
    if stray is not None:
        line = data.count(b"\n", 0, stray) + 1
        raise InputError(_stray_quote_message(path, lines_before + line))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    rows, start = 0, 1
    try:
        next(reader)   # header
        while True:
            start = reader.line_num + 1          # the line this record starts on
            fields = next(reader, None)
            if fields is None:
                return rows
            if not fields:   # a blank line
                continue
            rows += 1
            if len(fields) != width:
                raise InputError(f"{path}: row {rows_before + rows} (line {lines_before + start}): {len(fields)} "
                                 f"fields, the header has {width}")
    except csv.Error as err:
        if "end of data" in str(err):
            raise InputError(f"{path}: row {rows_before + rows + 1} (line {lines_before + start}): a quote opened "
                             "and never closed "
                             "(the file ends inside a quoted field: cut short, or a stray quote)") from None
        raise InputError(f"{path}: row {rows_before + rows + 1} (line {lines_before + start}): malformed CSV "
                         f"quoting ({err})") from None


def _stray_quote_message(path: Path, line: int) -> str:
    return (f"{path}: line {line}: a quote inside an unquoted value (a value holding a quote must itself be "
            "quoted, with the quote doubled): the file's quoting is broken")


def stray_quote(data: bytes, delimiter: str = ",") -> int | None:
    """Byte offset of the first quote RFC 4180 does not allow, or None.

    Every quote toggles "inside a quoted value" (a doubled quote toggles twice), so the k-th
    quote opens a value when k is even and closes one when k is odd. An opening quote must
    follow a delimiter, a line end or the file's start; a closing one must precede a
    delimiter, a line end or the file's end; either may instead touch the other quote of a
    doubled pair. Vectorised over the quote positions (a fully quoted file has millions).
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(arr == ord('"'))
    if not len(at):
        return None
    ends = np.array([ord(delimiter), ord("\n"), ord("\r")], dtype=np.uint8)
    before = np.where(at > 0, arr[np.maximum(at - 1, 0)], ord("\n"))
    after = np.where(at + 1 < len(arr), arr[np.minimum(at + 1, len(arr) - 1)], ord("\n"))
    opening = np.arange(len(at)) % 2 == 0
    bad = np.where(opening, ~np.isin(before, ends) & (before != ord('"')),
                   ~np.isin(after, ends) & (after != ord('"')))
    return int(at[np.argmax(bad)]) if bad.any() else None


#: Suffixes read as delimited text (the delimiter is the caller's: comma unless told).
TEXT_SUFFIXES = (".csv", ".txt", ".tab", ".tsv", ".dat")


def read_table(path: str | Path, *, encoding: str = "utf-8", delimiter: str = ",",
               columns: Callable[[str], bool] | None = None, categorical: bool = False,
               allow_empty: bool = False) -> pd.DataFrame:
    """Read a CSV (every column as text) or Parquet table; bad files raise ``InputError``.

    CSV values are kept as raw strings, from the first byte (a UTF-8 byte-order mark is not
    part of the first column's name, so ids stay text), so that validation, not the reader,
    decides what is a date, a code or a fault, and can quote the value it rejects. The file's
    records are counted and checked before parsing (``csv_records``) and must equal the rows
    parsed. Parquet dates and timestamps are handed on as ISO text: a timestamp with a time
    zone as the calendar date in its own zone; a date beyond pandas' range (9999-12-31) as
    written, for validation to judge. ``columns`` keeps only the named columns (every record
    is still checked whole); ``categorical`` returns text as pandas categories (a column of
    codes holds a few distinct strings, not one object per cell).
    """
    path, suffix = _existing(path)
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(_unreadable_parquet(path, err)) from None
        if columns is not None:
            table = table.select([c for c in table.column_names if columns(c)])
        df = _dates_as_text(table).to_pandas(strings_to_categorical=categorical)
    elif suffix in TEXT_SUFFIXES:
        raw = path.read_bytes()
        kind = _file_kind(raw)
        if kind:
            raise InputError(f"{path}: not a CSV text file but {kind}")
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")) and not encoding.lower().replace("-", "").startswith("utf16"):
            raise InputError(f"{path}: a UTF-16 text file: set input.encoding: utf-16 in params.yaml")
        text = _decode(raw, path, encoding, 1)
        text = text.removeprefix("\ufeff")
        if not text.strip():
            raise InputError(f"{path}: empty file (no header, no rows)")
        if "\r" in text and "\n" not in text:   # classic Mac line ends (Excel "CSV (Macintosh)"): lines, not values
            text = text.replace("\r", "\n")
        header = _header(text.split("\n", 1)[0].rstrip("\r"), path, delimiter)
        df = _parse_csv_text(text, path, header, delimiter, columns, categorical)
    else:
        raise InputError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    if len(df) == 0 and not allow_empty:
        raise InputError(f"{path}: empty table (a header but no rows)")
    return df


def _existing(path: str | Path) -> tuple[Path, str]:
    """The input file's path and its lower-case suffix; a missing file stops with one line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    return path, path.suffix.lower()


def _unreadable_parquet(path: Path, err: Exception) -> str:
    return f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})"


def _header(line: str, path: Path, delimiter: str) -> list[str]:
    """The column names of a delimited file's first line; a repeated name stops the file."""
    try:
        header = next(csv.reader(io.StringIO(line), delimiter=delimiter))
    except csv.Error as err:
        raise InputError(f"{path}: header (line 1): not readable as CSV ({err})") from None
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise InputError(f"{path}: header (line 1): column '{name}' appears twice (columns {seen[name]} "
                             f"and {position})")
        seen[name] = position
    return header


def _parse_csv_text(text: str, path: Path, header: list[str], delimiter: str,
                    columns: Callable[[str], bool] | None, categorical: bool,
                    rows_before: int = 0, lines_before: int = 0) -> pd.DataFrame:
    """A CSV text (header line first) as a frame of strings, its records counted and checked first."""
    data = text.encode("utf-8")
    rows = csv_records(text, path, header, delimiter, data, rows_before, lines_before)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            # Quoted values may hold line breaks: without this, pyarrow's 1 MiB blocks can cut one.
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values='"' in text),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=[name for name in header if columns(name)] if columns else None,
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
    except pa.ArrowInvalid as err:
        raise InputError(f"{path}: not a readable CSV ({str(err).splitlines()[0][:120]})") from None
    df = table.to_pandas(strings_to_categorical=categorical)
    if len(df) != rows:
        raise InputError(f"{path}: {rows:,} data rows in the file but {len(df):,} parsed: "
                         "the file's structure is broken (check quoting)")
    return df


#: Bytes of a delimited file read at once by ``iter_table`` (the text, its checks and its
#: frame of strings take several times this).
BLOCK_BYTES = 128 * 1024 * 1024


def _cut(block: bytes) -> int:
    """End of the last whole record in ``block``: just after its last line break outside a
    quoted value (one with an even count of quotes before it, RFC 4180), or 0 when none."""
    quotes = block.count(b'"')
    end, after = len(block), 0
    while (at := block.rfind(b"\n", 0, end)) >= 0:
        after += block.count(b'"', at + 1, end)
        if (quotes - after) % 2 == 0:
            return at + 1
        end = at
    return 0


def iter_table(path: str | Path, *, encoding: str = "utf-8", delimiter: str = ",",
               allow_empty: bool = False, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, pd.DataFrame]]:
    """``read_table``'s rows in blocks: ``(rows before the block, frame of the block)``.

    The same frames, checks and one-line errors as ``read_table`` (rows and lines named in
    the whole file), with memory bounded by ``block_bytes`` rather than the file: a
    delimited file is cut after a line break outside any quoted value (an even count of
    quotes before it, RFC 4180) and each block is checked and parsed under the header; a
    Parquet file is read one row group batch at a time. A file the blocks cannot read
    exactly as a whole (a UTF-16 text, or classic Mac line ends) is read whole.
    """
    path, suffix = _existing(path)
    if suffix == ".parquet":
        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(_unreadable_parquet(path, err)) from None
        if not file.metadata.num_rows and not allow_empty:
            raise InputError(f"{path}: empty table (a header but no rows)")
        rows_before = 0
        rows_per_batch = max(1, block_bytes // 64)
        batches = file.iter_batches(batch_size=rows_per_batch)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowInvalid, OSError) as err:
                raise InputError(_unreadable_parquet(path, err)) from None
            if batch is None:
                break
            frame = _dates_as_text(pa.Table.from_batches([batch])).to_pandas()
            yield rows_before, frame
            rows_before += len(frame)
        if not file.metadata.num_rows:
            yield 0, _dates_as_text(file.schema_arrow.empty_table()).to_pandas()
        return
    utf8 = encoding.lower().replace("-", "").replace("_", "") == "utf8"
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
        single_byte_breaks = not head.startswith((b"\xff\xfe", b"\xfe\xff")) and (
            b"\n" in head or len(head) < 1 << 20)
        if suffix not in TEXT_SUFFIXES or not single_byte_breaks or not (utf8 or _ascii_compatible(encoding)):
            yield 0, read_table(path, encoding=encoding, delimiter=delimiter, allow_empty=allow_empty)
            return
        handle.seek(0)
        first = handle.read(block_bytes)
        kind = _file_kind(first)
        if kind:
            raise InputError(f"{path}: not a CSV text file but {kind}")
        start = 3 if utf8 and first.startswith(b"\xef\xbb\xbf") else 0
        end_of_header = first.find(b"\n", start)
        header_bytes = first[start:end_of_header if end_of_header >= 0 else len(first)]
        if end_of_header < 0 or not header_bytes.strip() or header_bytes.count(b'"') % 2:
            yield 0, read_table(path, encoding=encoding, delimiter=delimiter, allow_empty=allow_empty)
            return
        header_text = _decode(header_bytes, path, encoding, 1).rstrip("\r")
        header = _header(header_text, path, delimiter)
        buffer, eof = first[end_of_header + 1:], len(first) < block_bytes
        rows_before, lines_before, any_rows = 0, 0, False
        while buffer or not eof:
            if not eof and len(buffer) < block_bytes:
                more = handle.read(block_bytes - len(buffer))
                eof, buffer = not more, buffer + more
            # Each cut is outside a quoted value, so every buffer starts outside one.
            cut = len(buffer) if eof else _cut(buffer)
            if not cut:                  # no whole record yet (a very long one): read on
                if len(buffer) >= block_bytes:
                    # A stray quote leaves every later line break "inside quotes": name it now
                    # rather than read the rest of the file in (read_table's own check and words).
                    stray = stray_quote(buffer, delimiter)
                    if stray is not None:
                        raise InputError(_stray_quote_message(path, lines_before + 2 + buffer.count(b"\n", 0, stray)))
                more = handle.read(block_bytes)
                eof, buffer = not more, buffer + more
                continue
            piece, buffer = buffer[:cut], buffer[cut:]
            if piece.strip(b"\r\n"):          # blank lines are not rows; spaces are (read_table's rule)
                text = header_text + "\n" + _decode(piece, path, encoding, lines_before + 2)
                frame = _parse_csv_text(text, path, header, delimiter, None, False, rows_before, lines_before)
                if len(frame):
                    any_rows = True
                    yield rows_before, frame
                rows_before += len(frame)
            lines_before += piece.count(b"\n")
        if not any_rows:
            if not allow_empty:
                raise InputError(f"{path}: empty table (a header but no rows)")
            yield 0, pd.DataFrame({name: pd.Series(dtype=object) for name in header})


def _ascii_compatible(encoding: str) -> bool:
    """A single-byte encoding in which a line break is the byte 0x0A and a quote 0x22 (not a
    stateful one such as ISO-2022, whose escapes hold those bytes)."""
    try:
        name = codecs.lookup(encoding).name
        return ("\n\",".encode(encoding) == b'\n",' and len("é".encode(encoding, errors="replace")) == 1
                and not name.startswith(("iso2022", "utf_7", "hz", "utf_16", "utf_32")))
    except LookupError:
        raise InputError(f"params.yaml: input.encoding '{encoding}' is not a known encoding") from None


def _decode(raw: bytes, path: Path, encoding: str, first_line: int) -> str:
    """Bytes of a block as text; an undecodable byte is named by its line in the whole file."""
    utf8 = encoding.lower().replace("-", "").replace("_", "") == "utf8"
    try:
        return raw.decode("utf-8" if utf8 else encoding)
    except UnicodeDecodeError as err:
        line = first_line + raw[: err.start].count(b"\n")
        raise InputError(
            f"{path}: row {line - 1} (line {line}): unreadable encoding, byte "
            f"0x{raw[err.start]:02x} is not {encoding}; set input.encoding in params.yaml"
        ) from None
    except LookupError:
        raise InputError(f"params.yaml: input.encoding '{encoding}' is not a known encoding") from None


def _dates_as_text(table: pa.Table) -> pa.Table:
    """Date and timestamp columns as ISO date text (a zoned timestamp: its own zone's date)."""
    import pyarrow.compute as pc

    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type) or pa.types.is_date(field.type):
            column = pc.strftime(column, format="%Y-%m-%d")
        columns.append(column)
    return pa.table(columns, names=table.column_names)
