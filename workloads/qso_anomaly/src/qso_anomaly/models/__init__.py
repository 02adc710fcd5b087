"""Autoencoder + latent-density anomaly model: one spec, PyTorch and JAX implementations."""

from qso_anomaly.models.spec import ModelSpec

__all__ = ["ModelSpec"]
