"""Registry steps of a run: data lineage, registration, evaluation, drift and model details.

These build the inputs of :func:`qso_anomaly.registry.release.release_version` from the
trained model and the scored run; :mod:`qso_anomaly.pipeline` orders them. MLflow is imported
only by :func:`register_trained`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qso_anomaly import __version__
from qso_anomaly.errors import DataError

if TYPE_CHECKING:
    from qso_anomaly.data.grid import WavelengthGrid
    from qso_anomaly.registry.mlflow_registry import ModelRegistry, RegisteredVersion
    from qso_anomaly.score.run import ScoredRun
    from qso_anomaly.train.trained import TrainedModel

#: The benchmark a pipeline run trains and evaluates on (reference §7).
BENCHMARK = "qso-inject-v1"
#: Bootstrap replicates of the release evaluation's confidence intervals.
N_BOOT = 200
#: PCA components and redshift bins of the baselines (as in the detection benchmark).
BASELINE_COMPONENTS = 8
BASELINE_ZBINS = 12


def data_lineage(
    train_dir: str | Path,
    shards: Sequence[str | Path],
    trained: TrainedModel,
    *,
    generator_seed: int,
    n_train: int,
    train_anomaly_fraction: float,
    eval_generator_seed: int,
    eval_anomaly_fraction: float,
) -> dict[str, Any]:
    """Lineage of a model trained on a synthetic survey: generator, seeds, hashes, grid.

    The data version is the combined sha256 of every training shard, the survey manifest and
    every template file, so the same version means bit-identical training input (reference
    ``spectra-and-models.md`` §11: "log the sha256 of every template/data file and the
    generator seed").

    Args:
        train_dir: Directory of the training survey (holds ``manifest.json``).
        shards: Training shard paths.
        trained: The trained model (template hashes in its metrics, its grid).
        generator_seed: Seed of the training survey.
        n_train: Number of training spectra.
        train_anomaly_fraction: Share of injected anomalies in training (0–1).
        eval_generator_seed: Seed of the held-out evaluation survey.
        eval_anomaly_fraction: Share of injected anomalies in the evaluation survey (0–1).

    Returns:
        A JSON-ready dict with ``data_version`` (64 hex digits), ``data_sha256`` and
        ``templates_sha256`` (file → sha256), the grid (JSON), generator name and seeds.

    Raises:
        DataError: ``train_dir/manifest.json`` is missing or not JSON.
    """
    from qso_anomaly.registry.tracking import combined_hash, hash_files

    root = Path(train_dir)
    manifest = root / "manifest.json"
    try:
        generator = json.loads(manifest.read_text()).get("generator")
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{manifest}: cannot read the survey manifest: {exc}",
                        hint="write the training survey with qso_anomaly.data.synth."
                             "write_survey") from exc
    data = hash_files([*map(Path, shards), manifest], root=root)
    templates = dict(trained.metrics.get("templates_sha256") or {})
    return {
        "benchmark": BENCHMARK,
        "generator": generator,
        "generator_seed": generator_seed,
        "n_train_spectra": n_train,
        "train_anomaly_fraction": train_anomaly_fraction,
        "eval_generator_seed": eval_generator_seed,
        "eval_anomaly_fraction": eval_anomaly_fraction,
        "grid": json.dumps(trained.grid.to_dict()),
        "data_version": combined_hash({**data, **templates}),
        "data_sha256": data,
        "templates_sha256": templates,
    }


def register_trained(
    registry: ModelRegistry,
    trained: TrainedModel,
    model_dir: str | Path,
    lineage: dict[str, Any],
    *,
    model_name: str,
    epochs: int,
    seed: int,
    framework: str,
    use_ray: bool,
) -> RegisteredVersion:
    """Log the training run (params, metrics, data hashes, model) and register the model.

    Args:
        registry: The MLflow registry.
        trained: The trained model.
        model_dir: Its saved directory (:meth:`TrainedModel.save`).
        lineage: :func:`data_lineage` of its training data.
        model_name: Registered model name, e.g. ``qso-ae-torch``.
        epochs: Training epochs (logged parameter).
        seed: Training seed (logged parameter and generator seed).
        framework: ``"torch"`` or ``"jax"`` (parameter and version tag).
        use_ray: Whether Ray Train was used (parameter).

    Returns:
        The new version, alias ``candidate``.

    Raises:
        RegistryError: A file to log with the run does not exist.
        mlflow.exceptions.MlflowException: The tracking store refused the run or the
            registration (passed through unchanged).
    """
    numeric = {k: v for k, v in trained.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    params = {**{f"spec.{k}": v for k, v in trained.spec.to_dict().items()},
              "epochs": epochs, "seed": seed, "framework": framework,
              "use_ray": use_ray, "n_train": lineage["n_train_spectra"],
              "grid": lineage["grid"], "workload_version": __version__}
    data_hashes = {**lineage["data_sha256"],
                   **{f"templates/{k}": v for k, v in lineage["templates_sha256"].items()},
                   "data_version": lineage["data_version"]}
    return registry.register(
        model_dir=model_dir, model_name=model_name, params=params,
        metrics={"train": numeric}, data_hashes=data_hashes, generator_seed=seed,
        tags={"framework": framework, "workload_version": __version__,
              "spec_version": trained.spec.version},
        run_name=f"train-{framework}-seed{seed}")


def evaluate_scored(scored: ScoredRun, *, seed: int = 0) -> dict[str, Any] | None:
    """Detection metrics of a labelled scored run (per class, S/N bin and redshift bin).

    Args:
        scored: The scored run.
        seed: Bootstrap seed of the 95 % confidence intervals (:data:`N_BOOT` replicates).

    Returns:
        :func:`qso_anomaly.registry.evaluation.evaluate_detection` of the run, or ``None`` when
        the run has no labels or only one class (real data).
    """
    from qso_anomaly.registry.evaluation import evaluate_detection

    if scored.label is None or len(set(scored.label.tolist())) < 2:
        return None
    return evaluate_detection(scored.score, scored.label, snr=scored.snr, z=scored.z,
                              n_boot=N_BOOT, seed=seed)


def normal_score_drift(scored: ScoredRun) -> dict[str, Any] | None:
    """Drift of the held-out *normal* scores against the reference (what the drift gate checks).

    Args:
        scored: The scored run; with labels only ``"normal"`` spectra count.

    Returns:
        :meth:`ScoreDrift.to_dict` (PSI with its no-drift null band, KS statistic and p-value),
        or ``None`` without a reference or without normal spectra.
    """
    from qso_anomaly.metrics import score_drift

    if not scored.reference.size:
        return None
    cur = scored.score if scored.label is None else scored.score[scored.label == "normal"]
    if cur.size == 0:
        return None
    return score_drift(scored.reference, cur).to_dict()


def model_details(rv: RegisteredVersion, trained: TrainedModel, *, framework: str,
                  epochs: int) -> dict[str, Any]:
    """The model-card "Model details" section (Mitchell et al. 2019) of a registered version.

    Args:
        rv: The registered version (name, version, run).
        trained: The trained model (spec).
        framework: ``"torch"`` or ``"jax"``.
        epochs: Training epochs.

    Returns:
        A JSON-ready dict: name, version, run_id, task, architecture, channels, latent_dim,
        framework, software versions, licence, citation and the flag calibration (method,
        α, and per coverage stratum n / threshold, from ``metrics["calibration"]``).
    """
    import platform

    import torch

    return {
        "name": rv.name, "version": rv.version, "run_id": rv.run_id,
        "task": "unsupervised anomaly detection on quasar spectra",
        "architecture": f"spender-like 1-D conv autoencoder + GMM latent density "
                        f"({trained.spec.version})",
        "channels": str(list(trained.spec.channels)), "latent_dim": trained.spec.latent_dim,
        "framework": framework, "workload_version": __version__,
        "torch_version": torch.__version__, "python": platform.python_version(),
        "training_epochs": epochs, "licence": "MIT",
        "citation": "skyrig qso_anomaly; Melchior et al. 2023 (spender) design",
        "flag_calibration": _calibration_text(trained.metrics.get("calibration") or {}),
    }


def _calibration_text(cal: dict[str, Any]) -> str:
    """One line for the model card: method, α, pooled unmasked threshold, per-stratum n/t."""
    if not cal:
        return "n/a"
    head = (f"{cal.get('method', 'split-conformal')}, α = {cal.get('alpha')}, unmasked "
            f"threshold {cal.get('threshold', float('nan')):.2f} (n = {cal.get('n_calibration')})")
    rows = [f"{r['name']}: n = {r['n']}, t = {r['threshold']:.2f} ({r['level']})"
            for r in cal.get("strata", [])]
    return head + ("; per coverage stratum (n_min = " + str(cal.get("n_min")) + "): "
                   + "; ".join(rows) if rows else "")


def baseline_evaluation(
    train_shards: Sequence[str | Path],
    scored: ScoredRun,
    eval_shards: Sequence[str | Path],
    grid: WavelengthGrid,
    *,
    model_evaluation: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Detection figures of the two baselines on the run's held-out set, next to the model's.

    B0 is the ivar-weighted PCA reconstruction χ² and B1 an IsolationForest on the PCA
    coefficients, per redshift bin (reference ``spectra-and-models.md`` §7 "Baselines", the
    anchors to beat; :mod:`qso_anomaly.baselines`). Both are fitted on the training shards and
    score the same spectra as the model, so the numbers are comparable.

    Args:
        train_shards: The model's training shards (the baselines are fitted on them, after the
            data policy).
        scored: The scored held-out run (labels needed).
        eval_shards: The shards that were scored.
        grid: The model grid (wavelengths in Å).
        model_evaluation: The model's :func:`evaluate_scored` of the same run (computed here
            when not given), for the per-class comparison.
        seed: Seed of the IsolationForests and of the bootstrap.

    Returns:
        ``{"pca_chi2": {...}, "pca_iforest": {...}, "config": {...}, "comparison": {...}}``,
        each detector with ``overall`` (AUROC, average precision, 95 % bootstrap CIs) and
        ``per_class`` (:func:`qso_anomaly.registry.evaluation.evaluate_detection`);
        ``comparison`` gives per class the model's AP, the better baseline's AP and their
        difference. ``None`` when the run has no labels.

    Raises:
        DataError: Too few clean training spectra to fit the baselines, or a scored TARGETID
            is not in ``eval_shards``.
    """
    import numpy as np

    from qso_anomaly.baselines import PcaChi2, PcaIsolationForest
    from qso_anomaly.data.batch import SpectraBatch
    from qso_anomaly.data.io import read_shards
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.registry.evaluation import evaluate_detection
    from qso_anomaly.score.run import rows_of

    if scored.label is None or len(set(scored.label.tolist())) < 2:
        return None
    train, _ = clean_batch(SpectraBatch.concat(list(read_shards(train_shards, grid))))
    n_zbins = min(BASELINE_ZBINS, len(train) // (BASELINE_COMPONENTS + 2))
    if n_zbins < 1:
        raise DataError(f"{len(train)} clean training spectra are too few to fit the PCA "
                        f"baselines (need {BASELINE_COMPONENTS + 2})",
                        hint="train on more spectra (--n-train)")
    held = SpectraBatch.concat(list(read_shards(eval_shards, grid)))
    rows = rows_of(np.asarray(held.targetid), scored.targetid, where="the evaluation shards",
                   hint="pass the shards that were scored")
    held, _ = clean_batch(held.take(rows), min_good_fraction=0.0)
    label = np.asarray(held.label).astype(str)
    b0 = PcaChi2(BASELINE_COMPONENTS, n_zbins).fit(train)
    b1 = PcaIsolationForest(BASELINE_COMPONENTS, n_zbins, seed=seed).fit(train)
    out: dict[str, Any] = {
        "config": {"n_components": BASELINE_COMPONENTS, "n_zbins": n_zbins,
                   "n_train": len(train), "n_eval": len(held),
                   "fitted_on": "the model's training shards",
                   "source": "spectra-and-models.md §7 baselines B0 (PCA χ²) and B1 "
                             "(PCA + IsolationForest)"}}
    for name, model in (("pca_chi2", b0), ("pca_iforest", b1)):
        ev = evaluate_detection(model.score(held), label, snr=held.snr, z=held.z,
                                n_boot=N_BOOT, seed=seed)
        out[name] = {"overall": ev["overall"], "per_class": ev["per_class"]}
    model_ev = model_evaluation if model_evaluation is not None else evaluate_scored(
        scored, seed=seed)
    if model_ev is not None:
        comparison: dict[str, Any] = {}
        for cls, row_m in model_ev["per_class"].items():
            base = [out[b]["per_class"].get(cls, {}).get("average_precision")
                    for b in ("pca_chi2", "pca_iforest")]
            base_ok = [float(x) for x in base if x is not None]
            ap = row_m.get("average_precision")
            best = max(base_ok) if base_ok else None
            comparison[cls] = {"model_ap": ap, "best_baseline_ap": best,
                               "ap_minus_best_baseline": (None if ap is None or best is None
                                                          else float(ap) - best)}
        out["comparison"] = comparison
    return out
