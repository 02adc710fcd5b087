"""Arrow tensor columns → NumPy without per-row conversion (zero-copy for float32 pixels).

A shard's pixel columns are ``fixed_size_list<float32>[P]`` (or Ray Data's tensor extension
type): the child buffer is already one contiguous (N·P) float32 array, so ``flux`` and ``ivar``
become (N, P) views of the Arrow buffers with no copy. Booleans are bit-packed in Arrow and are
unpacked once per batch. Ragged or variable-length list columns (foreign shards) take the slow
path, which drops and counts rows of the wrong length (``wrong_grid_length``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from qso_anomaly.data.batch import SpectraBatch, list_lengths
from qso_anomaly.data.io import table_to_batch

PIXELS: tuple[str, ...] = ("flux", "ivar", "mask")
SCALARS: tuple[str, ...] = ("targetid", "z")


def _single(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def tensor_column(col: pa.ChunkedArray | pa.Array, npix: int, dtype: Any) -> np.ndarray | None:
    """(N, npix) array of a tensor-like column, or None when it is not a null-free fixed-size
    list (or fixed-shape tensor) of ``npix`` values. float32 columns come back as read-only
    views of the Arrow buffer (no copy)."""
    arr = _single(col)
    n = len(arr)
    if isinstance(arr.type, pa.ExtensionType):
        if arr.null_count:
            return None
        try:
            out = np.asarray(arr.to_numpy(zero_copy_only=False))
        except (TypeError, ValueError, NotImplementedError, pa.ArrowException):
            return None
        if out.ndim != 2 or out.shape[1] != npix:
            return None
        return out.astype(dtype, copy=False)
    if not pa.types.is_fixed_size_list(arr.type) or arr.type.list_size != npix or arr.null_count:
        return None
    if n == 0:
        return np.zeros((0, npix), dtype=dtype)
    values = arr.values.slice(arr.offset * npix, n * npix)
    if values.null_count:
        return None
    flat = values.to_numpy(zero_copy_only=pa.types.is_floating(values.type)
                           and np.dtype(dtype) == values.type.to_pandas_dtype())
    return flat.reshape(n, npix).astype(dtype, copy=False)


def record_batch_to_spectra(
    data: pa.RecordBatch | pa.Table, npix: int,
) -> tuple[SpectraBatch, np.ndarray, dict[str, int]]:
    """Rows of ``data`` (columns targetid, z, flux, ivar, mask, optional label) as a
    SpectraBatch of the rows that have ``npix`` pixels, the index (into ``data``) of those rows,
    and the counts of dropped rows by reason. Shapes: flux/ivar/mask (M, npix), M ≤ N."""
    n = data.num_rows
    cols = {name: data.column(name) for name in data.schema.names}
    fast = {name: tensor_column(cols[name], npix, np.float32 if name != "mask" else bool)
            for name in PIXELS}
    label = None
    if "label" in cols:
        # null labels read as "None", as SpectraBatch.from_arrow does
        label = _single(cols["label"]).fill_null("None").to_numpy(zero_copy_only=False)
    flux, ivar, mask = fast["flux"], fast["ivar"], fast["mask"]
    if flux is not None and ivar is not None and mask is not None:
        batch = SpectraBatch(
            targetid=_single(cols["targetid"]).to_numpy(zero_copy_only=False),
            z=_single(cols["z"]).to_numpy(zero_copy_only=False),
            flux=flux, ivar=ivar, mask=mask, label=label)
        return batch, np.arange(n), {}
    # slow path: variable-length lists, nulls or another grid
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    lens = [list_lengths(table.column(c)) for c in PIXELS]
    ok = np.logical_and.reduce([ln == npix for ln in lens])
    idx = np.flatnonzero(ok)
    keep = [c for c in table.column_names if c in (*SCALARS, *PIXELS, "label")]
    sub = table.select(keep).take(pa.array(idx))
    batch, _ = table_to_batch(sub, npix)
    counts = {"wrong_grid_length": int(n - idx.size)} if idx.size < n else {}
    return batch, idx, counts
