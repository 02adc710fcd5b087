"""Explain the top-k flagged spectra of a scored batch and measure how faithful that is.

For each selected spectrum: Integrated Gradients of the anomaly score with the model's
reconstruction as the baseline (Captum for PyTorch, ``jax.grad`` + ``vmap`` for JAX) and
windowed occlusion. Faithfulness: localisation against injection masks (synthetic data),
windowed deletion/insertion curves, and the weight-randomisation sanity check. The result is
an :class:`ExplanationSet` (arrays in ``explanations.npz``) plus ``xai_report.json``.

Sources: Integrated Gradients (Sundararajan et al. 2017), occlusion (Zeiler & Fergus 2014,
Captum's convention), deletion/insertion (Petsiuk et al. 2018), localisation metrics (Arras et
al. 2022; pointing game, Zhang et al. 2018), the randomisation check (Adebayo et al. 2018);
details in the modules that implement them. Shapes: N scored spectra, M explained ones, P
pixels; flux in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in flux⁻², wavelengths in Å, times in seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.explain.faithfulness import (
    localisation_batch,
    perturbation_curves,
    randomisation_check,
    randomise_torch_module,
    summarise_localisation,
)
from qso_anomaly.explain.integrated_gradients import (
    Attribution,
    integrated_gradients_jax,
    integrated_gradients_torch,
    valid_pixels,
)
from qso_anomaly.explain.occlusion import occlusion
from qso_anomaly.explain.windows import artefact_mass_fraction, line_window_mass


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of one :func:`explain` run.

    Attributes:
        top_k: Highest-scored spectra to explain.
        ig_steps: Integrated-Gradients path steps (≥ 2).
        ig_method: Quadrature, ``gausslegendre`` or ``riemann_trapezoid``.
        internal_batch_size: Spectra per model call inside IG, occlusion and the curves.
        occlusion_window: Occlusion window width in pixels (non-overlapping windows).
        deletion_window: Deletion/insertion window width in pixels.
        deletion_steps: Deletion/insertion curve steps.
        randomisation: Run the weight-randomisation sanity check.
        randomisation_max_similarity: Its similarity threshold (mean |Spearman|).
        seed: Seed of the random window order and (+1) of the randomised weights.
        framework: ``torch`` (Captum) or ``jax`` (needs a JAX score function).
        per_class: With labels, also the highest-scored this many of every anomaly class.
        localisation_abs: Localisation ranks |attribution| (signed numbers are reported too).
        localisation_smooth_px: Boxcar width in pixels for localisation.
    """

    top_k: int = 20
    ig_steps: int = 32
    ig_method: str = "gausslegendre"
    internal_batch_size: int = 256
    occlusion_window: int = 16
    deletion_window: int = 16
    deletion_steps: int = 16
    randomisation: bool = True
    randomisation_max_similarity: float = 0.5
    seed: int = 0
    framework: str = "torch"  # "torch" (Captum) or "jax"
    # >0 with labels: also explain the highest-scored few of every anomaly class (evidence for
    # the per-class localisation gate even when the top-k holds no localised class).
    per_class: int = 0
    # Localisation scores |attribution| boxcar-smoothed over this many pixels (signed, unsmoothed
    # numbers are reported too).
    localisation_abs: bool = True
    localisation_smooth_px: int = 5


@dataclass
class ExplanationSet:
    """Explanations of M spectra and the XAI report (``explanations.npz`` + ``xai_report.json``).

    Attributes:
        index: Row of each explained spectrum in the scored batch (M,).
        targetid: TARGETID of each (M,) (the index when none was given).
        score: Anomaly score of each (M,).
        label: Class label of each (M,) (``unknown`` without labels).
        z: Redshift of each (M,).
        snr: Drawn S/N per pixel (M,) for synthetic data, or None.
        flux: Flux (M, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        recon: Reconstruction, the attribution baseline (M, P), same unit.
        ivar: Inverse variance (M, P) in flux⁻².
        truth_mask: Injection masks (M, P) for synthetic data, or None.
        ig: Integrated-Gradients attributions (M, P) in score units; 0 on invalid pixels.
        occlusion: Occlusion attributions (M, P) in score units; 0 on invalid pixels.
        report: JSON-ready report (method, timings in seconds, curves, localisation,
            randomisation); non-finite numbers are stored as None.
    """

    index: NDArray[np.int64]
    targetid: NDArray[np.int64]
    score: NDArray[np.float64]
    label: NDArray[Any]
    z: NDArray[np.float32]
    snr: NDArray[np.float32] | None
    flux: NDArray[np.float32]
    recon: NDArray[np.float32]
    ivar: NDArray[np.float32]
    truth_mask: NDArray[np.bool_] | None
    ig: NDArray[np.float32]
    occlusion: NDArray[np.float32]
    report: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> dict[str, str]:
        """Write ``explanations.npz`` (compressed arrays) and ``xai_report.json``.

        Args:
            out_dir: Directory (created if missing); existing files are overwritten.

        Returns:
            ``{"arrays": npz path, "report": json path}``.

        Raises:
            OSError: When the directory or files cannot be written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in asdict(self).items() if k != "report" and v is not None}
        arrays["label"] = np.asarray(self.label).astype(str)
        npz = out / "explanations.npz"
        np.savez_compressed(npz, **arrays)
        rep = out / "xai_report.json"
        rep.write_text(json.dumps(_json_safe(self.report), indent=2))
        return {"arrays": str(npz), "report": str(rep)}

    @classmethod
    def load(cls, out_dir: str | Path) -> ExplanationSet:
        """Read a set written by :meth:`save` (no pickles are loaded).

        Args:
            out_dir: Directory holding ``explanations.npz`` and ``xai_report.json``.

        Returns:
            The set (``snr`` and ``truth_mask`` None when they were not saved).

        Raises:
            FileNotFoundError: When either file is missing.
            TypeError: When the archive lacks one of the required arrays.
        """
        out = Path(out_dir)
        with np.load(out / "explanations.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        report = json.loads((out / "xai_report.json").read_text())
        arrays.setdefault("snr", None)
        arrays.setdefault("truth_mask", None)
        return cls(report=report, **arrays)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def select_indices(scores: NDArray[Any], labels: NDArray[Any] | None, cfg: ExplainConfig
                   ) -> NDArray[np.int64]:
    """Top-k by score, plus (``per_class``) the highest-scored few of every anomaly class.

    Args:
        scores: Anomaly scores (N,).
        labels: Class labels (N,) (``normal`` is not an anomaly class), or ``None``.
        cfg: ``top_k`` and ``per_class``.

    Returns:
        Row indices (M,), int64, without duplicates: the top-k by decreasing score, then the
        per-class picks.
    """
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    picked = [int(i) for i in order[: cfg.top_k]]
    if cfg.per_class > 0 and labels is not None:
        lab = np.asarray(labels).astype(str)
        for cls in sorted(set(lab.tolist()) - {"normal"}):
            picked.extend(int(i) for i in order[lab[order] == cls][: cfg.per_class])
    return np.asarray(list(dict.fromkeys(picked)), dtype=np.int64)


@dataclass
class TorchScorer:
    """Adapter for a torch model: ``model(flux, ivar, z) -> recon`` and a score function.

    Attributes:
        model: A torch module whose call reconstructs spectra (e.g. ``QsoAutoencoder``).
        score_fn: ``(model, flux, ivar, z) -> (N,)`` differentiable score (e.g.
            :func:`qso_anomaly.models.torch_model.anomaly_score_torch`).
    """

    model: Any
    score_fn: Callable[[Any, Any, Any, Any], Any]  # (model, flux, ivar, z) -> (N,) tensor

    def reconstruct(self, flux: NDArray[Any], ivar: NDArray[Any], z: NDArray[Any],
                    batch_size: int = 512) -> NDArray[np.float32]:
        """Reconstruct spectra without gradients (the model is put in eval mode).

        Args:
            flux: Flux (N, P) float32 in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
            ivar: Inverse variance (N, P) float32 in flux⁻².
            z: Redshifts (N,) float32.
            batch_size: Spectra per forward pass.

        Returns:
            Reconstruction (N, P) float32, same unit as ``flux``.
        """
        import torch

        out = []
        self.model.eval()
        with torch.no_grad():
            for s in range(0, flux.shape[0], batch_size):
                sl = slice(s, s + batch_size)
                out.append(self.model(torch.as_tensor(flux[sl]), torch.as_tensor(ivar[sl]),
                                      torch.as_tensor(z[sl])).numpy())
        return np.concatenate(out).astype(np.float32)

    def differentiable(self) -> Callable[..., Any]:
        """The score as a differentiable function of tensors (for Captum).

        Returns:
            ``f(flux, ivar, z) -> (N,)`` on torch tensors.
        """
        model, fn = self.model, self.score_fn
        return lambda flux, ivar, z: fn(model, flux, ivar, z)

    def numpy_score(self) -> Callable[..., NDArray[np.float64]]:
        """The score as a NumPy function without gradients (for occlusion and the curves).

        Returns:
            ``f(flux, ivar, z) -> (N,) float64`` on NumPy arrays (float32 inputs).
        """
        import torch

        model, fn = self.model, self.score_fn

        def score(flux: NDArray[Any], ivar: NDArray[Any], z: NDArray[Any]) -> NDArray[np.float64]:
            with torch.no_grad():
                out = fn(model, torch.as_tensor(flux), torch.as_tensor(ivar),
                         torch.as_tensor(z))
            return np.asarray(out.numpy(), dtype=np.float64)

        return score

    def randomised(self, seed: int) -> TorchScorer:
        """A scorer over a weight-randomised copy of the model (Adebayo et al. 2018).

        Args:
            seed: Seed of :func:`~qso_anomaly.explain.faithfulness.randomise_torch_module`.

        Returns:
            A new scorer with the same score function.
        """
        return TorchScorer(randomise_torch_module(self.model, seed), self.score_fn)


def _ig(scorer: TorchScorer, flux: NDArray[np.float32], recon: NDArray[np.float32],
        ivar: NDArray[np.float32], z: NDArray[np.float32], valid: NDArray[np.bool_],
        cfg: ExplainConfig, jax_score: Callable[..., Any] | None) -> Attribution:
    if cfg.framework == "jax":
        if jax_score is None:
            raise ValueError("framework='jax' needs a jax_score function")
        return integrated_gradients_jax(jax_score, flux, recon, valid=valid, extras=(ivar, z),
                                        n_steps=cfg.ig_steps, method=cfg.ig_method,
                                        steps_per_chunk=8)
    return integrated_gradients_torch(scorer.differentiable(), flux, recon, valid=valid,
                                      extras=(ivar, z), n_steps=cfg.ig_steps,
                                      method=cfg.ig_method,
                                      internal_batch_size=cfg.internal_batch_size)


def explain(
    scorer: TorchScorer,
    *,
    flux: NDArray[Any],
    ivar: NDArray[Any],
    mask: NDArray[np.bool_] | None,
    z: NDArray[Any],
    scores: NDArray[Any],
    wave: NDArray[Any],
    targetid: NDArray[Any] | None = None,
    labels: NDArray[Any] | None = None,
    truth_mask: NDArray[np.bool_] | None = None,
    snr: NDArray[Any] | None = None,
    cfg: ExplainConfig | None = None,
    jax_score_factory: Callable[[Any], Callable[..., Any]] | None = None,
) -> ExplanationSet:
    """Explain the selected spectra of one scored batch and build the XAI report.

    With ``cfg.framework == "jax"``, ``jax_score_factory(torch_model)`` must return the JAX
    score function ``f(flux, ivar, z) -> (N,)`` of the same weights (e.g. through
    ``params_from_torch``); it is called for the trained and for the randomised model.

    Args:
        scorer: The trained model and its score function.
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ of the scored batch.
        ivar: Inverse variance (N, P) in flux⁻².
        mask: Bad-pixel mask (N, P), True = bad, or ``None``.
        z: Redshifts (N,).
        scores: Anomaly scores (N,) that select the spectra.
        wave: Observed-frame wavelengths (P,) in Å (line windows, artefact regions).
        targetid: TARGETIDs (N,), or ``None``.
        labels: Class labels (N,), or ``None``.
        truth_mask: Injection masks (N, P) for localisation, or ``None``.
        snr: S/N per pixel (N,), or ``None``.
        cfg: Settings (default :class:`ExplainConfig`).
        jax_score_factory: ``torch_model -> f(flux, ivar, z)`` JAX score builder (needed for
            ``framework="jax"``).

    Returns:
        The M selected spectra, their IG and occlusion attributions (M, P) and the report.

    Raises:
        ValueError: When ``cfg.framework == "jax"`` without ``jax_score_factory``, for an
            unknown IG quadrature or fewer than 2 steps, or a window below 1 pixel.
    """
    cfg = cfg or ExplainConfig()
    if cfg.framework == "jax" and jax_score_factory is None:
        raise ValueError("framework='jax' needs jax_score_factory")
    jax_score = jax_score_factory(scorer.model) if jax_score_factory is not None else None
    t0 = time.perf_counter()
    idx = select_indices(scores, labels, cfg)
    x = np.asarray(flux, dtype=np.float32)[idx]
    iv = np.asarray(ivar, dtype=np.float32)[idx]
    zz = np.asarray(z, dtype=np.float32)[idx]
    m = None if mask is None else np.asarray(mask, dtype=bool)[idx]
    valid = valid_pixels(m, iv, x.shape)
    lab = (np.asarray(labels).astype(str)[idx] if labels is not None
           else np.full(len(idx), "unknown"))
    truth = None if truth_mask is None else np.asarray(truth_mask, dtype=bool)[idx]
    recon = scorer.reconstruct(x, iv, zz)

    t_ig = time.perf_counter()
    ig = _ig(scorer, x, recon, iv, zz, valid, cfg, jax_score)
    t_occ = time.perf_counter()
    np_score = scorer.numpy_score()
    occ = occlusion(np_score, x, recon, window=cfg.occlusion_window, valid=valid,
                    extras=(iv, zz), batch_size=cfg.internal_batch_size)
    t_del = time.perf_counter()
    curves = perturbation_curves(np_score, x, recon, ig.values, valid=valid, extras=(iv, zz),
                                 window=cfg.deletion_window, n_steps=cfg.deletion_steps,
                                 seed=cfg.seed, batch_size=cfg.internal_batch_size)
    t_done = time.perf_counter()

    report: dict[str, Any] = {
        "method": f"{ig.method} (baseline: reconstruction, {cfg.ig_steps} steps) + "
                  f"occlusion ({cfg.occlusion_window} px windows)",
        "n_explained": len(idx),
        "config": asdict(cfg),
        "ig_completeness_error_median": float(np.median(np.abs(ig.convergence_delta))),
        "timing_s": {"ig": t_occ - t_ig, "occlusion": t_del - t_occ, "deletion": t_done - t_del},
    }
    report.update(curves.summary())
    use = curves.usable
    report["curves"] = {
        "fractions": curves.fractions.tolist(),
        "deletion_mean": np.nanmean(curves.deletion[use], axis=0).tolist() if use.any() else [],
        "deletion_random_mean": (np.nanmean(curves.deletion_random[use], axis=0).tolist()
                                 if use.any() else []),
    }
    report["deletion_gain"] = (report["deletion_auc_random_mean"] - report["deletion_auc_mean"])
    report["insertion_gain"] = (report["insertion_auc_mean"]
                                - report["insertion_auc_random_mean"])
    report["artefact_mass_fraction_mean"] = float(
        artefact_mass_fraction(ig.values, wave).mean()) if len(idx) else float("nan")
    report["line_window_mass"] = [line_window_mass(ig.values[i], wave, float(zz[i]))
                                  for i in range(len(idx))]
    if truth is not None:
        loc_kw = {"use_abs": cfg.localisation_abs, "smooth_px": cfg.localisation_smooth_px}
        rows_ig = localisation_batch(ig.values, truth, valid, **loc_kw)  # type: ignore[arg-type]
        rows_occ = localisation_batch(occ.values, truth, valid,
                                      **loc_kw)  # type: ignore[arg-type]
        rows_signed = localisation_batch(ig.values, truth, valid)
        per_class = summarise_localisation(rows_ig, lab)
        per_class_occ = summarise_localisation(rows_occ, lab)
        per_class_signed = summarise_localisation(rows_signed, lab)
        report["localisation_definition"] = (
            f"pixel AUROC of {'|attribution|' if cfg.localisation_abs else 'attribution'} "
            f"smoothed over {cfg.localisation_smooth_px} px vs the injection mask; classes "
            "with median mask share < 0.5 count as localised")
        report["per_class"] = per_class
        report["per_class_occlusion"] = per_class_occ
        report["per_spectrum"] = [
            {"targetid": int(t), "label": str(lb), "score": float(s), **asdict(r)}
            for t, lb, s, r in zip(
                (np.asarray(targetid)[idx] if targetid is not None else idx), lab,
                np.asarray(scores)[idx], rows_ig, strict=True)]
        localised = [v["auroc_mean"] for v in per_class.values()
                     if v["localised"] and v["auroc_mean"] is not None]
        report["localisation_auroc_localised_mean"] = (float(np.mean(localised)) if localised
                                                       else None)
        occ_loc = [v["auroc_mean"] for v in per_class_occ.values()
                   if v["localised"] and v["auroc_mean"] is not None]
        report["occlusion_localisation_auroc_localised_mean"] = (float(np.mean(occ_loc))
                                                                 if occ_loc else None)
        signed_loc = [v["auroc_mean"] for v in per_class_signed.values()
                      if v["localised"] and v["auroc_mean"] is not None]
        report["signed_pixel_localisation_auroc_localised_mean"] = (
            float(np.mean(signed_loc)) if signed_loc else None)
    if cfg.randomisation and len(idx):
        rand = scorer.randomised(cfg.seed + 1)
        recon_r = rand.reconstruct(x, iv, zz)
        jax_rand = jax_score_factory(rand.model) if jax_score_factory is not None else None
        ig_r = _ig(rand, x, recon_r, iv, zz, valid, cfg, jax_rand)
        check = randomisation_check(ig.values, ig_r.values, valid=valid, truth=truth,
                                    max_similarity=cfg.randomisation_max_similarity,
                                    use_abs=cfg.localisation_abs,
                                    smooth_px=cfg.localisation_smooth_px)
        report["randomisation"] = check.to_dict()
    report["timing_s"]["total"] = time.perf_counter() - t0
    return ExplanationSet(
        index=idx, targetid=(np.asarray(targetid)[idx] if targetid is not None else idx),
        score=np.asarray(scores, dtype=np.float64)[idx], label=lab, z=zz,
        snr=None if snr is None else np.asarray(snr, dtype=np.float32)[idx],
        flux=x, recon=recon, ivar=iv, truth_mask=truth, ig=ig.values, occlusion=occ.values,
        report=_json_safe(report))
