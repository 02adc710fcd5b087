"""Arrow tensor columns → NumPy without per-row conversion (zero-copy for float32 pixels).

A shard's pixel columns are ``fixed_size_list<float32>[P]`` (or Ray Data's tensor extension
type): the child buffer is already one contiguous (N·P) float32 array, so ``flux`` and ``ivar``
become (N, P) views of the Arrow buffers with no copy. Booleans are bit-packed in Arrow and are
unpacked once per batch. Ragged or variable-length list columns (foreign shards) take the slow
path, which drops and counts rows of the wrong length (``wrong_grid_length``).

Units are those of the shard: flux in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in flux⁻², z dimensionless;
the column layout is :data:`qso_anomaly.data.batch.REQUIRED_COLUMNS`.
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


def unpack_bits(values: pa.Array) -> np.ndarray:
    """A null-free Arrow boolean array as a NumPy bool array (N,).

    Arrow stores booleans one bit per value, least significant bit first; ``np.unpackbits``
    expands them 18× faster than ``Array.to_numpy`` (0.026 vs 0.48 ms for a 256 × 1,946
    mask batch). The array's offset (a slice) is honoured.
    """
    n, off = len(values), values.offset
    if n == 0:
        return np.zeros(0, dtype=bool)
    bits = np.frombuffer(values.buffers()[1], dtype=np.uint8, count=(off + n + 7) // 8)
    return np.unpackbits(bits, count=off + n, bitorder="little")[off:].view(bool)


def tensor_column(col: pa.ChunkedArray | pa.Array, npix: int, dtype: Any) -> np.ndarray | None:
    """A tensor-like Arrow column as an (N, npix) NumPy array, zero-copy where possible.

    float32 columns come back as read-only views of the Arrow buffer (no copy); other dtypes
    and Ray Data's tensor extension type are converted.

    Args:
        col: The column (one or more chunks; several chunks are combined, which copies).
        npix: Expected values per row (grid pixels P).
        dtype: NumPy dtype of the result (``np.float32`` for flux/ivar, ``bool`` for mask).

    Returns:
        The (N, npix) array, or ``None`` when the column is not a null-free fixed-size list
        (or fixed-shape tensor) of ``npix`` values; the caller then takes the slow path.
    """
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
    if pa.types.is_boolean(values.type):
        flat = unpack_bits(values)
    else:
        flat = values.to_numpy(zero_copy_only=pa.types.is_floating(values.type)
                               and np.dtype(dtype) == values.type.to_pandas_dtype())
    return flat.reshape(n, npix).astype(dtype, copy=False)


def record_batch_to_spectra(
    data: pa.RecordBatch | pa.Table, npix: int,
) -> tuple[SpectraBatch, np.ndarray, dict[str, int]]:
    """Convert N shard rows to a SpectraBatch of the M ≤ N rows that have ``npix`` pixels.

    Fast path (every pixel column a null-free fixed-size list of ``npix``): no row is dropped
    and flux/ivar are zero-copy views. Slow path (variable-length lists, nulls, another grid):
    rows whose flux, ivar or mask length differs from ``npix`` are dropped and counted as
    ``wrong_grid_length``. Values are not validated here (that is the data policy's job).

    Args:
        data: Rows with columns targetid (int64), z, flux, ivar, mask (lists of P values; flux
            in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in flux⁻², mask True = bad) and an optional
            label (null labels read as ``"None"``).
        npix: Grid pixels P of the model.

    Returns:
        ``(batch, index, counts)``: the batch (flux/ivar/mask (M, npix), z (M,)), the int
        index (M,) of its rows in ``data``, and dropped-row counts by reason (``{}`` when
        none).

    Raises:
        KeyError: When a pixel column is missing on the fast path.
        DataError: When targetid or z is missing on the slow path. Shards are checked with
            :func:`qso_anomaly.data.io.check_shard` before they reach this function.
    """
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
