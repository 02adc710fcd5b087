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
    """``predict({"flux": (N,P), "ivar": (N,P), "z": (N,)[, "targetid": (N,)]})`` → a DataFrame
    with ``score`` (NaN for rejected rows), ``reject_reason`` ("" = scored), ``targetid``, and
    the batch path's flag decision: ``stratum`` (coverage stratum code), ``p_value`` (conformal,
    within the stratum) and ``flagged`` (p ≤ α; α = ``params["alpha"]``, default 0.01).

    Validation is the batch path's data policy (non-finite pixels masked and counted, redshift
    outside the trained range, duplicates, too few valid pixels); the last call's counts are in
    ``self.last_counts``."""

    def load_context(self, context: Any) -> None:
        from qso_anomaly.registry.model_io import load_trained_model

        self.trained = load_trained_model(context.artifacts["trained_model"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # No type hints here: MLflow would try to derive a schema from them.
        import pandas as pd

        from qso_anomaly.registry.model_io import flag_arrays, score_arrays_detailed

        def col(name: str) -> np.ndarray:
            v = model_input[name]
            if hasattr(v, "tolist") and not isinstance(v, np.ndarray):
                v = v.tolist()
            return np.asarray(v, dtype=np.float32 if name != "targetid" else np.int64)

        targetid = col("targetid") if "targetid" in model_input else None
        scores, reasons, counts = score_arrays_detailed(
            self.trained, col("flux"), col("ivar"), col("z"), targetid)
        self.last_counts = counts
        alpha = float((params or {}).get("alpha", 0.01))
        stratum, p, flagged, _ = flag_arrays(self.trained, col("ivar"), scores, alpha)
        n = scores.shape[0]
        return pd.DataFrame({"targetid": targetid if targetid is not None else np.arange(n),
                             "score": scores, "reject_reason": reasons, "stratum": stratum,
                             "p_value": p, "flagged": flagged})


mlflow.models.set_model(QsoAnomalyPyfunc())
