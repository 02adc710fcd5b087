"""DESI coadd FITS (``coadd-*.fits``) and redrock (``redrock-*.fits``) files → SpectraBatch.

Arms are merged the spender way (``spender/data/desi.py::prepare_spectra``): each arm pixel
goes to the grid pixel at the same wavelength, overlaps are ivar-weighted, a merged pixel is bad
only if it is bad in every arm that covers it (AND of masks), and ``ivar <= 1e-6`` becomes 0.
Arms that are not on the grid's wavelengths are linearly resampled onto it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.grid import DESI_ARMS, WavelengthGrid
from qso_anomaly.errors import DataError

ARMS = ("B", "R", "Z")


def merge_arms(
    arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    grid: WavelengthGrid,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-arm (wave (Pa,), flux (N,Pa), ivar (N,Pa), mask (N,Pa) int/bool) onto ``grid``."""
    n = next(iter(arms.values()))[1].shape[0]
    num = np.zeros((n, grid.npix))
    den = np.zeros((n, grid.npix))
    covered = np.zeros((n, grid.npix), dtype=bool)
    for name, (wave, flux, ivar, mask) in arms.items():
        flux = np.asarray(flux, dtype=np.float64)
        ivar = np.where(np.asarray(mask) != 0, 0.0, np.asarray(ivar, dtype=np.float64))
        ivar = np.where(np.isfinite(ivar) & (ivar > 1e-6) & np.isfinite(flux), ivar, 0.0)
        flux = np.where(ivar > 0, flux, 0.0)
        idx = grid.index_of(wave)
        if (idx >= 0).all():
            np.add.at(num.T, idx, (ivar * flux).T)
            np.add.at(den.T, idx, ivar.T)
            covered[:, idx] = True
            continue
        # not aligned: resample onto the grid pixels that fall inside this arm
        gw = grid.wave
        inside = (gw >= wave[0]) & (gw <= wave[-1])
        if not inside.any():
            raise DataError(f"arm {name} ({wave[0]:.1f}–{wave[-1]:.1f} Å) is outside the grid")
        for i in range(n):
            f_i = np.interp(gw[inside], wave, flux[i])
            # a resampled pixel is bad if any neighbour is bad
            w_i = np.interp(gw[inside], wave, ivar[i])
            bad = np.interp(gw[inside], wave, (ivar[i] <= 0).astype(float)) > 0
            w_i = np.where(bad, 0.0, w_i)
            num[i, inside] += w_i * f_i
            den[i, inside] += w_i
        covered[:, inside] = True
    flux_m = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    mask_m = (den <= 0) | ~covered
    ivar_m = np.where(mask_m, 0.0, den)
    return flux_m.astype(np.float32), ivar_m.astype(np.float32), mask_m


def read_desi_coadd(
    path: str | Path,
    grid: WavelengthGrid | None = None,
    *,
    redrock_path: str | Path | None = None,
    z: np.ndarray | None = None,
) -> SpectraBatch:
    """Read a DESI coadd file into a SpectraBatch on ``grid`` (default: EDR 7,781 px).

    Redshifts come from ``z`` (one per fibre), from ``redrock_path`` (matched by TARGETID;
    HDU ``REDSHIFTS``) or, failing both, from a ``REDSHIFTS`` HDU inside the coadd itself.
    """
    grid = grid or WavelengthGrid.desi_edr()
    path = Path(path)
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable FITS file ({exc})") from exc
    with hdul:
        names = {h.name for h in hdul}
        if "FIBERMAP" not in names:
            raise DataError(f"{path}: no FIBERMAP HDU", hint="is this a DESI coadd file?")
        targetid = np.asarray(hdul["FIBERMAP"].data["TARGETID"], dtype=np.int64)
        arms = {}
        for arm in ARMS:
            need = [f"{arm}_{k}" for k in ("WAVELENGTH", "FLUX", "IVAR")]
            if not all(k in names for k in need):
                continue
            wave = np.asarray(hdul[f"{arm}_WAVELENGTH"].data, dtype=np.float64)
            flux = np.atleast_2d(np.asarray(hdul[f"{arm}_FLUX"].data))
            ivar = np.atleast_2d(np.asarray(hdul[f"{arm}_IVAR"].data))
            mask = (
                np.atleast_2d(np.asarray(hdul[f"{arm}_MASK"].data))
                if f"{arm}_MASK" in names
                else np.zeros(flux.shape, dtype=np.int32)
            )
            if flux.shape != (targetid.size, wave.size):
                raise DataError(
                    f"{path}: {arm}_FLUX has shape {flux.shape}, expected "
                    f"({targetid.size}, {wave.size})"
                )
            arms[arm] = (wave, flux, ivar, mask)
        if not arms:
            raise DataError(f"{path}: no B/R/Z arm HDUs (B_WAVELENGTH, B_FLUX, B_IVAR, …)")
        inner_z = _redshift_table(hdul["REDSHIFTS"]) if "REDSHIFTS" in names else None
    if z is not None:
        zz = np.asarray(z, dtype=np.float32)
        if zz.shape != targetid.shape:
            raise DataError(f"z has shape {zz.shape}, expected {targetid.shape}")
    else:
        table = inner_z
        if redrock_path is not None:
            with fits.open(redrock_path, memmap=False) as rr:
                table = _redshift_table(rr["REDSHIFTS"])
        if table is None:
            raise DataError(
                f"{path}: no redshifts", hint="pass z=… or redrock_path=… (redrock-*.fits)"
            )
        lookup = dict(zip(table[0].tolist(), table[1].tolist(), strict=True))
        zz = np.asarray([lookup.get(int(t), np.nan) for t in targetid], dtype=np.float32)
    flux, ivar, mask = merge_arms(arms, grid)
    return SpectraBatch(targetid=targetid, z=zz, flux=flux, ivar=ivar, mask=mask,
                        meta={"source": str(path)})


def _redshift_table(hdu: fits.BinTableHDU) -> tuple[np.ndarray, np.ndarray]:
    data = hdu.data
    return np.asarray(data["TARGETID"], dtype=np.int64), np.asarray(data["Z"], dtype=np.float64)


def desi_arm_waves(step: float = 0.8) -> dict[str, np.ndarray]:
    """Per-arm wavelength arrays as desispec extracts them (b, r, z at 0.8 Å)."""
    out = {}
    for arm, (lo, hi) in DESI_ARMS.items():
        n = round((hi - lo) / step) + 1
        out[arm.upper()] = np.linspace(lo, hi, n)
    return out


def write_desi_coadd(
    path: str | Path,
    targetid: np.ndarray,
    arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> Path:
    """Write a minimal coadd in DESI's layout: FIBERMAP, {B,R,Z}_{WAVELENGTH,FLUX,IVAR,MASK}."""
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU()]
    fm = fits.BinTableHDU(Table({"TARGETID": np.asarray(targetid, dtype=np.int64)}))
    fm.name = "FIBERMAP"
    hdus.append(fm)
    for arm, (wave, flux, ivar, mask) in arms.items():
        for key, data in (("WAVELENGTH", np.asarray(wave, dtype=np.float64)),
                          ("FLUX", np.asarray(flux, dtype=np.float32)),
                          ("IVAR", np.asarray(ivar, dtype=np.float32)),
                          ("MASK", np.asarray(mask, dtype=np.int32))):
            h = fits.ImageHDU(data, name=f"{arm}_{key}")
            if key == "WAVELENGTH":
                h.header["BUNIT"] = "Angstrom"
            elif key == "FLUX":
                h.header["BUNIT"] = "10**-17 erg/(s cm2 Angstrom)"
            hdus.append(h)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def write_redrock(
    path: str | Path, targetid: np.ndarray, z: np.ndarray, spectype: list[str] | None = None
) -> Path:
    """Write a minimal redrock file: HDU REDSHIFTS with TARGETID, Z, ZWARN, SPECTYPE."""
    n = len(targetid)
    t = Table({
        "TARGETID": np.asarray(targetid, dtype=np.int64),
        "Z": np.asarray(z, dtype=np.float64),
        "ZWARN": np.zeros(n, dtype=np.int64),
        "SPECTYPE": np.asarray(spectype or ["QSO"] * n),
    })
    h = fits.BinTableHDU(t)
    h.name = "REDSHIFTS"
    fits.HDUList([fits.PrimaryHDU(), h]).writeto(path, overwrite=True)
    return Path(path)
