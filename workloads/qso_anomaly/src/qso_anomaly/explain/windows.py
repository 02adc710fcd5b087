"""Named wavelength windows for summarising attributions (reference §3, §5, §9.2).

Emission lines are vacuum rest-frame wavelengths (DESI is vacuum). Artefact regions are observed
frame: bright sky lines (vacuum) and the b/r and r/z arm joins of DESI. Attribution mass that sits
mostly in artefact regions marks a flag as instrumental rather than astrophysical.

Wavelengths are in Å (vacuum); attributions are (N, P) or (P,) arrays on the observed grid
(N spectra, P pixels) in score units per pixel. Nothing here raises a qso_anomaly error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# Rest-frame vacuum wavelengths in Å (reference §3).
EMISSION_LINES: dict[str, float] = {
    "Lya": 1215.67,
    "NV": 1240.8,
    "SiIV": 1396.8,
    "CIV": 1549.1,
    "HeII": 1640.4,
    "AlIII": 1857.4,
    "CIII]": 1908.7,
    "MgII": 2798.75,
    "[NeV]": 3426.0,
    "[OII]": 3728.5,
    "Hb": 4862.7,
    "[OIII]": 5008.2,
    "Ha": 6564.6,
}

# Observed-frame vacuum wavelengths of bright sky lines in Å (OI 5577, NaD 5890/5896, OI 6300,
# OI 6364) and the DESI arm overlaps (reference §1.1, §5 "artefacts").
SKY_LINES: tuple[float, ...] = (5578.9, 5891.6, 5897.6, 6302.0, 6365.5)
ARM_JOINS: tuple[tuple[float, float], ...] = ((5760.0, 5800.0), (7520.0, 7620.0))

C_KMS = 299_792.458


def line_window_masks(wave_obs: NDArray[Any], z: float, *, half_width_kms: float = 6000.0
                      ) -> dict[str, NDArray[np.bool_]]:
    """Observed-frame pixel masks of every emission line that falls on the grid at redshift z.

    A line's window is λ_rest·(1 + z) ± λ_rest·(1 + z)·``half_width_kms``/c.

    Args:
        wave_obs: Observed-frame wavelengths (P,) in Å (vacuum).
        z: Redshift of the spectrum.
        half_width_kms: Half width of each window in km/s (6000 km/s spans a broad line).

    Returns:
        Boolean masks (P,) by line name (keys of :data:`EMISSION_LINES`), only for lines with
        at least one pixel on the grid.
    """
    wave = np.asarray(wave_obs, dtype=np.float64)
    out: dict[str, NDArray[np.bool_]] = {}
    for name, rest in EMISSION_LINES.items():
        centre = rest * (1.0 + z)
        half = centre * half_width_kms / C_KMS
        sel = np.abs(wave - centre) <= half
        if sel.any():
            out[name] = sel
    return out


def artefact_mask(wave_obs: NDArray[Any], *, sky_half_width: float = 5.0) -> NDArray[np.bool_]:
    """Pixels within ±``sky_half_width`` Å of a bright sky line or inside an arm join.

    Args:
        wave_obs: Observed-frame wavelengths (P,) in Å (vacuum).
        sky_half_width: Half width around each sky line in :data:`SKY_LINES`, in Å.

    Returns:
        Boolean mask (P,); arm joins are the overlaps in :data:`ARM_JOINS` (5760–5800 Å,
        7520–7620 Å).
    """
    wave = np.asarray(wave_obs, dtype=np.float64)
    sel = np.zeros(wave.shape, dtype=bool)
    for line in SKY_LINES:
        sel |= np.abs(wave - line) <= sky_half_width
    for lo, hi in ARM_JOINS:
        sel |= (wave >= lo) & (wave <= hi)
    return sel


def line_window_mass(attr: NDArray[Any], wave_obs: NDArray[Any], z: float,
                     *, half_width_kms: float = 6000.0) -> dict[str, float]:
    """Share of the positive attribution of one spectrum in each line window (plus "continuum").

    Args:
        attr: Attributions of one spectrum (P,); only positive values count.
        wave_obs: Observed-frame wavelengths (P,) in Å.
        z: Redshift of the spectrum.
        half_width_kms: Line window half width in km/s (see :func:`line_window_masks`).

    Returns:
        Fractions in [0, 1] by line name and ``"continuum"`` (pixels in no window);
        overlapping windows both count a pixel, so the sum can exceed 1. ``{}`` when there is
        no positive attribution.
    """
    pos = np.clip(np.asarray(attr, dtype=np.float64), 0.0, None)
    total = pos.sum()
    if total <= 0:
        return {}
    masks = line_window_masks(wave_obs, z, half_width_kms=half_width_kms)
    out = {name: float(pos[m].sum() / total) for name, m in masks.items()}
    in_any = np.zeros(pos.shape, dtype=bool)
    for m in masks.values():
        in_any |= m
    out["continuum"] = float(pos[~in_any].sum() / total)
    return out


def artefact_mass_fraction(attr: NDArray[Any], wave_obs: NDArray[Any],
                           *, sky_half_width: float = 5.0) -> NDArray[np.float64]:
    """Share of positive attribution in artefact regions, for each row of (N, P) attributions.

    Args:
        attr: Attributions (N, P); only positive values count.
        wave_obs: Observed-frame wavelengths (P,) in Å.
        sky_half_width: Half width around each sky line in Å (see :func:`artefact_mask`).

    Returns:
        Fractions (N,) in [0, 1], float64; 0 for a row without positive attribution.
    """
    pos = np.clip(np.asarray(attr, dtype=np.float64), 0.0, None)
    art = artefact_mask(wave_obs, sky_half_width=sky_half_width)
    total = pos.sum(axis=1)
    inside = pos[:, art].sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
