"""Load a trained-model directory and score plain arrays (used by the MLflow pyfunc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def load_trained_model(directory: str | Path) -> Any:
    from qso_anomaly.train import TrainedModel

    return TrainedModel.load(directory)


def score_arrays(trained: Any, flux: NDArray[Any], ivar: NDArray[Any], z: NDArray[Any]
                 ) -> NDArray[np.float32]:
    """Anomaly scores (N,) of spectra on the model's grid; bad pixels must have ivar 0."""
    from qso_anomaly.data.batch import SpectraBatch
    from qso_anomaly.models.scoring import score_torch

    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    batch = SpectraBatch(targetid=np.arange(flux.shape[0]), z=np.asarray(z, dtype=np.float32),
                         flux=flux, ivar=ivar, mask=~(ivar > 0))
    model = trained.torch_model()
    return np.asarray(score_torch(model, batch).score, dtype=np.float32)
