"""Training: local loop, Ray Train (TorchTrainer) and JAX in a Ray actor.

``fit`` (:func:`qso_anomaly.train.fitting.fit`) and ``TrainedModel`` load on first use (PEP 562
module ``__getattr__``): a scoring process imports ``train.trained`` and ``train.mondrian``
only, and an eager ``fit`` here imported PyTorch, the training loop and its helpers into every
JAX Ray scoring actor (1.0 s of its start-up; issue 15).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qso_anomaly.train.fitting import fit
    from qso_anomaly.train.trained import TrainedModel

__all__ = ["TrainedModel", "fit"]


def __getattr__(name: str) -> Any:
    if name == "fit":
        from qso_anomaly.train.fitting import fit

        return fit
    if name == "TrainedModel":
        from qso_anomaly.train.trained import TrainedModel

        return TrainedModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
