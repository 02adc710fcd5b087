"""MLflow settings shared by every registry call: quiet environment, local sqlite store, hashes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

#: Environment that keeps MLflow from contacting anything but the tracking store.
QUIET_MLFLOW_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "_MLFLOW_TELEMETRY_PRE_WARM_DATABRICKS_SDK": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


def quiet_mlflow_env() -> None:
    """Set :data:`QUIET_MLFLOW_ENV` (without overriding explicit settings). Call before import."""
    for key, value in QUIET_MLFLOW_ENV.items():
        os.environ.setdefault(key, value)


def sqlite_tracking_uri(directory: str | os.PathLike[str]) -> str:
    """``sqlite:///<abs dir>/mlflow.db`` — the default store, next to the run's outputs."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
               ) -> dict[str, str]:
    """sha256 of each file, keyed by its path relative to ``root`` (or its name)."""
    out: dict[str, str] = {}
    for p in sorted(Path(x) for x in paths):
        key = str(p.relative_to(root)) if root is not None else p.name
        out[key] = file_sha256(p)
    return out


def combined_hash(hashes: dict[str, str]) -> str:
    """One sha256 over sorted ``name=hash`` lines: a data version identifier."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()
