"""Survey-level distributions (DR1 QSO corpus) and the per-pixel noise model."""

from __future__ import annotations

import numpy as np

from qso_anomaly.data.grid import ARM_JOINS, WavelengthGrid
from qso_anomaly.data.lines import SKY_LINES

#: DR1 QSO corpus quantiles (spectra-and-models.md §2); the 0 and 1 ends are extrapolations.
Z_QUANTILES = (
    (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0),
    (0.05, 0.38, 0.69, 1.24, 1.71, 2.21, 2.99, 3.66, 4.5),
)
SNR_QUANTILES = (
    (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0),
    (0.15, 0.31, 0.56, 1.23, 2.33, 4.66, 12.4, 23.1, 60.0),
)
NATIVE_STEP = 0.8  # S/N is defined per 0.8 Å DESI pixel
MEDIAN_MASKED_FRACTION = 0.0042


def draw_z(rng: np.random.Generator, n: int, lo: float = 0.0, hi: float = 99.0) -> np.ndarray:
    """Redshifts with the DR1 quantiles, restricted to [lo, hi] by inverse-CDF sampling."""
    q, v = Z_QUANTILES
    ulo = float(np.interp(lo, v, q))
    uhi = float(np.interp(hi, v, q))
    return np.interp(rng.uniform(ulo, uhi, n), q, v)


def draw_snr(rng: np.random.Generator, n: int) -> np.ndarray:
    """Median S/N per 0.8 Å pixel with the DR1 quantiles (log-linear between quantiles)."""
    q, v = SNR_QUANTILES
    return np.exp(np.interp(rng.uniform(0, 1, n), q, np.log(v)))


def noise_shape(grid: WavelengthGrid) -> np.ndarray:
    """Relative σ(λ): low throughput at the blue and red ends, the arm joins, sky-line spikes.

    Normalised to median 1 so that median(flux) × √median(ivar) equals the drawn S/N.
    """
    w = grid.wave
    t = 1.0 + 1.2 * np.exp(-(w - 3600.0) / 250.0) + 0.9 * np.exp((w - 9824.0) / 300.0)
    for lo, hi in ARM_JOINS:
        mid, half = (lo + hi) / 2, (hi - lo) / 2 + 20.0
        t += 0.35 * np.exp(-0.5 * ((w - mid) / half) ** 2)
    for s in SKY_LINES:
        amp = 2.0 if s > 6800 else 1.2
        width = max(1.2, grid.step)
        t += amp * np.exp(-0.5 * ((w - s) / width) ** 2)
    return t / np.median(t)


def pixel_scale(grid: WavelengthGrid) -> float:
    """σ per grid pixel relative to σ per native 0.8 Å pixel (coarser pixels average noise)."""
    return float(np.sqrt(NATIVE_STEP / grid.step))


def draw_bad_pixels(rng: np.random.Generator, npix: int) -> np.ndarray:
    """Boolean mask of bad pixels: heavy-tailed per-object fraction, runs plus single pixels."""
    frac = min(0.36, MEDIAN_MASKED_FRACTION * float(np.exp(rng.normal(0.0, 0.8))))
    nbad = round(frac * npix)
    mask = np.zeros(npix, dtype=bool)
    if nbad == 0:
        return mask
    nsingle = round(0.3 * nbad)
    mask[rng.integers(0, npix, nsingle)] = True
    left = nbad - nsingle
    nruns = int(rng.integers(1, 4))
    for r in range(nruns):
        length = left // nruns + (1 if r < left % nruns else 0)
        if length <= 0:
            continue
        start = int(rng.integers(0, max(1, npix - length)))
        mask[start : start + length] = True
    return mask
