"""Baselines scored in the same harness as the autoencoder (benchmark qso-inject-v1)."""

from qso_anomaly.baselines.pca import PcaChi2, PcaIsolationForest

__all__ = ["PcaChi2", "PcaIsolationForest"]
