"""Run metrics: Prometheus exporter for scoring runs and score drift against the reference."""

from qso_anomaly.metrics.drift import (
    ScoreDrift,
    feature_ks,
    psi,
    psi_band,
    psi_from_counts,
    reference_edges,
    score_drift,
)
from qso_anomaly.metrics.exporter import BatchObserver, ScoringMetrics, score_buckets

__all__ = [
    "BatchObserver",
    "ScoreDrift",
    "ScoringMetrics",
    "feature_ks",
    "psi",
    "psi_band",
    "psi_from_counts",
    "reference_edges",
    "score_buckets",
    "score_drift",
]
