"""fit(): train the autoencoder, fit the latent density, calibrate the score."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.classes import NORMAL
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.io import read_all
from qso_anomaly.data.policy import DataPolicy
from qso_anomaly.data.templates import template_hashes
from qso_anomaly.data.validate import clean_batch
from qso_anomaly.errors import ModelError
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.scoring import score_torch, trough_torch
from qso_anomaly.models.shape import ShapeModel
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.models.torch_model import build_model
from qso_anomaly.train.augment import augment_masks
from qso_anomaly.train.calibrate import calibrate
from qso_anomaly.train.loop import train_local
from qso_anomaly.train.mondrian import (
    MondrianCalibration,
    copy_names,
    coverage_strata,
    masking_copies,
)
from qso_anomaly.train.trained import TrainedModel

TrainData = SpectraBatch | str | Path | Sequence[str | Path]


def load_training_data(data: TrainData, grid: WavelengthGrid) -> tuple[SpectraBatch, dict]:
    if isinstance(data, SpectraBatch):
        batch = data
    else:
        paths = [data] if isinstance(data, (str, Path)) else list(data)
        expanded: list[Path] = []
        for p in map(Path, paths):
            expanded += sorted(p.glob("*.parquet")) if p.is_dir() else [p]
        batch = read_all(expanded, grid)
    if batch.npix != grid.npix:
        raise ModelError(
            f"training spectra have {batch.npix} px but the grid has {grid.npix}",
            hint="generate or resample the data on spec.input_grid()",
        )
    return clean_batch(batch, policy=DataPolicy(z_min=0.0, z_max=7.0))


def fit(
    spec: ModelSpec,
    grid: WavelengthGrid,
    train_paths_or_batch: TrainData,
    *,
    use_ray: bool = False,
    num_workers: int = 2,
    use_gpu: bool = False,
    epochs: int = 10,
    seed: int = 0,
    holdout_fraction: float = 0.25,
    framework: Literal["torch", "jax"] = "torch",
    on_epoch: Callable[[int, float], None] | None = None,
    ray_storage: str | Path | None = None,
    epoch_eval: Callable[[Any, int], dict[str, Any]] | None = None,
) -> TrainedModel:
    """Train on the given spectra minus a held-out calibration set (``holdout_fraction``, at
    least 20 spectra; labels, if present, are NOT used for training, they only restrict the
    calibration set to normal spectra). The network trains with masking augmentation
    (``spec.augment_fraction``); the latent density is fitted on clean and augmented training
    latents so that a masked normal spectrum is not unlikely for its mask alone; with
    ``spec.shape_weight`` ≠ 0 the broad-band shape model (:mod:`qso_anomaly.models.shape`,
    observed pixels only) is fitted on the training spectra too; with ``spec.trough_weight``
    ≠ 0 the absorption-trough term (:mod:`qso_anomaly.models.trough`) is calibrated with the
    others; the score terms are
    standardised on the held-out set only (location: median of the clean held-out normals;
    scale: 99th percentile − median over them clean and under the masking copies below, so
    that each term weighs the same at the flag level over the instrument states the decision
    is calibrated on) and the flag threshold calibrated (conformal, :mod:`.calibrate`) on the
    held-out set only. The flag decision is Mondrian conformal by coverage stratum
    (:mod:`.mondrian`): the held-out normals are scored clean and under deterministic masking
    copies (:func:`~.mondrian.masking_copies`: each camera off, each half camera off,
    contiguous blocks of 10–40 %), and each score is filed under the stratum of its own ivar.
    The trained redshift range is recorded in ``metrics``; ``metrics["calibration"]`` holds the
    pooled unmasked threshold with its bootstrap CI and the per-stratum n and thresholds.
    Returns a TrainedModel whose ``reference_scores`` are the clean held-out scores (the drift
    reference) and whose ``calibration`` is the stratified set."""
    t0 = time.perf_counter()
    batch, rejected = load_training_data(train_paths_or_batch, grid)
    if len(batch) < 50:
        raise ModelError(f"need at least 50 usable training spectra, got {len(batch)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(batch))
    n_hold = max(20, round(holdout_fraction * len(batch)))
    hold, train = batch.take(perm[:n_hold]), batch.take(perm[n_hold:])

    torch.manual_seed(seed)
    model = build_model(spec, grid)
    if framework == "jax":
        from qso_anomaly.train.jax_train import train_jax

        info = train_jax(model, train, epochs=epochs, seed=seed, use_ray=use_ray,
                         use_gpu=use_gpu, on_epoch=on_epoch)
    elif use_ray:
        from qso_anomaly.train.ray_train import train_with_ray

        info = train_with_ray(model, train, epochs=epochs, seed=seed, num_workers=num_workers,
                              use_gpu=use_gpu, storage_path=ray_storage)
    else:
        info = train_local(model, train, epochs, seed, on_epoch=on_epoch, epoch_eval=epoch_eval)

    model.eval()
    aug_rng = np.random.default_rng([seed, 1])
    with torch.no_grad():
        lat = []
        for s in range(0, len(train), 1024):
            b = train.take(slice(s, s + 1024))
            fa, ia = augment_masks(b.flux, b.ivar, grid.wave, aug_rng, 1.0)
            for fl, iv in ((b.flux, b.ivar), (fa, ia)):
                lat.append(model.encode(torch.from_numpy(fl), torch.from_numpy(iv),
                                        torch.from_numpy(b.z)).numpy())
    density = DensityModel.fit(np.concatenate(lat), spec.density_components, seed)
    if spec.shape_weight:
        density.shape = ShapeModel.fit(train.flux, train.ivar, train.z, grid.wave)
    model.set_density(density)
    ref = hold.take(hold.label == NORMAL) if hold.label is not None else hold
    if len(ref) < 10:
        ref = hold
    terms = [_score_terms(model, density, ref, grid)]
    for _, flux, ivar in masking_copies(ref.flux, ref.ivar, grid.wave, seed):
        terms.append(_score_terms(
            model, density, ref.with_arrays(flux=flux, ivar=ivar, mask=ref.mask | (ivar <= 0)),
            grid))
    pooled = [None if terms[0][i] is None else np.concatenate([t[i] for t in terms])
              for i in range(4)]
    density.calibrate(*terms[0], spread=tuple(pooled))
    model.set_density(density)
    reference = score_torch(model, ref)
    cal = calibrate(reference.score, alpha=0.01, seed=seed)
    mondrian = _mondrian_calibration(model, ref, reference.score, grid, seed)
    metrics: dict[str, Any] = {
        **info,
        "framework": framework,
        "epochs": epochs,
        "seed": seed,
        "n_train": len(train),
        "n_holdout_reference": len(ref),
        "rejected": rejected,
        "final_loss": info["loss_history"][-1] if info.get("loss_history") else None,
        "holdout_median_chi2_dof": float(np.median(reference.chi2_dof)),
        "calibration": {**cal.to_dict(), **mondrian.summary(0.01),
                        "copies": ["clean", *copy_names()]},
        "train_z_range": [float(train.z.min()), float(train.z.max())],
        "fit_seconds": time.perf_counter() - t0,
        "templates_sha256": template_hashes(),
        "spec_version": spec.version,
    }
    return TrainedModel(
        spec=spec, grid=grid, state_dict={k: v.clone() for k, v in model.state_dict().items()},
        density=density, metrics=metrics, reference_scores=reference.score.astype(np.float32),
        calibration=mondrian,
    )


def _score_terms(model: Any, density: DensityModel, batch: SpectraBatch, grid: WavelengthGrid
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """χ²/dof, −log p, the shape deviate (None without a shape term) and the trough depth
    (None when ``spec.trough_weight`` is 0) of each spectrum of ``batch``, each (N,)."""
    res = score_torch(model, batch)
    sz = (density.shape.zscore(batch.flux, batch.ivar, batch.z, grid.wave)
          if density.shape is not None else None)
    td = trough_torch(model, batch) if model.spec.trough_weight else None
    return res.chi2_dof, res.density_nll, sz, td


def _mondrian_calibration(model: Any, ref: SpectraBatch, clean_scores: np.ndarray,
                          grid: WavelengthGrid, seed: int) -> MondrianCalibration:
    """Held-out scores, clean and under every masking copy, filed by coverage stratum."""
    scores = [np.asarray(clean_scores, np.float64)]
    strata = [coverage_strata(ref.ivar, grid.wave)]
    for _, flux, ivar in masking_copies(ref.flux, ref.ivar, grid.wave, seed):
        copy = ref.with_arrays(flux=flux, ivar=ivar, mask=ref.mask | (ivar <= 0))
        scores.append(np.asarray(score_torch(model, copy).score, np.float64))
        strata.append(coverage_strata(ivar, grid.wave))
    return MondrianCalibration(np.concatenate(scores), np.concatenate(strata))
