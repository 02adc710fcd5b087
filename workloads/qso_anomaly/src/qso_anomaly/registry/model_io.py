"""Load a trained-model directory and score plain arrays (used by the MLflow pyfunc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def load_trained_model(directory: str | Path) -> Any:
    from qso_anomaly.train import TrainedModel

    return TrainedModel.load(directory)


def score_arrays_detailed(
    trained: Any, flux: NDArray[Any], ivar: NDArray[Any], z: NDArray[Any],
    targetid: NDArray[Any] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.str_], dict[str, int]]:
    """(scores (N,), reject reason per row ("" = scored), counts by reason) through the same
    data policy as the batch path (:func:`qso_anomaly.data.policy.apply_policy` with the
    model's trained redshift range). Rejected rows score NaN and carry their reason.

    Raises DataError when the arrays do not have the model grid's shape."""
    from qso_anomaly.data.batch import SpectraBatch
    from qso_anomaly.data.policy import DataPolicy, apply_policy
    from qso_anomaly.errors import DataError
    from qso_anomaly.models.scoring import score_torch

    flux = np.atleast_2d(np.asarray(flux, dtype=np.float32))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float32))
    zz = np.atleast_1d(np.asarray(z, dtype=np.float32))
    npix = trained.grid.npix
    if flux.shape != ivar.shape or flux.ndim != 2 or flux.shape[1] != npix:
        raise DataError(
            f"flux {flux.shape} and ivar {ivar.shape} must both be (N, {npix}) on the model grid",
            hint=f"rebin onto {trained.grid.to_dict()} (qso_anomaly.data.rebin.rebin)")
    if zz.shape != (flux.shape[0],):
        raise DataError(f"z has shape {zz.shape}, expected ({flux.shape[0]},)")
    tid = np.arange(flux.shape[0]) if targetid is None else np.asarray(targetid)
    batch = SpectraBatch(targetid=tid, z=zz, flux=flux, ivar=ivar,
                         mask=~(np.isfinite(ivar) & (ivar > 0)))
    cleaned, reasons, counts = apply_policy(batch, DataPolicy.for_spec(trained.spec))
    out = np.full(flux.shape[0], np.nan, dtype=np.float32)
    ok = reasons == ""
    if ok.any():
        out[ok] = score_torch(trained.torch_model(), cleaned.take(ok)).score
    return out, reasons, counts


def score_arrays(trained: Any, flux: NDArray[Any], ivar: NDArray[Any], z: NDArray[Any]
                 ) -> NDArray[np.float32]:
    """Anomaly scores (N,) of spectra on the model's grid through the data policy; rejected
    rows are NaN (see :func:`score_arrays_detailed` for the reasons)."""
    return score_arrays_detailed(trained, flux, ivar, z)[0]


def flag_arrays(
    trained: Any, ivar: NDArray[Any], scores: NDArray[Any], alpha: float = 0.01,
) -> tuple[NDArray[np.int16], NDArray[np.float64], NDArray[np.bool_], NDArray[np.int8]]:
    """The batch path's flag decision for scored arrays (Mondrian conformal by coverage
    stratum, :mod:`qso_anomaly.train.mondrian`; a model without strata decides pooled).

    Args:
        trained: The TrainedModel the scores came from.
        ivar: ivar ``(N, P)`` on the model grid (non-finite pixels count as not observed).
        scores: Scores ``(N,)`` (NaN for rejected rows: p-value NaN, not flagged).
        alpha: Level of the decision ``p ≤ α``.

    Returns:
        ``(stratum, p_value, flagged, level)``, each ``(N,)``; ``level`` indexes
        :data:`qso_anomaly.train.mondrian.LEVELS`.
    """
    from qso_anomaly.train.mondrian import coverage_strata

    iv = np.atleast_2d(np.asarray(ivar, dtype=np.float32))
    strata = coverage_strata(np.where(np.isfinite(iv), iv, 0.0), trained.grid.wave)
    cal = trained.flag_calibration()
    p, level = cal.p_values(scores, strata, alpha)
    return strata, p, np.asarray(np.nan_to_num(p, nan=2.0) <= alpha), level
