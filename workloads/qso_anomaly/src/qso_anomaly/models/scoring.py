"""Batch scoring with either framework → :class:`ScoreResult`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qso_anomaly.data.batch import SpectraBatch


@dataclass
class ScoreResult:
    score: np.ndarray  # (N,) combined anomaly score (higher = more anomalous)
    chi2_dof: np.ndarray  # (N,) reconstruction χ² per good pixel
    density_nll: np.ndarray  # (N,) −log p(latent)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @staticmethod
    def concat(parts: list[ScoreResult]) -> ScoreResult:
        return ScoreResult(
            np.concatenate([p.score for p in parts]) if parts else np.zeros(0, np.float32),
            np.concatenate([p.chi2_dof for p in parts]) if parts else np.zeros(0, np.float32),
            np.concatenate([p.density_nll for p in parts]) if parts else np.zeros(0, np.float32),
        )


def score_torch(model: torch.nn.Module, batch: SpectraBatch, chunk: int = 512) -> ScoreResult:
    """Score a (clean) batch with a torch QsoAutoencoder, in chunks, without gradients."""
    from qso_anomaly.models.torch_model import score_parts_torch

    model.eval()
    parts = []
    with torch.no_grad():
        for s in range(0, len(batch), chunk):
            sl = slice(s, s + chunk)
            sc, c2, nl = score_parts_torch(
                model,  # type: ignore[arg-type]
                torch.from_numpy(batch.flux[sl]),
                torch.from_numpy(batch.ivar[sl]),
                torch.from_numpy(batch.z[sl]),
            )
            parts.append(ScoreResult(sc.numpy(), c2.numpy(), nl.numpy()))
    return ScoreResult.concat(parts)
