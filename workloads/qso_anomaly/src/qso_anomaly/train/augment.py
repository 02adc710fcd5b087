"""Masking augmentation: what real DESI coadds do to a spectrum, applied during training.

Each augmented spectrum gets one instrument state, drawn uniformly (design issue 12; the masks
are realistic states of DESI coadds, spectra-and-models.md §1 and §5 "artefacts"):

``camera``        ivar = 0 over one whole arm (b, r or z; a camera that was off or masked);
``amplifier``     ivar = 0 over one half of one arm (one CCD amplifier);
``block``         ivar = 0 over a contiguous block of 5–40 % of the pixels;
``columns``       3–12 short bad-column runs of 1–4 pixels;
``sky``           5–20 sky-residual spikes of +10 to +50 σ whose ivar is divided by 10⁴ (what the
                  pipeline does to a sky-line residual).

The model sees the augmented (flux, ivar); the loss is computed against the ORIGINAL flux and
ivar, so the network learns to reconstruct what the masked pixels hide and to ignore low-ivar
pixels. Deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.data.grid import DESI_ARMS

KINDS: tuple[str, ...] = ("camera", "amplifier", "block", "columns", "sky")
SKY_IVAR_FACTOR = 1e-4


def augment_masks(
    flux: NDArray[np.float32], ivar: NDArray[np.float32], wave: NDArray[np.float64],
    rng: np.random.Generator, fraction: float = 0.5,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(flux, ivar) copies with ``fraction`` of the rows given one random instrument state."""
    flux = np.array(flux, dtype=np.float32, copy=True)
    ivar = np.array(ivar, dtype=np.float32, copy=True)
    n, p = flux.shape
    pick = rng.uniform(size=n) < fraction
    kinds = np.asarray(rng.integers(0, len(KINDS), size=n))
    arms = list(DESI_ARMS.values())
    for i in (int(j) for j in np.where(pick)[0]):
        kind = KINDS[int(kinds[i])]
        if kind in ("camera", "amplifier"):
            lo, hi = arms[int(rng.integers(len(arms)))]
            if kind == "amplifier":
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if rng.uniform() < 0.5 else (mid, hi)
            ivar[i, (wave >= lo) & (wave <= hi)] = 0.0
        elif kind == "block":
            length = int(rng.uniform(0.05, 0.40) * p)
            start = int(rng.integers(0, max(1, p - length)))
            ivar[i, start:start + length] = 0.0
        elif kind == "columns":
            for _ in range(int(rng.integers(3, 13))):
                s = int(rng.integers(0, p))
                ivar[i, s:s + int(rng.integers(1, 5))] = 0.0
        else:
            good = np.where(ivar[i] > 0)[0]
            if good.size == 0:
                continue
            px = rng.choice(good, size=min(good.size, int(rng.integers(5, 21))), replace=False)
            sigma = 1.0 / np.sqrt(ivar[i, px])
            flux[i, px] += rng.uniform(10.0, 50.0, px.size).astype(np.float32) * sigma
            ivar[i, px] *= SKY_IVAR_FACTOR
    flux[ivar <= 0] = 0.0
    return flux, ivar
