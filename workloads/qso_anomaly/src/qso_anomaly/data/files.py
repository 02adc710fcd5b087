"""Lists of input files (framework- and format-neutral).

Both readers (:mod:`qso_anomaly.data.inputs` for Parquet shards and DESI directories,
:mod:`qso_anomaly.data.fits_io` for DESI coadds) take their file lists through here, so a file
named twice is read once on every path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def unique_files(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without the later namings of a file already in it (first naming kept).

    A directory and a file in it, a link and its target, ``a/../a/x`` and ``a/x`` (and on a
    case-insensitive file system ``A/x``; a hard link) name one file, told by its device and
    inode: read twice, its spectra would be scored twice.

    Args:
        paths: Files as found, in reading order.

    Returns:
        The files in the same order, each real file once.
    """
    seen: set[object] = set()
    out: list[Path] = []
    for p in paths:
        try:
            st = p.stat()
            real: object = (st.st_dev, st.st_ino)
        except (OSError, RuntimeError):  # missing, or a link loop: left to the reader's error
            real = p.absolute()
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out
