"""Input validation: mask bad pixels and reject unusable spectra, counting every reason.

Pixel-level problems are masked (flux 0, ivar 0, mask True) and counted under
``masked_pixels:<reason>`` (number of pixels). Row-level problems drop the spectrum and are
counted under ``<reason>`` (number of spectra). :data:`ROW_REASONS` lists the row reasons,
including the ones counted by the shard reader (:mod:`qso_anomaly.data.io`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qso_anomaly.data.batch import SpectraBatch

MAX_REDSHIFT = 7.0
ROW_REASONS: tuple[str, ...] = (
    "bad_redshift",
    "all_zero_ivar",
    "too_few_good_pixels",
    "wrong_grid_length",
    "missing_columns",
    "corrupt_shard",
)
PIXEL_REASONS: tuple[str, ...] = (
    "masked_pixels:nonfinite_flux",
    "masked_pixels:nonfinite_ivar",
    "masked_pixels:negative_ivar",
)


def clean_batch(
    batch: SpectraBatch, *, min_good_fraction: float = 0.05
) -> tuple[SpectraBatch, dict[str, int]]:
    """Return (clean batch, counts by reason). The input batch is not modified."""
    cleaned, reasons, counts = clean_rows(batch, min_good_fraction=min_good_fraction)
    keep = reasons == ""
    return (cleaned if keep.all() else cleaned.take(keep)), counts


def clean_rows(
    batch: SpectraBatch, *, min_good_fraction: float = 0.05
) -> tuple[SpectraBatch, np.ndarray, dict[str, int]]:
    """Mask bad pixels of every row; return (masked batch with ALL rows, per-row rejection
    reason ("" = usable), counts by reason)."""
    flux = batch.flux.copy()
    ivar = batch.ivar.copy()
    mask = batch.mask.copy()
    counts: dict[str, int] = {}

    bad_flux = ~np.isfinite(flux)
    bad_ivar = ~np.isfinite(ivar)
    neg_ivar = np.isfinite(ivar) & (ivar < 0)
    for key, sel in zip(PIXEL_REASONS, (bad_flux, bad_ivar, neg_ivar), strict=True):
        k = int(sel.sum())
        if k:
            counts[key] = k
    mask |= bad_flux | bad_ivar | neg_ivar
    ivar[mask] = 0.0
    flux[mask] = 0.0
    ivar[ivar <= 1e-12] = 0.0

    good = ivar > 0
    z = batch.z
    reasons = np.full(len(batch), "", dtype=object)
    row_bad_z = ~np.isfinite(z) | (z < 0) | (z > MAX_REDSHIFT)
    row_zero = ~good.any(axis=1)
    row_few = ~row_zero & (good.mean(axis=1) < min_good_fraction)
    for key, sel in (
        ("too_few_good_pixels", row_few),
        ("all_zero_ivar", row_zero),
        ("bad_redshift", row_bad_z),
    ):
        reasons[sel] = key
    for key in ("bad_redshift", "all_zero_ivar", "too_few_good_pixels"):
        k = int((reasons == key).sum())
        if k:
            counts[key] = k
    cleaned = batch.with_arrays(flux=flux, ivar=ivar, mask=mask)
    return cleaned, reasons.astype(str), counts


def merge_counts(total: dict[str, int], new: Mapping[str, int]) -> dict[str, int]:
    for k, v in new.items():
        total[k] = total.get(k, 0) + int(v)
    return total


def n_rejected_rows(counts: Mapping[str, int]) -> int:
    """Number of spectra rejected (pixel-mask counts are not rows and are not included)."""
    return int(sum(v for k, v in counts.items() if not k.startswith("masked_pixels:")))
