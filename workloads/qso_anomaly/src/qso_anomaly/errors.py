"""Errors raised on purpose by qso_anomaly (the package does not depend on skyrig).

Every message says what is wrong, where, and what to do.
"""

from __future__ import annotations


class QsoAnomalyError(Exception):
    """Base class of every error qso_anomaly raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  → {hint}")


class DataError(QsoAnomalyError):
    """Spectra or shards are malformed (wrong grid, missing columns, unreadable file)."""


class ShardError(DataError):
    """One Parquet shard cannot be used; carries the counted reason."""

    def __init__(self, message: str, *, reason: str, path: str, hint: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {message}", hint=hint)


class ModelError(QsoAnomalyError):
    """A model spec, checkpoint or trained-model directory is invalid."""
