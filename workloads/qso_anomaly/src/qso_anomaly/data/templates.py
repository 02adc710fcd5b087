"""Vendored spectral templates (see templates/PROVENANCE.md): loaders, derived rest-frame bases."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from qso_anomaly.errors import DataError

TEMPLATE_FILES: tuple[str, ...] = (
    "vandenberk2001_composite_qso.mrt.txt",
    "rrtemplate-QSO-LOZ-v1.1.fits",
    "rrtemplate-QSO-HIZ-v1.1.fits",
    "rrtemplate-STAR-F-v0.1.fits",
    "rrtemplate-STAR-K-v0.1.fits",
    "rrtemplate-STAR-M-v0.1.fits",
    "rrtemplate-STAR-WD-v0.1.fits",
)
STAR_KINDS: tuple[str, ...] = ("F", "K", "M", "WD")

#: Rest-frame model grid used by the generator: 1 Å from 600 Å (Vanden Berk starts at 800.5 Å;
#: bluer pixels, below the Lyman limit, are filled with the 800–850 Å median) to 8554.5 Å.
REST_START = 600.5
REST_STEP = 1.0
REST_STOP = 8554.5


def template_dir() -> Path:
    return Path(str(resources.files("qso_anomaly.data") / "templates"))


def template_path(name: str) -> Path:
    path = template_dir() / name
    if not path.exists():
        raise DataError(
            f"template file {name} not found in {template_dir()}",
            hint="reinstall qso-anomaly; the templates ship as package data",
        )
    return path


@lru_cache(maxsize=1)
def template_hashes() -> dict[str, str]:
    """sha256 of every vendored template file (log these with every run)."""
    out = {}
    for name in TEMPLATE_FILES:
        out[name] = hashlib.sha256(template_path(name).read_bytes()).hexdigest()
    return out


@lru_cache(maxsize=1)
def vanden_berk() -> tuple[np.ndarray, np.ndarray]:
    """Vanden Berk et al. 2001 median composite: rest vacuum wavelength (Å), relative flux."""
    waves, fluxes = [], []
    with template_path(TEMPLATE_FILES[0]).open() as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 3:
                continue
            try:
                w, f, _ = (float(p) for p in parts)
            except ValueError:
                continue
            waves.append(w)
            fluxes.append(f)
    if len(waves) != 7755:
        raise DataError(f"Vanden Berk composite: expected 7755 rows, read {len(waves)}")
    return np.asarray(waves), np.asarray(fluxes)


@lru_cache(maxsize=2)
def qso_basis(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """redrock QSO PCA basis ``kind`` in {"LOZ", "HIZ"}: (rest wavelength, basis (4, n))."""
    name = {"LOZ": TEMPLATE_FILES[1], "HIZ": TEMPLATE_FILES[2]}[kind]
    # imported on use: processes that only hash the templates (every scorer, through
    # train.fitting) skip astropy.io.fits (0.3 s of start-up in each Ray scoring actor)
    from astropy.io import fits

    with fits.open(template_path(name)) as hdul:
        basis = np.asarray(hdul[0].data, dtype=np.float64)
        hdr = hdul[0].header
        wave = 10 ** (hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(basis.shape[1]))
    return wave, basis


@lru_cache(maxsize=4)
def star_templates(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """redrock STAR template ``kind``: (wavelength, basis (5, n), archetype coefficients (m, 5))."""
    if kind not in STAR_KINDS:
        raise DataError(f"unknown star template kind {kind!r}; use one of {STAR_KINDS}")
    from astropy.io import fits

    with fits.open(template_path(f"rrtemplate-STAR-{kind}-v0.1.fits")) as hdul:
        basis = np.asarray(hdul[0].data, dtype=np.float64)
        hdr = hdul[0].header
        coeff = np.asarray(hdul["ARCHETYPE_COEFF"].data, dtype=np.float64)
        wave = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(basis.shape[1])
    return wave, basis, coeff


def rest_wave() -> np.ndarray:
    n = round((REST_STOP - REST_START) / REST_STEP) + 1
    return REST_START + REST_STEP * np.arange(n)


@dataclass(frozen=True)
class RestBasis:
    """Composite mean and variation vectors for one redrock basis, on the generator rest grid."""

    kind: str
    mean: np.ndarray  # (R,) Vanden Berk composite
    variations: np.ndarray  # (4, R) redrock eigenvectors scaled to a realistic spread, tapered
    valid: tuple[float, float]


#: rms of each eigen-direction relative to the composite's rms (object-to-object variety).
VARIATION_RMS = (0.04, 0.10, 0.07, 0.05)


@lru_cache(maxsize=2)
def rest_basis(kind: str) -> RestBasis:
    rw = rest_wave()
    vw, vf = vanden_berk()
    lowfill = float(np.median(vf[(vw >= 800) & (vw < 850)]))
    mean = np.interp(rw, vw, vf, left=lowfill, right=float(vf[-1]))
    bw, basis = qso_basis(kind)
    inside = (rw >= bw[0]) & (rw <= bw[-1])
    b = np.stack([np.interp(rw, bw, v, left=0.0, right=0.0) for v in basis])
    # least-squares coefficients of the composite; variations are deviations along each vector
    coef, *_ = np.linalg.lstsq(b[:, inside].T, mean[inside], rcond=None)
    taper = np.clip(np.minimum(rw - bw[0], bw[-1] - rw) / 50.0, 0.0, 1.0)
    ref_rms = float(np.sqrt(np.mean(mean[inside] ** 2)))
    variations = np.empty_like(b)
    for k in range(b.shape[0]):
        vk = b[k] * taper
        rms = float(np.sqrt(np.mean(vk[inside] ** 2))) or 1.0
        variations[k] = vk / rms * VARIATION_RMS[k] * ref_rms
    del coef
    return RestBasis(kind, mean, variations, (float(bw[0]), float(bw[-1])))


@lru_cache(maxsize=16)
def star_on_grid(kind: str, wave_key: tuple[float, float, int]) -> tuple[np.ndarray, np.ndarray]:
    """Star basis smoothed to and sampled on an observed grid: (basis (5, P), coeff (m, 5))."""
    start, step, npix = wave_key
    wave = start + step * np.arange(npix)
    sw, basis, coeff = star_templates(kind)
    width = max(1, round(step / (sw[1] - sw[0])))
    kernel = np.ones(width) / width
    smooth = np.stack([np.convolve(v, kernel, mode="same") for v in basis])
    on_grid = np.stack([np.interp(wave, sw, v) for v in smooth])
    return on_grid, coeff
