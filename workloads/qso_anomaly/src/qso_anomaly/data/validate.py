"""Input validation: the entry points the readers, trainer and scorer call.

All rules live in :mod:`qso_anomaly.data.policy` (one policy for the batch path, the Ray scorer
and the pyfunc/serving path). Pixel-level problems are masked (flux 0, ivar 0, mask True) and
counted under ``masked_pixels:<reason>`` (number of pixels); row-level problems drop the spectrum
and are counted under ``<reason>`` (number of spectra).
"""

from __future__ import annotations

import numpy as np

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.policy import (
    PIXEL_REASONS,
    ROW_REASONS,
    DataPolicy,
    apply_policy,
    merge_counts,
    n_rejected_rows,
)

MAX_REDSHIFT = 7.0

__all__ = ["MAX_REDSHIFT", "PIXEL_REASONS", "ROW_REASONS", "DataPolicy", "clean_batch",
           "clean_rows", "merge_counts", "n_rejected_rows"]


def clean_batch(
    batch: SpectraBatch, *, min_good_fraction: float | None = None,
    policy: DataPolicy | None = None,
) -> tuple[SpectraBatch, dict[str, int]]:
    """Return (clean batch, counts by reason). The input batch is not modified."""
    cleaned, reasons, counts = clean_rows(batch, min_good_fraction=min_good_fraction,
                                          policy=policy)
    keep = reasons == ""
    return (cleaned if keep.all() else cleaned.take(keep)), counts


def clean_rows(
    batch: SpectraBatch, *, min_good_fraction: float | None = None,
    policy: DataPolicy | None = None,
) -> tuple[SpectraBatch, np.ndarray, dict[str, int]]:
    """Mask bad pixels of every row; return (masked batch with ALL rows, per-row rejection
    reason ("" = usable), counts by reason). See :func:`qso_anomaly.data.policy.apply_policy`."""
    policy = policy or DataPolicy()
    if min_good_fraction is not None:
        from dataclasses import replace

        policy = replace(policy, min_valid_fraction=min_good_fraction)
    return apply_policy(batch, policy)
