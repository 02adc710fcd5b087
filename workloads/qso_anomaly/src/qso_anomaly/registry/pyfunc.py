"""The MLflow pyfunc wrapper of a trained qso_anomaly model (scores from flux, ivar, z).

Logged as "models from code": MLflow copies this file into the model and runs it at load time,
so no pickled object is stored (``mlflow.models.set_model`` at the bottom).
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np


class QsoAnomalyPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """``predict({"flux": (N,P), "ivar": (N,P), "z": (N,)}) -> scores (N,)``."""

    def load_context(self, context: Any) -> None:
        from qso_anomaly.registry.model_io import load_trained_model

        self.trained = load_trained_model(context.artifacts["trained_model"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # No type hints here: MLflow would try to derive a schema from them.
        from qso_anomaly.registry.model_io import score_arrays

        flux = np.asarray(model_input["flux"], dtype=np.float32)
        ivar = np.asarray(model_input["ivar"], dtype=np.float32)
        z = np.asarray(model_input["z"], dtype=np.float32)
        return score_arrays(self.trained, flux, ivar, z)


mlflow.models.set_model(QsoAnomalyPyfunc())
