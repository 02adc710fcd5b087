"""Batch scoring of Parquet shards (plain loop or Ray Data), resumable per shard, streamed."""

from qso_anomaly.score.config import apply_thread_env

apply_thread_env()  # before torch is imported (no effect if it already was)

from qso_anomaly.score.config import ScoringConfig
from qso_anomaly.score.scorer import Scorer
from qso_anomaly.score.shards import ScoringSummary, output_path, score_shards

__all__ = ["Scorer", "ScoringConfig", "ScoringSummary", "output_path", "score_shards"]
