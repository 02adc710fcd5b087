"""The one data policy shared by the batch path, the Ray scorer and the pyfunc/serving path.

Every rule that decides whether a spectrum is scored lives here, and every decision is counted
by reason so that the report and the metrics can show it:

pixel level (counted in pixels under ``masked_pixels:<reason>``; the pixel gets ivar 0)
    ``nonfinite_flux`` (NaN/inf flux, whatever its ivar), ``nonfinite_ivar``, ``negative_ivar``.
row level (counted in spectra; the row is rejected and never scored)
    ``bad_redshift``            z is NaN/inf or negative (no physical meaning);
    ``redshift_out_of_range``   finite z outside the redshift range the model was trained on
                                (``ModelSpec.z_min``–``z_max``): reported as such, never as an
                                astrophysical anomaly;
    ``duplicate_targetid``      a TARGETID that appears more than once in the input (every copy
                                is rejected: which copy is right cannot be decided here);
    ``duplicate_redshift``      set by the redrock/zcatalog reader when one TARGETID has several
                                redshift rows that disagree (never a silent "last one wins");
    ``zwarn``                   redrock ``ZWARN != 0`` (the DR1 QSO corpus keeps ZWARN == 0);
    ``spectype_not_qso``        redrock ``SPECTYPE != "QSO"``;
    ``fiberstatus``             ``COADD_FIBERSTATUS != 0`` (a fibre problem on every exposure);
    ``all_zero_ivar``           no valid pixel;
    ``too_few_good_pixels``     valid-pixel fraction below ``min_valid_fraction``.

``zwarn``, ``spectype_not_qso`` and ``fiberstatus`` are rejections by default (the selection of the
DR1 QSO corpus, spectra-and-models.md §2); ``catalogue_action="flag"`` keeps the row, scores it
and counts it under ``flagged:<reason>`` instead. A row with several problems is counted once,
under the first reason of :data:`ROW_REASONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.masks import row_counts

PIXEL_REASONS: tuple[str, ...] = (
    "masked_pixels:nonfinite_flux",
    "masked_pixels:nonfinite_ivar",
    "masked_pixels:negative_ivar",
)
#: Row reasons in priority order (a row is counted under the first that applies).
ROW_REASONS: tuple[str, ...] = (
    "corrupt_shard",
    "missing_columns",
    "wrong_grid_length",
    "duplicate_targetid",
    "duplicate_redshift",
    "bad_redshift",
    "redshift_out_of_range",
    "zwarn",
    "spectype_not_qso",
    "fiberstatus",
    "all_zero_ivar",
    "too_few_good_pixels",
)
CATALOGUE_REASONS: tuple[str, ...] = ("zwarn", "spectype_not_qso", "fiberstatus")
#: Catalogue columns a batch may carry in ``meta["catalogue"]`` (one array per row).
CATALOGUE_COLUMNS: tuple[str, ...] = ("ZWARN", "SPECTYPE", "COADD_FIBERSTATUS", "Z_DUPLICATE")
IVAR_FLOOR = 1e-12


@dataclass(frozen=True)
class DataPolicy:
    """What is scored. ``z_min``/``z_max`` are the trained model's redshift range (model spec)."""

    z_min: float = 0.0
    z_max: float = 7.0
    min_valid_fraction: float = 0.05
    catalogue_action: Literal["reject", "flag"] = "reject"
    reject_duplicates: bool = True

    @classmethod
    def for_spec(cls, spec: Any, **changes: Any) -> DataPolicy:
        """The policy of a model: its trained redshift range and valid-pixel minimum."""
        return cls(z_min=float(getattr(spec, "z_min", 0.0)),
                   z_max=float(getattr(spec, "z_max", 7.0)),
                   min_valid_fraction=float(getattr(spec, "min_valid_fraction", 0.05)),
                   **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mask_pixels(
    batch: SpectraBatch, counts: dict[str, int],
) -> tuple[NDArray[np.bool_], NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
    """The pixel half of the policy: ``(mask, flux, ivar, good)`` of the cleaned batch.

    A pixel is masked (flux 0, ivar 0) when its mask bit is set, its flux or ivar is not
    finite or its ivar is negative (each counted under ``masked_pixels:<reason>``); ivar at or
    below :data:`IVAR_FLOOR` is zeroed without being masked; ``good`` is ``ivar > 0`` after
    all that (the observed pixels). Batches with no non-finite or negative value (every clean
    survey batch) skip the per-pixel checks: three reductions prove there is nothing to
    count, and the result is the same array for array (tested against the full path).
    """
    f, iv = batch.flux, batch.ivar
    with np.errstate(over="ignore", invalid="ignore"):
        clean = (f.size == 0 or (bool(np.isfinite(f.sum())) and bool(np.isfinite(iv.sum()))
                                 and float(iv.min()) >= 0))
    if clean:
        mask = np.array(batch.mask, dtype=bool, copy=True)
        good = iv > IVAR_FLOOR
        np.greater(good, mask, out=good)  # good & ~mask
        flux = np.where(mask, f.dtype.type(0), f)
        ivar = np.where(good, iv, iv.dtype.type(0))
        return mask, flux, ivar, good
    bad_flux = ~np.isfinite(f)
    bad_ivar = ~np.isfinite(iv)
    neg_ivar = ~bad_ivar & (iv < 0)
    for key, sel in zip(PIXEL_REASONS, (bad_flux, bad_ivar, neg_ivar), strict=True):
        k = int(np.count_nonzero(sel))
        if k:
            counts[key] = counts.get(key, 0) + k
    mask = batch.mask | bad_flux | bad_ivar | neg_ivar
    flux = np.where(mask, f.dtype.type(0), f)
    ivar = np.where(mask | (iv <= IVAR_FLOOR), iv.dtype.type(0), iv)
    return mask, flux, ivar, ivar > 0


def apply_policy(
    batch: SpectraBatch, policy: DataPolicy | None = None
) -> tuple[SpectraBatch, NDArray[np.str_], dict[str, int]]:
    """Apply ``policy`` to every row: (masked batch with ALL rows, per-row reason ("" = scored),
    counts by reason). The input batch is not modified.

    Counts include the reader's own counts (``batch.meta["read_counts"]``: pixels made invalid
    while reading, duplicate redshift rows) so that nothing the reader saw is lost.
    """
    policy = policy or DataPolicy()
    counts: dict[str, int] = {}
    merge_counts(counts, batch.meta.get("read_counts", {}))

    mask, flux, ivar, good = _mask_pixels(batch, counts)
    n = len(batch)
    z = batch.z.astype(np.float64)
    cat: Mapping[str, Any] = batch.meta.get("catalogue", {}) or {}
    checks: dict[str, NDArray[np.bool_]] = {}
    if policy.reject_duplicates:
        _, inv, cnt = np.unique(batch.targetid, return_inverse=True, return_counts=True)
        checks["duplicate_targetid"] = cnt[inv] > 1
    if "Z_DUPLICATE" in cat:
        checks["duplicate_redshift"] = np.asarray(cat["Z_DUPLICATE"], dtype=bool)
    finite = np.isfinite(z)
    checks["bad_redshift"] = ~finite | (np.where(finite, z, 0.0) < 0)
    zz = np.where(finite, z, 0.0)
    checks["redshift_out_of_range"] = finite & (zz >= 0) & ((zz < policy.z_min)
                                                          | (zz > policy.z_max))
    flags: dict[str, NDArray[np.bool_]] = {}
    if "ZWARN" in cat:
        flags["zwarn"] = np.asarray(cat["ZWARN"]).astype(np.int64) != 0
    if "SPECTYPE" in cat:
        st = np.char.strip(np.asarray(cat["SPECTYPE"]).astype(str))
        flags["spectype_not_qso"] = np.char.upper(st) != "QSO"
    if "COADD_FIBERSTATUS" in cat:
        flags["fiberstatus"] = np.asarray(cat["COADD_FIBERSTATUS"]).astype(np.int64) != 0
    if policy.catalogue_action == "reject":
        checks.update(flags)
    else:
        for key, sel in flags.items():
            if sel.any():
                counts[f"flagged:{key}"] = int(sel.sum())
    n_good = row_counts(good)
    row_zero: NDArray[np.bool_] = n_good == 0
    checks["all_zero_ivar"] = row_zero
    frac = n_good / good.shape[1] if good.shape[1] else np.zeros(n)
    checks["too_few_good_pixels"] = ~row_zero & (frac < policy.min_valid_fraction)

    reasons = np.full(n, "", dtype=object)
    for key in reversed(ROW_REASONS):  # first reason in ROW_REASONS wins
        sel = checks.get(key)
        if sel is not None:
            reasons[np.asarray(sel, dtype=bool)] = key
    for key in ROW_REASONS:
        k = int(np.count_nonzero(reasons == key))
        if k:
            counts[key] = counts.get(key, 0) + k
    cleaned = batch.with_arrays(flux=flux, ivar=ivar, mask=mask)
    return cleaned, reasons.astype(str), counts


def merge_counts(total: dict[str, int], new: Mapping[str, int]) -> dict[str, int]:
    """Add ``new`` counts into ``total`` (in place) and return it."""
    for k, v in new.items():
        total[k] = total.get(k, 0) + int(v)
    return total


def n_rejected_rows(counts: Mapping[str, int]) -> int:
    """Number of spectra rejected (pixel counts and ``flagged:*`` counts are not rejections)."""
    return int(sum(v for k, v in counts.items()
                   if not k.startswith(("masked_pixels:", "flagged:"))))
