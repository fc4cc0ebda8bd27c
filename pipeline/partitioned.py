"""The ``episodes`` derivation out of core: an extract too large for memory, read in
partitions of children with Polars, derived one partition at a time by the in-memory rules
(``pipeline.derive``) and written as it goes, with the in-memory result.

* **Partitions follow the output order.** ``derive_rereport`` orders its rows by child (in
  order of first appearance in the referrals table), then date, ties in input order;
  ``derive_cpp_durations`` the same over the plans table. So the children are taken in that
  order of first appearance and cut into consecutive runs holding at most ``max_rows`` rows
  (more only when one child alone has more): the first partition's output rows are the
  whole output's first rows, the second's the next, and so on. Each partition's rows are
  written to the output file as a row group as soon as they are derived; nothing is merged
  or sorted afterwards. Referrals and plans are partitioned separately (their orders of
  first appearance differ); the re-referral table needs from the plans only each child's
  first plan start (``prior_plan``), computed once.
* **Exactness.** Every rule of the derivation (episodes, next episode start, prior
  referrals, first plan, plan number, the DfE measure's previous referral) looks only at one
  child's rows, and a child's rows are all in one partition, read in input order. So a
  partition's output is exactly the whole output's rows for its children, in the whole
  output's order. Counts are sums over partitions; the DfE share is the sum of its
  numerators over the sum of its denominators (``derive.dfe_rereferral_counts``), the
  same float64 division the whole-extract mean makes.
* **Memory.** Only the columns the rules use are read: one lazy Polars pass over a table's
  ``child_id`` cuts the partitions (a frame of child id and partition number); one pass
  over each table, a million rows at a time (pyarrow batches joined to that frame in
  Polars), writes its rows partition by partition to
  temporary Parquet files beside the outputs; then each partition is read back alone.
  Peak memory is one partition's pandas frames (and one output row group, below) plus that
  map, not the extract. Partitions are frames of the Arrow types the in-memory path reads
  (``pd.read_parquet``), so the outputs have its dtypes.
* **Whole children, not families.** No rule looks across a family (``family_id`` is only
  carried along), so a partition needs whole children only; cutting by families instead
  would scatter each partition's rows over the output and need a merge of every partition.

Things the in-memory path would fail on with a traceback are one-line errors here: a
repeated child id, or a referral or plan whose child is not in the children table.
The outputs are written atomically (``pipeline.io.atomic_path``), in the row groups
``pq.write_table`` makes, so each file has the in-memory path's bytes. (One exception: an
object column with no value in the first million rows but more rows to come is written
as strings; the in-memory writer gives a column with no value at all Arrow's null type.
Both read back as pandas ``None``.)
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cli import InputError
from pipeline.derive import derive_cpp_durations, derive_rereport, dfe_rereferral_counts, episode_start_days
from pipeline.io import atomic_path
from pipeline.schema import FACTORS

#: Rows read at a time when the tables are cut into partitions.
BATCH_ROWS = 1_000_000

#: Default of ``episodes.max_rows_in_memory``: the in-memory derivation of 1M children
#: (1.5M referrals) peaks at 2.3 GB; out of core at 10M children (15.4M referrals, 8
#: partitions of at most 2M) the stage peaks at 4.2 GB, well inside a 16 GB stage.
MAX_ROWS_IN_MEMORY = 2_000_000

#: The columns each table's rules read (those a file has; an absent optional one stays absent).
CHILD_COLUMNS = ("child_id", "family_id", "la_code", "sex", "date_of_birth", "ethnicity", "disability",
                 "looked_after_date")
REFERRAL_COLUMNS = ("referral_id", "child_id", "referral_date", "closure_date", "outcome", "referral_source",
                    *FACTORS)
PLAN_COLUMNS = ("plan_id", "child_id", "start_date", "end_date", "category", "end_reason")


def rows_in(path: Path) -> int:
    """Rows of a Parquet file, from its footer."""
    return int(pq.ParquetFile(path).metadata.num_rows)


def child_partitions(path: Path, max_rows: int) -> pl.DataFrame:
    """``child_id`` and ``part`` of every child in a table: children in order of first
    appearance, a new partition when the rows of the children before it reach a multiple
    of ``max_rows``. Partition numbers increase with the order (some may be skipped)."""
    # A table without rows may store child_id as Arrow's null type.
    table = pl.scan_parquet(path).select(pl.col("child_id").cast(pl.String)).with_row_index("row")
    if table.select(pl.col("child_id").null_count()).collect().item():
        raise InputError(f"{path}: child_id: missing in some rows (clean keeps no such row)")
    return (table.group_by("child_id").agg(pl.col("row").min().alias("first_row"), pl.len().alias("rows"))
            .sort("first_row")
            .select("child_id", ((pl.col("rows").cast(pl.Int64).cum_sum() - pl.col("rows")) // max(int(max_rows), 1))
                    .alias("part"))
            .collect())


def _columns(path: Path, wanted: tuple[str, ...]) -> list[str]:
    present = set(pq.read_schema(path).names)
    return [c for c in wanted if c in present]


def _to_pandas(frame: pl.DataFrame, path: Path) -> pd.DataFrame:
    """A Polars frame as ``pd.read_parquet(path)`` would give those columns: the file's own
    Arrow types, converted the way pandas converts them."""
    schema, table = pq.read_schema(path), frame.to_arrow()
    # (A column of Arrow's null type, in a file without rows, keeps the frame's type: no value to cast.)
    target = pa.schema([table.schema.field(name) if pa.types.is_null(schema.field(name).type) else schema.field(name)
                        for name in frame.columns])
    return table.cast(target).to_pandas(coerce_temporal_nanoseconds=True)


class _Buckets:
    """A table's rows by partition: one pass over the file in batches of ``BATCH_ROWS``
    rows joins each row to its child's partition (Polars) and writes each batch's rows of
    partition ``k`` to ``folder/<k>-<batch>.parquet``; ``rows(k)`` reads a partition back,
    in file order, as pandas. (Plain Parquet files, no open file per partition.)"""

    def __init__(self, path: Path, wanted: tuple[str, ...], partitions: pl.DataFrame, folder: Path):
        self.path, self.columns, self.folder = path, _columns(path, wanted), folder
        folder.mkdir(parents=True)
        first_row = 0
        for batch_number, batch in enumerate(pq.ParquetFile(path).iter_batches(BATCH_ROWS, columns=self.columns)):
            rows = (pl.from_arrow(batch).with_row_index("_row", offset=first_row)
                    .join(partitions, on="child_id", how="inner"))
            first_row += batch.num_rows
            for part in rows.partition_by("part"):
                part.drop("part").write_parquet(folder / f"{part['part'][0]}-{batch_number}.parquet")

    def rows(self, part: int | None) -> pd.DataFrame:
        files = sorted(self.folder.glob(f"{part}-*.parquet"))
        if files:
            found = pl.read_parquet(files).sort("_row").drop("_row")
        else:       # no row in this partition
            found = pl.from_arrow(pq.read_schema(self.path).empty_table().select(self.columns))
        return _to_pandas(found, self.path)


def _children_rows(children: _Buckets, part: int | None, expected: int, table: Path) -> pd.DataFrame:
    """One partition's children; every child of the partition's referrals (plans) is there."""
    found = children.rows(part)
    if len(found) != expected:
        raise InputError(f"{table}: child_id: {expected - len(found):,} children not in {children.path} "
                         "(clean keeps no such row)")
    return found


def _sizes(partitions: pl.DataFrame) -> list[tuple[int | None, int]]:
    """Each partition's number and number of children, in order; a table without rows is one
    empty partition (the derivation's own empty output and counts of nothing)."""
    sizes = partitions.group_by("part", maintain_order=True).len().rows()
    return sizes or [(None, 0)]


def _check_children_unique(path: Path) -> None:
    ids = pl.scan_parquet(path).select(pl.len(), pl.col("child_id").n_unique()).collect().row(0)
    if ids[0] != ids[1]:
        raise InputError(f"{path}: child_id: {ids[0] - ids[1]:,} repeated ids (clean keeps one row per child)")


#: ``pq.write_table``'s row group (at most 1024 * 1024 rows): written in the same row groups,
#: the output file has the in-memory writer's bytes.
ROW_GROUP_ROWS = 1024 * 1024


class _RowGroupWriter:
    """Parquet as ``io.write_parquet`` writes the whole frame (no pandas metadata, zstd, row
    groups of ``ROW_GROUP_ROWS``), from the frame's consecutive parts: parts are held until a
    row group is full, then written."""

    def __init__(self, path: Path):
        self.path, self.held, self.rows, self.writer = path, [], 0, None

    def write(self, frame: pd.DataFrame) -> None:
        self.held.append(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None))
        self.rows += len(frame)
        while self.rows >= ROW_GROUP_ROWS:
            self._write_group(ROW_GROUP_ROWS, last=False)

    def _write_group(self, rows: int, last: bool) -> None:
        # A string column with no value in a part is Arrow's null type there: "permissive" gives
        # it the type the other parts have, as converting the whole frame would.
        table = pa.concat_tables(self.held, promote_options="permissive")
        if self.writer is None:
            # All-missing so far and more to come: strings (only object columns can be null type).
            schema = table.schema if last else pa.schema(
                [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema])
            self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        self.writer.write_table(table.slice(0, rows).cast(self.writer.schema).combine_chunks())
        self.held, self.rows = [table.slice(rows)], table.num_rows - rows

    def close(self) -> None:
        if self.rows or self.writer is None:
            self._write_group(self.rows, last=True)
        self.writer.close()


@contextlib.contextmanager
def _parquet_parts(path: Path) -> Iterator[Any]:
    """``write(part)`` for each consecutive part of the output frame; the file is renamed into
    place when all parts are written (``io.atomic_path``)."""
    with atomic_path(path) as tmp:
        writer = _RowGroupWriter(tmp)
        try:
            yield writer.write
        except BaseException:
            if writer.writer is not None:      # release the file; atomic_path removes it
                writer.writer.close()
            raise
        writer.close()


def derive_to_files(clean_dir: Path, rereport_path: Path, durations_path: Path, *, extract_date: pd.Timestamp,
                    max_rows: int, index: str = "every_closed", time_origin: str = "closure",
                    same_episode_days: int = 14) -> tuple[dict[str, int], tuple[float, int]]:
    """``derive_rereport`` and ``derive_cpp_durations`` on ``clean_dir``'s tables, in
    partitions of at most ``max_rows`` referrals (plans), written to the two paths; returns
    the counts (with ``plans`` and ``plans_ended``) and ``dfe_rereferral_share``'s answer."""
    referrals_path, plans_path = clean_dir / "referrals.parquet", clean_dir / "plans.parquet"
    _check_children_unique(clean_dir / "children.parquet")
    rules = dict(extract_date=extract_date, index=index, time_origin=time_origin, same_episode_days=same_episode_days)
    first_plan = (pl.scan_parquet(plans_path).group_by(pl.col("child_id").cast(pl.String))
                  .agg(pl.col("start_date").min()).collect())
    counts: dict[str, int] = {}
    within, in_year = 0, 0
    rereport_path.parent.mkdir(parents=True, exist_ok=True)
    # The partitions' rows, beside the outputs (same file system; removed however the stage ends).
    with tempfile.TemporaryDirectory(prefix=".episodes-partitions.", dir=rereport_path.parent) as temp:
        folder = Path(temp)
        partitions = child_partitions(referrals_path, max_rows)
        referral_rows = _Buckets(referrals_path, REFERRAL_COLUMNS, partitions, folder / "referrals")
        child_rows = _Buckets(clean_dir / "children.parquet", CHILD_COLUMNS, partitions, folder / "children")
        # derive_rereport reads from the plans only each child's first plan start.
        first_plan = first_plan.join(partitions, on="child_id", how="inner")
        with _parquet_parts(rereport_path) as write:
            for part, n_children in _sizes(partitions):
                referrals = referral_rows.rows(part)
                kids = _children_rows(child_rows, part, n_children, referrals_path)
                plans = _to_pandas(first_plan.filter(pl.col("part") == part).drop("part"), plans_path)
                table, part_counts = derive_rereport(kids, referrals, plans, **rules)
                write(table)
                for key, value in part_counts.items():
                    counts[key] = counts.get(key, 0) + int(value)
                part_within, part_in_year = dfe_rereferral_counts(
                    *episode_start_days(referrals, same_episode_days), extract_date)
                within, in_year = within + part_within, in_year + part_in_year
                del referrals, kids, plans, table
        shutil.rmtree(folder / "referrals", ignore_errors=True)
        shutil.rmtree(folder / "children", ignore_errors=True)

        plans_total, plans_ended = 0, 0
        partitions = child_partitions(plans_path, max_rows)
        plan_rows = _Buckets(plans_path, PLAN_COLUMNS, partitions, folder / "plans")
        child_rows = _Buckets(clean_dir / "children.parquet", CHILD_COLUMNS, partitions, folder / "plan_children")
        with _parquet_parts(durations_path) as write:
            for part, n_children in _sizes(partitions):
                table = derive_cpp_durations(_children_rows(child_rows, part, n_children, plans_path),
                                             plan_rows.rows(part), extract_date=extract_date)
                write(table)
                plans_total, plans_ended = plans_total + len(table), plans_ended + int(table["ended"].sum())
    counts["plans"], counts["plans_ended"] = plans_total, plans_ended
    return counts, ((within / in_year if in_year else float("nan")), in_year)
