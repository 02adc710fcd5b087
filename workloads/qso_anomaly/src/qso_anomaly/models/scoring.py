"""Batch scoring with either framework → :class:`ScoreResult`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qso_anomaly.data.batch import SpectraBatch

if TYPE_CHECKING:
    import torch


@dataclass
class ScoreResult:
    """Per-spectrum anomaly scores of N spectra (NumPy, float32 unless noted).

    Attributes:
        score: Combined anomaly score, shape (N,), dimensionless (higher = more anomalous):
            ``chi2_weight``·(log χ²/dof − loc)/scale + ``density_weight``·(−log p − loc)/scale
            with the calibration of :class:`~qso_anomaly.models.density.DensityModel`, plus
            ``shape_weight``·(shape_z − loc)/scale when the density carries the broad-band
            shape term (:mod:`qso_anomaly.models.shape`), plus ``trough_weight``·(trough −
            loc)/scale when its calibration carries the absorption-trough term
            (:mod:`qso_anomaly.models.trough`).
        chi2_dof: Reconstruction χ² per valid pixel, Σ ivar·(flux − recon)² / n_valid over the
            pixels with ivar > 0, shape (N,), dimensionless.
        density_nll: −log p(latent) under the latent Gaussian mixture, shape (N,), in nats.
    """

    score: np.ndarray  # (N,) combined anomaly score (higher = more anomalous)
    chi2_dof: np.ndarray  # (N,) reconstruction χ² per good pixel
    density_nll: np.ndarray  # (N,) −log p(latent)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @staticmethod
    def concat(parts: list[ScoreResult]) -> ScoreResult:
        """Concatenate results row-wise, in order.

        Args:
            parts: Results of consecutive chunks (may be empty).

        Returns:
            One result with Σ N_i rows; three empty float32 arrays when ``parts`` is empty.
        """
        return ScoreResult(
            np.concatenate([p.score for p in parts]) if parts else np.zeros(0, np.float32),
            np.concatenate([p.chi2_dof for p in parts]) if parts else np.zeros(0, np.float32),
            np.concatenate([p.density_nll for p in parts]) if parts else np.zeros(0, np.float32),
        )


def score_torch(model: torch.nn.Module, batch: SpectraBatch, chunk: int = 512) -> ScoreResult:
    """Score a clean batch with a torch ``QsoAutoencoder``, in chunks, without gradients.

    The batch must already have passed :func:`qso_anomaly.data.validate.clean_batch` (finite
    flux, ivar ≥ 0, z in the trained range); this function does not validate. The model is put
    in eval mode.

    Args:
        model: A :class:`~qso_anomaly.models.torch_model.QsoAutoencoder` (CPU tensors).
        batch: N spectra: flux (N, P) float32 in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar (N, P) float32
            in flux⁻², z (N,) float32, on the model's observed grid (P pixels).
        chunk: Spectra per forward pass (bounds memory).

    Returns:
        Scores, χ²/dof and −log p(latent) of the N spectra, in input order.
    """
    import torch

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


def trough_torch(model: torch.nn.Module, batch: SpectraBatch, chunk: int = 512) -> np.ndarray:
    """The absorption-trough term of a clean batch, as the score computes it (float32 torch).

    Args:
        model: A :class:`~qso_anomaly.models.torch_model.QsoAutoencoder` whose spec has a
            non-zero ``trough_weight`` (CPU tensors); put in eval mode.
        batch: N clean spectra on the model's grid (as for :func:`score_torch`).
        chunk: Spectra per forward pass (bounds memory).

    Returns:
        The trough depth (:mod:`qso_anomaly.models.trough`), shape (N,), float32,
        dimensionless.
    """
    import torch

    from qso_anomaly.models.torch_model import trough_depth_torch

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(batch), chunk):
            sl = slice(s, s + chunk)
            fl, iv = torch.from_numpy(batch.flux[sl]), torch.from_numpy(batch.ivar[sl])
            recon, _ = model.forward_parts(fl, iv, torch.from_numpy(batch.z[sl]))  # type: ignore[operator]
            out.append(trough_depth_torch(fl, iv, recon, model.trough_pixels,  # type: ignore[arg-type]
                                          model.spec.trough_sigma).numpy())  # type: ignore[union-attr]
    return np.concatenate(out) if out else np.zeros(0, np.float32)
