"""The explanation step of a run: explain the top-scored spectra of a scored run.

:func:`explain_scored` picks the top-k flagged spectra (plus a few per labelled class), reads
them back from the input shards, applies the data policy and runs
:func:`qso_anomaly.explain.runner.explain` (Integrated Gradients with the reconstruction as the
baseline, windowed occlusion, faithfulness checks; reference ``spectra-and-models.md`` §9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from qso_anomaly.errors import DataError

if TYPE_CHECKING:
    from jax import Array

    from qso_anomaly.explain.runner import ExplanationSet
    from qso_anomaly.models.torch_model import QsoAutoencoder
    from qso_anomaly.score.run import ScoredRun
    from qso_anomaly.train.trained import TrainedModel

#: ``f(flux (N, P), ivar (N, P), z (N,)) -> scores (N,)`` as JAX arrays.
JaxScoreFn = Callable[["Array", "Array", "Array"], "Array"]


def jax_score_factory(trained: TrainedModel) -> Callable[[QsoAutoencoder], JaxScoreFn]:
    """A factory of JAX score functions for the weights of a torch model.

    :func:`qso_anomaly.explain.runner.explain` calls it for the trained and for the
    weight-randomised model (Adebayo et al. 2018 sanity check), so both are scored by the
    JAX implementation of the same spec (parity-tested against PyTorch).

    Args:
        trained: The model whose spec and grid the JAX score function uses.

    Returns:
        ``factory(torch_model) -> f`` with ``f(flux, ivar, z) -> score``: flux ``(N, P)`` in
        1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar ``(N, P)`` in flux⁻², z ``(N,)``; score ``(N,)``.
    """
    from qso_anomaly.models.jax_model import anomaly_score_jax, params_from_torch

    spec, grid = trained.spec, trained.grid

    def factory(torch_model: QsoAutoencoder) -> JaxScoreFn:
        params = params_from_torch(torch_model)
        return lambda flux, ivar, z: anomaly_score_jax(params, spec, grid, flux, ivar, z)

    return factory


def explain_scored(
    trained: TrainedModel,
    shards: Sequence[str | Path],
    scored: ScoredRun,
    out_dir: str | Path,
    *,
    top_k: int = 6,
    per_class: int = 3,
    ig_steps: int = 16,
    occlusion_window: int = 32,
    deletion_steps: int = 8,
    seed: int = 42,
    framework: Literal["torch", "jax"] = "torch",
) -> ExplanationSet:
    """Explain the top-k scored spectra (plus ``per_class`` per labelled class) of a run.

    Args:
        trained: The model that scored the run.
        shards: The Parquet shards that were scored (model grid; flux in
            1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in flux⁻²).
        scored: The scored run (:func:`qso_anomaly.score.run.score_run` or
            :func:`~qso_anomaly.score.run.load_scored`).
        out_dir: Where ``explanations.npz`` and ``xai_report.json`` are written.
        top_k: Highest-scored spectra to explain.
        per_class: Also explain this many top-scored spectra of every labelled anomaly class.
        ig_steps: Integrated-Gradients quadrature points.
        occlusion_window: Occlusion window in pixels; deletion/insertion curves use half.
        deletion_steps: Points on the deletion/insertion curves.
        seed: Seed of the random orders and of the weight randomisation.
        framework: ``"torch"`` (Captum) or ``"jax"`` (``jax.grad``) attributions.

    Returns:
        The explanations with their faithfulness report (also saved under ``out_dir``).

    Raises:
        DataError: None of the selected spectra is in the shards or passes the data policy.
    """
    from qso_anomaly.data.batch import SpectraBatch
    from qso_anomaly.data.io import read_shards
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.explain.runner import ExplainConfig, TorchScorer, explain, select_indices
    from qso_anomaly.models.torch_model import anomaly_score_torch

    pick = select_indices(scored.score, scored.label,
                          ExplainConfig(top_k=top_k, per_class=per_class))
    wanted = {int(t) for t in scored.targetid[pick]}
    parts = []
    for batch in read_shards(shards, trained.grid):
        sel = np.array([int(t) in wanted for t in batch.targetid])
        if sel.any():
            parts.append(batch.take(sel))
    if not parts:
        raise DataError(f"none of the {len(wanted)} spectra to explain is in the input shards",
                        hint="pass the data the scores were computed from")
    batch, _ = clean_batch(SpectraBatch.concat(parts))
    if not len(batch):
        raise DataError("no spectrum selected for explanation passes the data policy")
    score_of = dict(zip(scored.targetid.tolist(), scored.score.tolist(), strict=True))
    scores = np.array([score_of[int(t)] for t in batch.targetid])
    ecfg = ExplainConfig(top_k=len(batch), ig_steps=ig_steps, occlusion_window=occlusion_window,
                         deletion_window=occlusion_window // 2, deletion_steps=deletion_steps,
                         seed=seed, framework=framework)
    factory = jax_score_factory(trained) if framework == "jax" else None
    ex = explain(TorchScorer(trained.torch_model(), anomaly_score_torch), flux=batch.flux,
                 ivar=batch.ivar, mask=batch.mask, z=batch.z, scores=scores,
                 wave=trained.grid.wave, targetid=batch.targetid, labels=batch.label,
                 truth_mask=batch.truth_mask, snr=batch.snr, cfg=ecfg,
                 jax_score_factory=factory)
    ex.save(out_dir)
    return ex
