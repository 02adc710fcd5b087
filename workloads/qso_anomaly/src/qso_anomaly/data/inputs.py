"""Scoring input: Parquet shards, or DESI healpix coadds with their redrock/zcatalog files.

One entry point for ``qso-anomaly score``, ``explain``, ``report`` and the pipeline, so that every
path reads DESI files through the same reader (:func:`qso_anomaly.data.fits_io.read_desi_files`:
arm merge and inverse-variance rebinning onto the model grid) and the same data policy
(:func:`qso_anomaly.data.policy.apply_policy`) before anything is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qso_anomaly.data.files import unique_files
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.policy import DataPolicy
from qso_anomaly.errors import DataError

#: Name of the shard DESI input is written to under the work directory.
DESI_SHARD = "desi-00000.parquet"

InputPaths = str | Path | Sequence[str | Path]


@dataclass(frozen=True)
class ScoringInput:
    """Parquet shards ready to score, and what was dropped on the way.

    Attributes:
        shards: Parquet shards on the model grid.
        kind: ``"parquet"`` (given as shards) or ``"desi"`` (read from coadd files).
        rejected_on_read: Spectra rejected (and pixels masked, ``masked_pixels:<reason>``) by
            the data policy while reading DESI files, by reason; empty for Parquet input
            (the scorer counts those itself). Catalogue columns such as ``ZWARN`` do not
            travel in shards, so these rejections are only counted here.
        sources: The files the spectra were read from.
    """

    shards: list[Path]
    kind: str
    rejected_on_read: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def _paths(data: InputPaths) -> list[Path]:
    items = [data] if isinstance(data, (str, Path)) else list(data)
    return [Path(p) for p in items]


def _is_coadd(p: Path) -> bool:
    if p.is_dir():
        return any(p.glob("coadd-*.fits*"))
    return p.name.startswith("coadd-") and ".fits" in p.name


def is_desi_input(data: InputPaths) -> bool:
    """Whether ``data`` names DESI coadds rather than Parquet shards.

    Args:
        data: A file, a list of files or a directory.

    Returns:
        ``True`` when every item is a ``coadd-*.fits[.gz]`` file or a directory holding some.

    Raises:
        DataError: Coadds and Parquet shards are mixed.
    """
    paths = _paths(data)
    desi = [_is_coadd(p) for p in paths]
    if any(desi) and not all(desi):
        raise DataError(f"{[str(p) for p in paths]}: DESI coadds and Parquet shards mixed",
                        hint="score coadds and shards in separate runs")
    return bool(paths) and all(desi)


def parquet_shards(data: InputPaths) -> list[Path]:
    """The Parquet shards named by ``data`` (a file, a list or a directory of ``*.parquet``).

    Scoring outputs (``*.scores.parquet``) in the same directory are left out.

    Args:
        data: A shard, a list of shards or a directory of shards.

    Returns:
        Shard paths, sorted within each directory; a shard named twice (a directory and a file
        in it, a link) once (:func:`unique_files`).

    Raises:
        DataError: No shard exists at ``data``.
    """
    out: list[Path] = []
    for p in _paths(data):
        found = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
        out.extend(x for x in found if not x.name.endswith(".scores.parquet"))
    out = unique_files(out)
    if not out or not all(x.is_file() for x in out):
        raise DataError(f"no Parquet shards at {data}",
                        hint="point --data at a directory written by `qso-anomaly synth` or at "
                             "DESI coadd-*.fits files")
    return out


def prepare_input(
    data: InputPaths,
    *,
    grid: WavelengthGrid,
    policy: DataPolicy,
    work_dir: str | Path,
    redshifts: InputPaths | None = None,
) -> ScoringInput:
    """Parquet shards for ``data``, reading DESI coadds onto the model grid when given those.

    Parquet input is returned as is. DESI healpix coadds (a file, a list or a directory of
    ``coadd-*.fits``) are read with their redshifts (``redshifts``: redrock or zcatalog files,
    HDU ``REDSHIFTS`` or ``ZCATALOG``; default the ``redrock-*`` files next to the coadds),
    matched by TARGETID, merged across the b/r/z arms and rebinned onto ``grid`` by inverse
    variance weighting (spender ``prepare_spectra`` merge; reference
    ``spectra-and-models.md`` §1.3). ``policy`` is applied (redrock ``ZWARN != 0``,
    ``SPECTYPE != QSO``, ``COADD_FIBERSTATUS != 0``, duplicate or conflicting TARGETIDs,
    redshift outside the model's range, too few valid pixels) and the spectra that pass are
    written as one shard ``work_dir/desi-00000.parquet`` (flux in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar
    in flux⁻², wavelength in Å, vacuum, observer frame).

    Args:
        data: Parquet shard(s) or directory, or DESI coadd file(s) or directory.
        grid: The model's input grid.
        policy: The model's data policy (:meth:`DataPolicy.for_spec`).
        work_dir: Where the shard of DESI input is written.
        redshifts: Redrock/zcatalog file(s) or directory for DESI input.

    Returns:
        The shards to score and the counts of what the policy rejected or masked on read.

    Raises:
        DataError: No input at ``data``, unreadable FITS files or HDUs, coadds and shards mixed,
            or no DESI spectrum passes the data policy.
    """
    from qso_anomaly.data.fits_io import read_desi_files
    from qso_anomaly.data.policy import apply_policy
    from qso_anomaly.data.synth import write_batch

    if not is_desi_input(data):
        shards = parquet_shards(data)
        return ScoringInput(shards=shards, kind="parquet", sources=[str(p) for p in shards])
    rs = None if redshifts is None or (not isinstance(redshifts, (str, Path))
                                       and not list(redshifts)) else redshifts
    batch = read_desi_files(data if isinstance(data, (str, Path)) else list(data), rs, grid)
    cleaned, reasons, counts = apply_policy(batch, policy)
    keep = reasons == ""
    if not keep.any():
        raise DataError(f"{data}: no spectrum passed the data policy ({counts})",
                        hint="check the redshift files (ZWARN, SPECTYPE) and the model's "
                             "redshift range")
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = write_batch(cleaned.take(keep), out / DESI_SHARD, grid)
    return ScoringInput(shards=[path], kind="desi", rejected_on_read=dict(counts),
                        sources=[str(s) for s in batch.meta.get("source", [])])
