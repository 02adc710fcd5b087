"""XAI faithfulness benchmark: explain a stratified sample of every injected class.

Unlike the pipeline (which explains the top-k flagged spectra), this draws up to ``per_class``
spectra of every class from a fresh synthetic survey so that localisation AUROC can be reported
per class, then runs the weight-randomisation check on the same spectra.

Times are in seconds (``time.perf_counter``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_xai_benchmark(trained: Any, *, n: int = 2000, seed: int = 123, per_class: int = 8,
                      ig_steps: int = 32, framework: str = "torch", occlusion_window: int = 16,
                      out: str | Path | None = None, anomaly_fraction: float = 0.5
                      ) -> dict[str, Any]:
    """Per-class localisation (IG, occlusion), deletion/insertion and randomisation numbers.

    Generates ``n`` synthetic spectra (seeded, on the model's grid), cleans and scores them
    with the torch model, and explains the highest-scored ``per_class`` spectra of every
    anomaly class with :func:`qso_anomaly.explain.runner.explain` (IG baseline: the
    reconstruction).

    Args:
        trained: A :class:`~qso_anomaly.train.trained.TrainedModel`.
        n: Spectra to generate.
        seed: Seed of the survey generator and of the explanation run.
        per_class: Spectra explained per anomaly class.
        ig_steps: Integrated-Gradients path steps (≥ 2).
        framework: ``torch`` (Captum) or ``jax`` (IG through ``jax.grad``).
        occlusion_window: Occlusion and deletion window width in pixels.
        out: Directory for ``xai_benchmark.json`` and the explanation files, or ``None``.
        anomaly_fraction: Share of generated spectra with an injected anomaly, in [0, 1].

    Returns:
        JSON-ready result: per-class rows (``ig_auroc``, ``occlusion_auroc``, relevance mass,
        pointing game, ``meets_0_85``), deletion/insertion AUC means with random references,
        the randomisation check, ``timing_s`` (seconds) and ``spectra_explained_per_second``.

    Raises:
        ValueError: For ``ig_steps < 2`` or ``occlusion_window < 1``.
    """
    from qso_anomaly.data.synth import generate
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.explain.runner import ExplainConfig, TorchScorer, explain
    from qso_anomaly.models.scoring import score_torch
    from qso_anomaly.models.torch_model import anomaly_score_torch

    t0 = time.perf_counter()
    batch, _ = clean_batch(generate(n, seed, trained.grid, anomaly_fraction=anomaly_fraction))
    model = trained.torch_model()
    scores = score_torch(model, batch).score
    factory = None
    if framework == "jax":
        from qso_anomaly.models.jax_model import anomaly_score_jax, params_from_torch

        spec, grid = trained.spec, trained.grid

        def factory(torch_model: Any) -> Any:
            params = params_from_torch(torch_model)
            return lambda f, iv, z: anomaly_score_jax(params, spec, grid, f, iv, z)

    cfg = ExplainConfig(top_k=0, per_class=per_class, ig_steps=ig_steps, framework=framework,
                        occlusion_window=occlusion_window, deletion_window=occlusion_window,
                        seed=seed)
    t_ex = time.perf_counter()
    ex = explain(TorchScorer(model, anomaly_score_torch), flux=batch.flux, ivar=batch.ivar,
                 mask=batch.mask, z=batch.z, scores=scores, wave=trained.grid.wave,
                 targetid=batch.targetid, labels=batch.label, truth_mask=batch.truth_mask,
                 snr=batch.snr, cfg=cfg, jax_score_factory=factory)
    elapsed_ex = time.perf_counter() - t_ex
    rep = ex.report
    per_class_rows = {}
    for cls, m in (rep.get("per_class") or {}).items():
        if cls == "normal":
            continue
        per_class_rows[cls] = {
            "n": m["n"],
            "localised": m["localised"],
            "mask_fraction_median": m["mask_fraction_median"],
            "ig_auroc": m["auroc_mean"],
            "occlusion_auroc": rep["per_class_occlusion"][cls]["auroc_mean"],
            "ig_relevance_mass": m["relevance_mass_mean"],
            "ig_pointing_game": m["pointing_game_mean"],
            "meets_0_85": (m["auroc_mean"] is not None and m["auroc_mean"] >= 0.85),
        }
    result = {
        "benchmark": "qso_xai",
        "framework": framework,
        "n_generated": n,
        "n_explained": rep["n_explained"],
        "ig_steps": ig_steps,
        "occlusion_window": occlusion_window,
        "per_class": per_class_rows,
        "localisation_auroc_localised_mean": rep.get("localisation_auroc_localised_mean"),
        "occlusion_localisation_auroc_localised_mean":
            rep.get("occlusion_localisation_auroc_localised_mean"),
        "deletion_auc_mean": rep.get("deletion_auc_mean"),
        "deletion_auc_random_mean": rep.get("deletion_auc_random_mean"),
        "insertion_auc_mean": rep.get("insertion_auc_mean"),
        "insertion_auc_random_mean": rep.get("insertion_auc_random_mean"),
        "randomisation": rep.get("randomisation"),
        "ig_completeness_error_median": rep.get("ig_completeness_error_median"),
        "timing_s": {**rep.get("timing_s", {}), "explain_wall": elapsed_ex,
                     "total": time.perf_counter() - t0},
        "spectra_explained_per_second": rep["n_explained"] / elapsed_ex if elapsed_ex else None,
    }
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / "xai_benchmark.json").write_text(json.dumps(result, indent=2, default=float))
        ex.save(o)
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The per-class table for docs/benchmarks.md.

    Args:
        result: A result of :func:`run_xai_benchmark`.

    Returns:
        A Markdown table, one row per class (``n/a`` for missing or non-finite numbers).
    """
    lines = [("| class | n | localised | mask share | IG AUROC | occlusion AUROC | "
             "IG relevance mass | pointing game |"),
             "|---|---|---|---|---|---|---|---|"]

    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
            f"{v:.3f}" if isinstance(v, float) else str(v))

    for cls, m in result["per_class"].items():
        lines.append(f"| {cls} | {m['n']} | {m['localised']} | {f(m['mask_fraction_median'])} | "
                     f"{f(m['ig_auroc'])} | {f(m['occlusion_auroc'])} | "
                     f"{f(m['ig_relevance_mass'])} | {f(m['ig_pointing_game'])} |")
    return "\n".join(lines)
