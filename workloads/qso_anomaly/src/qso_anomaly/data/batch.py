"""SpectraBatch: the in-memory form of N spectra on one wavelength grid (NumPy arrays)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.errors import DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("targetid", "z", "flux", "ivar", "mask")
OPTIONAL_COLUMNS: tuple[str, ...] = ("label", "truth_mask", "snr")
GRID_METADATA_KEY = b"qso_anomaly.grid"


@dataclass
class SpectraBatch:
    """N spectra on a P-pixel grid. ``mask`` is True for bad pixels.

    Truth fields (``label``: "normal" or an anomaly class name; ``truth_mask``: pixels affected
    by the injection; ``snr``: drawn S/N per 0.8 Å pixel) exist only for synthetic data.
    """

    targetid: np.ndarray
    z: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    label: np.ndarray | None = None
    truth_mask: np.ndarray | None = None
    snr: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.targetid = np.asarray(self.targetid, dtype=np.int64)
        self.z = np.asarray(self.z, dtype=np.float32)
        self.flux = np.asarray(self.flux, dtype=np.float32)
        self.ivar = np.asarray(self.ivar, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        n = self.targetid.shape[0]
        if self.flux.ndim != 2 or self.flux.shape[0] != n:
            raise DataError(f"flux must have shape (N={n}, P), got {self.flux.shape}")
        for name in ("ivar", "mask"):
            if getattr(self, name).shape != self.flux.shape:
                raise DataError(
                    f"{name} shape {getattr(self, name).shape} != flux shape {self.flux.shape}"
                )
        if self.z.shape != (n,):
            raise DataError(f"z must have shape ({n},), got {self.z.shape}")
        if self.label is not None:
            self.label = np.asarray(self.label, dtype=object).astype(str)
        if self.truth_mask is not None:
            self.truth_mask = np.asarray(self.truth_mask, dtype=bool)
        if self.snr is not None:
            self.snr = np.asarray(self.snr, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.targetid.shape[0])

    @property
    def npix(self) -> int:
        return int(self.flux.shape[1])

    def take(self, idx: np.ndarray | slice | list[int]) -> SpectraBatch:
        """Rows ``idx`` (indices, boolean mask or slice) as a new batch."""
        if isinstance(idx, slice):
            sel: Any = idx
        else:
            sel = np.asarray(idx)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[sel]

        return SpectraBatch(
            targetid=self.targetid[sel],
            z=self.z[sel],
            flux=self.flux[sel],
            ivar=self.ivar[sel],
            mask=self.mask[sel],
            label=pick(self.label),
            truth_mask=pick(self.truth_mask),
            snr=pick(self.snr),
            meta=dict(self.meta),
        )

    def with_arrays(self, **changes: Any) -> SpectraBatch:
        return replace(self, **changes)

    @staticmethod
    def concat(batches: list[SpectraBatch]) -> SpectraBatch:
        if not batches:
            raise DataError("cannot concatenate an empty list of batches")

        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(b, name) for b in batches]
            if any(p is None for p in parts):
                return None
            return np.concatenate(parts)

        return SpectraBatch(
            targetid=np.concatenate([b.targetid for b in batches]),
            z=np.concatenate([b.z for b in batches]),
            flux=np.concatenate([b.flux for b in batches]),
            ivar=np.concatenate([b.ivar for b in batches]),
            mask=np.concatenate([b.mask for b in batches]),
            label=cat("label"),
            truth_mask=cat("truth_mask"),
            snr=cat("snr"),
            meta=dict(batches[0].meta),
        )

    # ------------------------------------------------------------------ Arrow
    def to_arrow(self, grid: WavelengthGrid | None = None) -> pa.Table:
        """One row per spectrum; per-pixel columns are fixed-size lists. Grid in schema metadata."""
        p = self.npix
        cols: dict[str, pa.Array] = {
            "targetid": pa.array(self.targetid, type=pa.int64()),
            "z": pa.array(self.z, type=pa.float32()),
            "flux": _fixed_list(self.flux.reshape(-1), p, pa.float32()),
            "ivar": _fixed_list(self.ivar.reshape(-1), p, pa.float32()),
            "mask": _fixed_list(self.mask.reshape(-1), p, pa.bool_()),
        }
        if self.label is not None:
            cols["label"] = pa.array(self.label.tolist(), type=pa.string())
        if self.truth_mask is not None:
            cols["truth_mask"] = _fixed_list(self.truth_mask.reshape(-1), p, pa.bool_())
        if self.snr is not None:
            cols["snr"] = pa.array(self.snr, type=pa.float32())
        table = pa.table(cols)
        meta: dict[bytes, bytes] = {}
        if grid is not None:
            meta[GRID_METADATA_KEY] = json.dumps(grid.to_dict()).encode()
        return table.replace_schema_metadata(meta) if meta else table

    @classmethod
    def from_arrow(cls, table: pa.Table, npix: int | None = None) -> SpectraBatch:
        """Inverse of :meth:`to_arrow`. Raises DataError on missing columns or ragged rows.

        Use :func:`qso_anomaly.data.io.table_to_batch` to drop (and count) bad rows instead.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(
                f"table is missing required columns {missing}",
                hint=f"a spectra table needs {list(REQUIRED_COLUMNS)}",
            )
        n = table.num_rows
        flux = _list_to_2d(table.column("flux"), n, npix, np.float32, "flux")
        p = flux.shape[1]
        ivar = _list_to_2d(table.column("ivar"), n, p, np.float32, "ivar")
        mask = _list_to_2d(table.column("mask"), n, p, bool, "mask")
        names = table.column_names
        label = (
            np.asarray(table.column("label").to_pylist(), dtype=object).astype(str)
            if "label" in names
            else None
        )
        truth = (
            _list_to_2d(table.column("truth_mask"), n, p, bool, "truth_mask")
            if "truth_mask" in names
            else None
        )
        snr = table.column("snr").to_numpy().astype(np.float32) if "snr" in names else None
        return cls(
            targetid=table.column("targetid").to_numpy().astype(np.int64),
            z=table.column("z").to_numpy(zero_copy_only=False).astype(np.float32),
            flux=flux,
            ivar=ivar,
            mask=mask,
            label=label,
            truth_mask=truth,
            snr=snr,
        )


def grid_from_schema(schema: pa.Schema) -> WavelengthGrid | None:
    meta = schema.metadata or {}
    raw = meta.get(GRID_METADATA_KEY)
    return None if raw is None else WavelengthGrid.from_dict(json.loads(raw))


def pixel_type(value_type: pa.DataType, size: int) -> pa.DataType:
    """Arrow type of a per-pixel column: ``fixed_size_list<element: T not null>[size]``.

    The elements are declared non-nullable (a pixel is never null: a bad pixel has ivar 0 or
    mask True), so the Parquet file stores no definition level per value and reading a shard
    decodes its pixel columns about a quarter faster (0.031 → 0.024 CPU-ms per spectrum for
    flux, ivar and mask on 1,946 px; ``docs/benchmarks.md``, issue 15). Readers accept shards
    written before, with nullable elements, as they are.
    """
    return pa.list_(pa.field("element", value_type, nullable=False), size)


def _fixed_list(values: np.ndarray, size: int, typ: pa.DataType) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values, type=typ),
                                             type=pixel_type(typ, size))


def list_lengths(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Length of each list in a (fixed-size or variable) list column; nulls count as -1."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(arr.type):
        lens = np.full(len(arr), arr.type.list_size, dtype=np.int64)
    else:
        lens = np.asarray(pa.compute.list_value_length(arr).fill_null(-1), dtype=np.int64)
    if arr.null_count:
        lens = np.where(np.asarray(arr.is_null()), -1, lens)
    return lens


def _list_to_2d(
    col: pa.ChunkedArray, n: int, npix: int | None, dtype: Any, name: str
) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lens = list_lengths(arr)
    want = int(lens[0]) if npix is None and n else (npix or 0)
    if n and (np.any(lens != want)):
        bad = int(np.sum(lens != want))
        raise DataError(
            f"column {name!r}: {bad} of {n} rows do not have {want} pixels",
            hint="all spectra in a table must be on the same grid",
        )
    if n == 0:
        return np.zeros((0, want), dtype=dtype)
    flat = arr.flatten() if not pa.types.is_fixed_size_list(arr.type) else arr.values
    if pa.types.is_fixed_size_list(arr.type) and arr.offset:
        flat = flat.slice(arr.offset * want, n * want)
    values = flat.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape(n, want)
