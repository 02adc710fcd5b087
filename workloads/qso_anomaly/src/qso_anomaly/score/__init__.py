"""Batch scoring of Parquet shards (plain loop or Ray Data), resumable per shard."""

from qso_anomaly.score.scorer import Scorer
from qso_anomaly.score.shards import ScoringSummary, output_path, score_shards

__all__ = ["Scorer", "ScoringSummary", "output_path", "score_shards"]
