"""Training: local loop, Ray Train (TorchTrainer) and JAX in a Ray actor."""

from qso_anomaly.train.fit import fit
from qso_anomaly.train.trained import TrainedModel

__all__ = ["TrainedModel", "fit"]
