"""Instrument-state masks on a model grid: a DESI camera off, part of a camera off, a
contiguous block of pixels.

One definition for the states the flag decision is calibrated on
(:func:`qso_anomaly.train.mondrian.masking_copies`) and the states its robustness is measured
on (:mod:`qso_anomaly.bench.robustness`). The camera (arm) ranges are DESI's b, r and z
spectrograph cameras (:data:`qso_anomaly.data.grid.DESI_ARMS`, Å).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.data.grid import DESI_ARMS


def row_counts(a: NDArray[np.bool_]) -> NDArray[np.int64]:
    """True values per row of a 2-D boolean array, shape ``(N,)``.

    Sums the bytes (one per bool) into a 16-bit accumulator, 64-bit for rows of 2¹⁶ values
    or more (``count_nonzero(axis=1)`` took 5× longer on a 256 × 1,946 batch, issue 15).
    A strided view (a camera's column slice) is summed in place, not copied.
    """
    a = np.asarray(a, dtype=bool)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {a.shape}")
    dtype = np.uint16 if a.shape[1] < 2**16 else np.int64
    return a.view(np.uint8).sum(axis=1, dtype=dtype).astype(np.int64)


def band(wave: NDArray[Any], lo: float, hi: float) -> NDArray[np.bool_]:
    """Pixels whose wavelength lies in ``[lo, hi]``.

    Args:
        wave: Grid wavelengths ``(P,)`` in Å.
        lo: Lower edge in Å.
        hi: Upper edge in Å.

    Returns:
        ``(P,)`` bool, True inside the band.
    """
    w = np.asarray(wave)
    return (w >= lo) & (w <= hi)


def camera(wave: NDArray[Any], arm: str) -> NDArray[np.bool_]:
    """Pixels a DESI camera covers.

    Args:
        wave: Grid wavelengths ``(P,)`` in Å.
        arm: ``b``, ``r`` or ``z``.

    Returns:
        ``(P,)`` bool.

    Raises:
        KeyError: For an arm DESI does not have.
    """
    lo, hi = DESI_ARMS[arm]
    return band(wave, lo, hi)


def contiguous_blocks(n: int, p: int, fraction: float,
                      rng: np.random.Generator) -> NDArray[np.bool_]:
    """One block of ``int(fraction · p)`` adjacent pixels per spectrum, at a uniformly drawn
    start (``rng.integers(0, p - length)`` for each of the ``n`` rows, in row order).

    Args:
        n: Spectra.
        p: Pixels per spectrum.
        fraction: Block length as a fraction of ``p``, in [0, 1).
        rng: Source of the starts.

    Returns:
        ``(n, p)`` bool, True inside each row's block.
    """
    length = int(fraction * p)
    start = rng.integers(0, max(1, p - length), size=n)[:, None]
    cols = np.arange(p)[None, :]
    return (cols >= start) & (cols < start + length)


def masked(flux: NDArray[Any], ivar: NDArray[Any], sel: NDArray[np.bool_]
           ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Flux and ivar with the selected pixels unobserved (flux 0, ivar 0), as float32 copies.

    Args:
        flux: Flux ``(N, P)`` in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: ivar ``(N, P)`` in flux⁻².
        sel: Pixels to mask, broadcastable to ``(N, P)``.

    Returns:
        ``(flux, ivar)``, each ``(N, P)`` float32.
    """
    return (np.where(sel, 0.0, flux).astype(np.float32),
            np.where(sel, 0.0, ivar).astype(np.float32))
