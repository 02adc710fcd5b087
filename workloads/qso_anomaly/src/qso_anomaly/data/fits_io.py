"""DESI coadd FITS (``coadd-*.fits``) and redrock (``redrock-*.fits``) files → SpectraBatch.

Arms are merged the spender way (``spender/data/desi.py::prepare_spectra``): each arm pixel
goes to the grid pixel at the same wavelength, overlaps are ivar-weighted, a merged pixel is bad
only if it is bad in every arm that covers it (AND of masks), and ``ivar <= 1e-6`` becomes 0.
Arms that are not on the grid's wavelengths are linearly resampled onto it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.files import unique_files
from qso_anomaly.data.grid import DESI_ARMS, WavelengthGrid
from qso_anomaly.data.policy import merge_counts
from qso_anomaly.data.rebin import bin_index, finish, rebin_ivar
from qso_anomaly.errors import DataError

ARMS = ("B", "R", "Z")
RedshiftTable = dict[str, np.ndarray]


def merge_arms(
    arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    grid: WavelengthGrid,
    counts: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-arm (wave (Pa,), flux (N,Pa), ivar (N,Pa), mask (N,Pa) int/bool) onto ``grid``
    by inverse-variance-weighted rebinning (:func:`qso_anomaly.data.rebin.rebin_ivar`): on the
    native 0.8 Å grid this is spender's pixel-by-pixel overlap coadd; on a coarser grid every
    input pixel contributes with its ivar (no point sampling). Non-finite pixels that carried
    weight are added to ``counts`` (``masked_pixels:<reason>``)."""
    n = next(iter(arms.values()))[1].shape[0]
    num = np.zeros((n, grid.npix))
    den = np.zeros((n, grid.npix))
    for name, (wave, flux, ivar, mask) in arms.items():
        if not (bin_index(np.asarray(wave), grid) >= 0).any():
            raise DataError(f"arm {name} ({wave[0]:.1f}–{wave[-1]:.1f} Å) is outside the grid")
        num, den, c, _ = rebin_ivar(np.asarray(wave, dtype=np.float64), flux, ivar, grid,
                                    mask=mask, num=num, den=den)
        if counts is not None:
            merge_counts(counts, c)
    flux_m, ivar_m, mask_m = finish(num, den)
    return flux_m, ivar_m, mask_m


#: HDU names that hold redshifts: redrock files use REDSHIFTS, zcatalogs ZCATALOG (zall/zpix
#: summary catalogues); the first present is read.
REDSHIFT_HDUS = ("REDSHIFTS", "ZCATALOG")


def read_desi_coadd(
    path: str | Path,
    grid: WavelengthGrid | None = None,
    *,
    redrock_path: str | Path | Sequence[str | Path] | None = None,
    z: np.ndarray | None = None,
    redshift_table: RedshiftTable | None = None,
) -> SpectraBatch:
    """Read a DESI coadd file into a SpectraBatch on ``grid`` (default: EDR 7,781 px).

    Redshifts come from ``z`` (one per fibre), from ``redrock_path`` (one or more redrock or
    zcatalog files, HDU ``REDSHIFTS`` or ``ZCATALOG``, matched by TARGETID) or, failing both,
    from such an HDU inside the coadd itself. A TARGETID with several redshift rows that
    disagree gets z = NaN and ``Z_DUPLICATE`` = True (the policy rejects it as
    ``duplicate_redshift``); identical repeats are merged. ZWARN, SPECTYPE (redshift file) and
    COADD_FIBERSTATUS (fibermap) travel in ``meta["catalogue"]`` for the data policy; pixels that
    were non-finite while carrying weight are counted in ``meta["read_counts"]``.
    Missing arms (e.g. no Z_* HDUs) leave their pixels masked.
    """
    grid = grid or WavelengthGrid.desi_edr()
    path = Path(path)
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable FITS file ({exc})") from exc
    read_counts: dict[str, int] = {}
    catalogue: dict[str, np.ndarray] = {}
    with hdul:
        names = [h.name for h in hdul]
        if "FIBERMAP" not in names:
            raise DataError(f"{path}: no FIBERMAP HDU (HDUs found: {names})",
                            hint="is this a DESI coadd file?")
        fm = hdul["FIBERMAP"].data
        targetid = np.asarray(fm["TARGETID"], dtype=np.int64)
        if "COADD_FIBERSTATUS" in fm.columns.names:
            catalogue["COADD_FIBERSTATUS"] = np.asarray(fm["COADD_FIBERSTATUS"], dtype=np.int64)
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
            raise DataError(f"{path}: no B/R/Z arm HDUs (B_WAVELENGTH, B_FLUX, B_IVAR, …; "
                            f"HDUs found: {names})")
        inner = next((read_redshift_hdu(hdul[h], path) for h in REDSHIFT_HDUS if h in names),
                     None)
    if z is not None:
        zz = np.asarray(z, dtype=np.float32)
        if zz.shape != targetid.shape:
            raise DataError(f"z has shape {zz.shape}, expected {targetid.shape}")
    else:
        table = redshift_table if redshift_table is not None else inner
        if redrock_path is not None:
            table = read_redshifts(redrock_path)
        if table is None:
            raise DataError(
                f"{path}: no redshifts", hint="pass z=… or redrock_path=… (redrock-*.fits or a "
                "zcatalog with HDU ZCATALOG)"
            )
        zz, cat = match_redshifts(table, targetid)
        catalogue.update(cat)
    flux, ivar, mask = merge_arms(arms, grid, read_counts)
    return SpectraBatch(targetid=targetid, z=zz, flux=flux, ivar=ivar, mask=mask,
                        meta={"source": str(path), "read_counts": read_counts,
                              "catalogue": catalogue})




def read_redshift_hdu(hdu: fits.BinTableHDU, path: str | Path) -> RedshiftTable:
    """TARGETID, Z and (when present) ZWARN, SPECTYPE of a REDSHIFTS / ZCATALOG table."""
    data = hdu.data
    cols = data.columns.names
    for need in ("TARGETID", "Z"):
        if need not in cols:
            raise DataError(f"{path}: HDU {hdu.name} has no {need} column (columns: {cols})")
    out: RedshiftTable = {"TARGETID": np.asarray(data["TARGETID"], dtype=np.int64),
                          "Z": np.asarray(data["Z"], dtype=np.float64)}
    if "ZWARN" in cols:
        out["ZWARN"] = np.asarray(data["ZWARN"], dtype=np.int64)
    if "SPECTYPE" in cols:
        out["SPECTYPE"] = np.char.strip(np.asarray(data["SPECTYPE"]).astype(str))
    return out


def read_redshifts(paths: str | Path | Sequence[str | Path]) -> RedshiftTable:
    """Concatenate the redshift tables of redrock/zcatalog files (HDU REDSHIFTS or ZCATALOG)."""
    plist = [paths] if isinstance(paths, (str, Path)) else list(paths)
    tables = []
    for p in map(Path, plist):
        try:
            with fits.open(p, memmap=False) as hd:
                names = [h.name for h in hd]
                hdu = next((h for h in REDSHIFT_HDUS if h in names), None)
                if hdu is None:
                    raise DataError(
                        f"{p}: no redshift table (looked for HDUs {list(REDSHIFT_HDUS)}; "
                        f"HDUs found: {names})",
                        hint="pass a redrock-*.fits file or a zcatalog (HDU ZCATALOG)")
                tables.append(read_redshift_hdu(hd[hdu], p))
        except OSError as exc:
            raise DataError(f"{p}: not a readable FITS file ({exc})") from exc
    keys = set.intersection(*(set(t) for t in tables)) if tables else {"TARGETID", "Z"}
    return {k: np.concatenate([t[k] for t in tables]) for k in keys}


def match_redshifts(table: RedshiftTable, targetid: np.ndarray
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(z per fibre, catalogue columns per fibre) by TARGETID. Missing → z NaN; several rows
    with different Z → z NaN and ``Z_DUPLICATE`` True (never a silent last-one-wins)."""
    tid = table["TARGETID"]
    order = np.argsort(tid, kind="stable")
    stid = tid[order]
    uniq, first, cnt = np.unique(stid, return_index=True, return_counts=True)
    zs = table["Z"][order]
    conflict = np.zeros(uniq.size, dtype=bool)
    for j in np.where(cnt > 1)[0]:
        vals = zs[first[j]: first[j] + cnt[j]]
        conflict[j] = not np.allclose(vals, vals[0], rtol=0, atol=1e-6)
    pos = np.searchsorted(uniq, targetid)
    pos_c = np.clip(pos, 0, max(uniq.size - 1, 0))
    found = (uniq.size > 0) & (uniq[pos_c] == targetid) if uniq.size else np.zeros(
        targetid.size, bool)
    row = order[first[pos_c]] if uniq.size else np.zeros(targetid.size, np.int64)
    z = np.where(found, table["Z"][row] if uniq.size else np.nan, np.nan)
    dup = found & conflict[pos_c] if uniq.size else np.zeros(targetid.size, bool)
    z = np.where(dup, np.nan, z).astype(np.float32)
    cat: dict[str, np.ndarray] = {"Z_DUPLICATE": dup}
    if "ZWARN" in table:
        cat["ZWARN"] = np.where(found, table["ZWARN"][row], 0)
    if "SPECTYPE" in table:
        cat["SPECTYPE"] = np.where(found, table["SPECTYPE"][row], "QSO")
    return z, cat


def read_desi_files(
    coadds: str | Path | Sequence[str | Path],
    redshifts: str | Path | Sequence[str | Path] | None = None,
    grid: WavelengthGrid | None = None,
) -> SpectraBatch:
    """Read DESI healpix coadds (a file, a list or a directory of ``coadd-*.fits``) with their
    redrock or zcatalog files (a file, a list or a directory of ``redrock-*.fits``/``zall*``/
    ``zpix*``; default: the ``redrock-*`` files next to the coadds), matched by TARGETID."""
    cpaths = _expand(coadds, ("coadd-*.fits", "coadd-*.fits.gz"))
    if not cpaths:
        raise DataError(f"{coadds}: no coadd-*.fits files found")
    if redshifts is None:
        rpaths = sorted({r for c in cpaths for r in c.parent.glob("redrock-*.fits*")})
    else:
        rpaths = _expand(redshifts, ("redrock-*.fits*", "zall*.fits*", "zpix*.fits*",
                                     "zcatalog*.fits*"))
    table = read_redshifts(rpaths) if rpaths else None
    parts = [read_desi_coadd(c, grid, redshift_table=table) for c in cpaths]
    out = SpectraBatch.concat(parts)
    counts: dict[str, int] = {}
    for p in parts:
        merge_counts(counts, p.meta.get("read_counts", {}))
    cat_keys = set.intersection(*(set(p.meta.get("catalogue", {})) for p in parts))
    out.meta = {"source": [str(c) for c in cpaths], "read_counts": counts,
                "catalogue": {k: np.concatenate([p.meta["catalogue"][k] for p in parts])
                              for k in cat_keys}}
    return out


def _expand(spec: str | Path | Sequence[str | Path], patterns: tuple[str, ...]) -> list[Path]:
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    out: list[Path] = []
    for p in map(Path, items):
        if p.is_dir():
            found: set[Path] = set()
            for pat in patterns:
                found.update(p.glob(pat))
            out += sorted(found)
        else:
            out.append(p)
    return unique_files(out)  # a file named twice (its directory too, a link) is read once


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
    *, fiberstatus: np.ndarray | None = None,
) -> Path:
    """Write a minimal coadd in DESI's layout: FIBERMAP (TARGETID, COADD_FIBERSTATUS),
    {B,R,Z}_{WAVELENGTH,FLUX,IVAR,MASK}."""
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU()]
    n = len(targetid)
    fm = fits.BinTableHDU(Table({
        "TARGETID": np.asarray(targetid, dtype=np.int64),
        "COADD_FIBERSTATUS": (np.zeros(n, np.int32) if fiberstatus is None
                              else np.asarray(fiberstatus, np.int32)),
    }))
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
    path: str | Path, targetid: np.ndarray, z: np.ndarray, spectype: list[str] | None = None,
    *, zwarn: np.ndarray | None = None, hdu_name: str = "REDSHIFTS",
) -> Path:
    """Write a minimal redrock file: HDU ``hdu_name`` (REDSHIFTS, or ZCATALOG for a zcatalog)
    with TARGETID, Z, ZWARN, SPECTYPE."""
    n = len(targetid)
    t = Table({
        "TARGETID": np.asarray(targetid, dtype=np.int64),
        "Z": np.asarray(z, dtype=np.float64),
        "ZWARN": np.zeros(n, dtype=np.int64) if zwarn is None else np.asarray(zwarn, np.int64),
        "SPECTYPE": np.asarray(spectype or ["QSO"] * n),
    })
    h = fits.BinTableHDU(t)
    h.name = hdu_name
    fits.HDUList([fits.PrimaryHDU(), h]).writeto(path, overwrite=True)
    return Path(path)
