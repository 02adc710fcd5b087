"""Parquet shard I/O. Bad shards and bad rows are skipped and counted, never fatal by default."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from qso_anomaly.data.batch import (
    REQUIRED_COLUMNS,
    SpectraBatch,
    grid_from_schema,
    list_lengths,
)
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.validate import merge_counts
from qso_anomaly.errors import DataError, ShardError

PIXEL_COLUMNS = ("flux", "ivar", "mask", "truth_mask")


def shard_schema(path: str | Path) -> pa.Schema:
    """Schema of a shard; raises ShardError(reason="corrupt_shard") when it cannot be read."""
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ShardError(
            f"cannot read Parquet footer ({exc})", reason="corrupt_shard", path=str(path),
            hint="regenerate or re-export the shard; it is skipped and counted meanwhile",
        ) from exc


def check_shard(path: str | Path) -> tuple[int, WavelengthGrid | None]:
    """(row count, grid from metadata) of a usable shard, else ShardError with the reason."""
    schema = shard_schema(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ShardError(
            f"missing required columns {missing}", reason="missing_columns", path=str(path),
            hint=f"a shard needs columns {list(REQUIRED_COLUMNS)}",
        )
    try:
        nrows = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ShardError(f"cannot read metadata ({exc})", reason="corrupt_shard",
                         path=str(path)) from exc
    return nrows, grid_from_schema(schema)


def table_to_batch(table: pa.Table, npix: int | None) -> tuple[SpectraBatch, dict[str, int]]:
    """Convert a table, dropping rows whose pixel columns do not have ``npix`` entries."""
    counts: dict[str, int] = {}
    if table.num_rows == 0:
        return SpectraBatch.from_arrow(table, npix=npix or 0), counts
    lens = [list_lengths(table.column(c)) for c in PIXEL_COLUMNS if c in table.column_names]
    if npix is None:
        npix = int(Counter(lens[0].tolist()).most_common(1)[0][0])
    ok = np.logical_and.reduce([ln == npix for ln in lens])
    if not ok.all():
        counts["wrong_grid_length"] = int((~ok).sum())
        table = table.filter(pa.array(ok))
    for c in PIXEL_COLUMNS:
        if c in table.column_names and not pa.types.is_fixed_size_list(table.column(c).type):
            table = table.set_column(
                table.column_names.index(c), c,
                pc.cast(table.column(c), pa.list_(table.column(c).type.value_type, npix)),
            )
    return SpectraBatch.from_arrow(table, npix=npix), counts


def read_shard(
    path: str | Path, grid: WavelengthGrid | None = None, *, columns: list[str] | None = None
) -> tuple[SpectraBatch, dict[str, int]]:
    """Read one shard. Raises ShardError for corrupt shards / missing columns."""
    _, meta_grid = check_shard(path)
    use = grid or meta_grid
    npix = use.npix if use is not None else None
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ShardError(f"cannot read data ({exc})", reason="corrupt_shard",
                         path=str(path)) from exc
    batch, counts = table_to_batch(table, npix)
    batch.meta["source"] = str(path)
    return batch, counts


def read_shards(
    paths: Iterable[str | Path],
    grid: WavelengthGrid | None = None,
    *,
    counts: dict[str, int] | None = None,
    strict: bool = False,
) -> Iterator[SpectraBatch]:
    """Yield one batch per readable shard. Unusable shards are skipped and counted (by shard
    for ``corrupt_shard``/``missing_columns``, by row for ``wrong_grid_length``) into
    ``counts`` when given; ``strict=True`` raises instead."""
    for path in paths:
        try:
            batch, c = read_shard(path, grid)
        except ShardError as exc:
            if strict:
                raise
            if counts is not None:
                merge_counts(counts, {exc.reason: 1})
            continue
        if counts is not None:
            merge_counts(counts, c)
        yield batch


def read_all(paths: Iterable[str | Path], grid: WavelengthGrid | None = None) -> SpectraBatch:
    batches = list(read_shards(paths, grid))
    if not batches:
        raise DataError("no readable shards among the given paths")
    return SpectraBatch.concat(batches)
