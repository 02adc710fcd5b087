"""Scorer: a loaded model (torch or JAX) that turns raw rows into scored rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from qso_anomaly.data.batch import SpectraBatch, list_lengths
from qso_anomaly.data.io import PIXEL_COLUMNS, table_to_batch
from qso_anomaly.data.policy import DataPolicy
from qso_anomaly.data.validate import clean_rows
from qso_anomaly.errors import ModelError
from qso_anomaly.models.scoring import ScoreResult
from qso_anomaly.train.trained import TrainedModel, as_trained

Framework = Literal["torch", "jax"]

SCORED_SCHEMA = pa.schema([
    ("targetid", pa.int64()),
    ("score", pa.float32()),
    ("chi2_dof", pa.float32()),
    ("density_nll", pa.float32()),
    ("label", pa.string()),
    ("reject_reason", pa.string()),
])


class Scorer:
    """Holds one model in one framework; ``score_table`` never raises on bad rows."""

    def __init__(
        self, model: TrainedModel | str | Path, framework: Framework = "torch",
        threads: int | None = None,
    ) -> None:
        tm = as_trained(model)
        self.spec, self.grid, self.framework = tm.spec, tm.grid, framework
        self.policy = DataPolicy.for_spec(tm.spec)
        if framework == "torch":
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.model: Any = tm.torch_model()
        elif framework == "jax":
            self.params = tm.jax_params()
        else:
            raise ModelError(f"unknown framework {framework!r}; use 'torch' or 'jax'")

    def score_batch(self, batch: SpectraBatch) -> ScoreResult:
        """Score a clean batch."""
        if self.framework == "torch":
            from qso_anomaly.models.scoring import score_torch

            return score_torch(self.model, batch)
        from qso_anomaly.models.jax_model import score_jax

        return score_jax(self.params, self.spec, self.grid, batch)

    def score_rows(self, batch: SpectraBatch) -> tuple[ScoreResult, np.ndarray, dict[str, int]]:
        """Validate and score every row: (scores with NaN for rejected rows, reasons, counts)."""
        cleaned, reasons, counts = clean_rows(batch, policy=self.policy)
        n = len(batch)
        out = ScoreResult(np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32),
                          np.full(n, np.nan, np.float32))
        ok = reasons == ""
        if ok.any():
            res = self.score_batch(cleaned.take(ok))
            out.score[ok], out.chi2_dof[ok], out.density_nll[ok] = (
                res.score, res.chi2_dof, res.density_nll)
        return out, reasons, counts

    def score_table(self, table: pa.Table) -> pa.Table:
        """Raw shard rows (any list layout) → SCORED_SCHEMA rows (+ ``path`` if present)."""
        n = table.num_rows
        lens = [list_lengths(table.column(c)) for c in PIXEL_COLUMNS if c in table.column_names
                and c != "truth_mask"]
        ok_len = np.logical_and.reduce([ln == self.grid.npix for ln in lens])
        reasons = np.full(n, "", dtype=object)
        reasons[~ok_len] = "wrong_grid_length"
        score = np.full(n, np.nan, np.float32)
        chi2 = np.full(n, np.nan, np.float32)
        nll = np.full(n, np.nan, np.float32)
        idx = np.where(ok_len)[0]
        if idx.size:
            sub = table.take(pa.array(idx)).drop_columns(
                [c for c in ("truth_mask", "path") if c in table.column_names])
            batch, _ = table_to_batch(sub, self.grid.npix)
            res, r, _ = self.score_rows(batch)
            score[idx], chi2[idx], nll[idx] = res.score, res.chi2_dof, res.density_nll
            reasons[idx] = r
        label = (table.column("label") if "label" in table.column_names
                 else pa.nulls(n, pa.string()))
        cols = {
            "targetid": table.column("targetid").cast(pa.int64()),
            "score": pa.array(score), "chi2_dof": pa.array(chi2), "density_nll": pa.array(nll),
            "label": label, "reject_reason": pa.array(reasons.astype(str).tolist(), pa.string()),
        }
        if "path" in table.column_names:
            cols["path"] = table.column("path")
        return pa.table(cols)


class RayScorer:
    """Callable class for ``Dataset.map_batches`` (one model per actor)."""

    def __init__(self, model_dir: str, framework: Framework = "torch", threads: int = 1) -> None:
        self.scorer = Scorer(model_dir, framework, threads=threads)

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.scorer.score_table(table)
