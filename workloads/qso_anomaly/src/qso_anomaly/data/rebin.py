"""Inverse-variance-weighted rebinning onto a model grid: the one rebinning of the package.

Used for real coadds (:mod:`qso_anomaly.data.fits_io`, each arm onto the merged grid) and for the
synthetic survey (:mod:`qso_anomaly.data.synth` draws spectra on the native 0.8 Å grid and rebins
them), so the model sees the same pixel statistics in training and on real data.

Every input pixel goes to the output pixel whose bin ``[λ_j − Δ/2, λ_j + Δ/2)`` holds its centre;
``flux_j = Σ ivar_i·flux_i / Σ ivar_i`` and ``ivar_j = Σ ivar_i`` (the standard inverse-variance
coadd, as spender's ``prepare_spectra`` does for arm overlaps). An output pixel without a valid
input pixel gets ivar 0 and is masked (the AND of the input masks). Input pixels with NaN/inf flux
or ivar, negative ivar or a non-zero mask bit carry no weight; how many had non-finite values is
returned so the data policy can count them (``masked_pixels:<reason>``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.data.grid import WavelengthGrid

IVAR_MIN = 1e-6  # spender: ivar <= 1e-6 is treated as 0


def bin_index(wave: NDArray[np.float64], grid: WavelengthGrid) -> NDArray[np.int64]:
    """Output pixel of each input wavelength, or -1 outside the grid's bins."""
    pos = (np.asarray(wave, dtype=np.float64) - grid.start) / grid.step + 0.5
    idx = np.floor(pos + 1e-6).astype(np.int64)
    return np.where((idx >= 0) & (idx < grid.npix), idx, -1)


def sanitize(
    flux: NDArray[np.floating], ivar: NDArray[np.floating], mask: NDArray[np.generic] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, int]]:
    """(flux, weight) with invalid pixels at weight 0, and counts of non-finite pixels that
    carried weight (NaN/inf flux with ivar > 0 is counted, never silently zeroed)."""
    f = np.asarray(flux, dtype=np.float64)
    iv = np.asarray(ivar, dtype=np.float64)
    counts: dict[str, int] = {}
    bad_f = ~np.isfinite(f)
    bad_i = ~np.isfinite(iv)
    neg = ~bad_i & (iv < 0)
    for key, sel in (("masked_pixels:nonfinite_flux", bad_f),
                     ("masked_pixels:nonfinite_ivar", bad_i),
                     ("masked_pixels:negative_ivar", neg)):
        k = int(sel.sum())
        if k:
            counts[key] = k
    ok = ~(bad_f | bad_i | neg) & (iv > IVAR_MIN)
    if mask is not None:
        ok &= np.asarray(mask) == 0
    w = np.where(ok, iv, 0.0)
    return np.where(ok, f, 0.0), w, counts


def rebin_ivar(
    wave: NDArray[np.float64],
    flux: NDArray[np.floating],
    ivar: NDArray[np.floating],
    grid: WavelengthGrid,
    *,
    mask: NDArray[np.generic] | None = None,
    extra: NDArray[np.bool_] | None = None,
    num: NDArray[np.float64] | None = None,
    den: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, int], NDArray[np.bool_] | None]:
    """Accumulate (N, Pin) spectra on ``wave`` into the (N, P) sums ``num`` (Σ ivar·flux) and
    ``den`` (Σ ivar) of ``grid``; returns (num, den, non-finite counts, OR of ``extra`` per output
    pixel). Finish with :func:`finish`. Several arms accumulate into the same sums."""
    f, w, counts = sanitize(np.atleast_2d(flux), np.atleast_2d(ivar),
                            None if mask is None else np.atleast_2d(mask))
    n = f.shape[0]
    num = np.zeros((n, grid.npix)) if num is None else num
    den = np.zeros((n, grid.npix)) if den is None else den
    idx = bin_index(wave, grid)
    inside = idx >= 0
    ii = idx[inside]
    np.add.at(num.T, ii, (w * f)[:, inside].T)
    np.add.at(den.T, ii, w[:, inside].T)
    ex = None
    if extra is not None:
        ex = np.zeros((n, grid.npix), dtype=bool)
        np.logical_or.at(ex.T, ii, np.atleast_2d(extra)[:, inside].T)
    return num, den, counts, ex


def finish(num: NDArray[np.float64], den: NDArray[np.float64]
           ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """(flux, ivar, mask) from the accumulated sums; mask = no valid input pixel."""
    flux = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    mask = ~(den > 0)
    return flux.astype(np.float32), np.where(mask, 0.0, den).astype(np.float32), mask


def rebin(
    wave: NDArray[np.float64], flux: NDArray[np.floating], ivar: NDArray[np.floating],
    grid: WavelengthGrid, *, mask: NDArray[np.generic] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_], dict[str, int]]:
    """One-shot :func:`rebin_ivar` + :func:`finish`: (flux, ivar, mask, non-finite counts)."""
    num, den, counts, _ = rebin_ivar(wave, flux, ivar, grid, mask=mask)
    f, iv, m = finish(num, den)
    return f, iv, m, counts
