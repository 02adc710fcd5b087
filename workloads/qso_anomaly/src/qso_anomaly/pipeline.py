"""Ray-job entrypoint: train → register → score → explain → release → report.

``python -m qso_anomaly.pipeline --out DIR [--model-alias champion] [--tracking-uri URI]
[--n-spectra N] [--config job.json]`` runs the whole chain and prints, as its last stdout line,
one JSON object with the paths of the report, metrics file and model card and the registered
model's name/version/alias. skyrig submits it to a Ray head through the Ray Jobs API with the
workload version (``--expect-version``) and the model alias pinned by the stack.

With ``--model-alias A``: if alias A exists in the registry, that version is downloaded and used
for scoring (no training, no new release); otherwise a model is trained, registered as
``candidate`` and promoted to ``champion`` only when the release gates pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qso_anomaly import __version__
from qso_anomaly.errors import QsoAnomalyError


class PipelineError(QsoAnomalyError):
    """The pipeline configuration or one of its steps is invalid."""


@dataclass
class PipelineConfig:
    out: str = "qso-anomaly-run"
    n_spectra: int = 600  # held-out survey size; training uses n_train (default 2x)
    n_train: int | None = None
    seed: int = 42
    epochs: int = 3
    model_name: str = "qso-ae-torch"
    model_alias: str | None = None
    tracking_uri: str | None = None  # default sqlite:///<out>/mlflow.db
    experiment: str = "qso-inject-v1"
    thresholds: str | None = None
    risk_tier: str | None = None
    framework: str = "torch"
    use_ray: bool = False
    ray_address: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    full_model: bool = False
    batch_size: int | None = None  # None: QSO_SCORE_BATCH_SIZE, else 256 (ScoringConfig)
    shard_size: int = 500
    train_anomaly_fraction: float = 0.02
    anomaly_fraction: float = 0.1
    top_k: int = 6
    xai_per_class: int = 3  # plus this many top-scored spectra of every labelled anomaly class
    ig_steps: int = 16
    occlusion_window: int = 32
    deletion_steps: int = 8
    metrics_port: int | None = None
    push_gateway: str | None = None
    expect_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: str | Path) -> PipelineConfig:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PipelineError(f"cannot read job config {path}: {exc}",
                                hint="pass a JSON object of pipeline options") from exc
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise PipelineError(f"{path}: unknown options {unknown}",
                                hint=f"known options: {sorted(names)}")
        return cls(**raw)


# --------------------------------------------------------------------------- argument parsing


def build_parser(prog: str = "python -m qso_anomaly.pipeline") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="JSON file of options (command-line flags override it)")
    p.add_argument("--out", help="output directory (everything is written under it)")
    p.add_argument("--n-spectra", type=int, help="held-out survey size (tiny: 600)")
    p.add_argument("--n-train", type=int, help="training spectra (default 2 x --n-spectra)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--model-name")
    p.add_argument("--model-alias", help="score with this registered alias if it exists "
                                         "(e.g. champion) instead of training")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<out>/mlflow.db)")
    p.add_argument("--experiment")
    p.add_argument("--thresholds", help="release gates YAML (default release/thresholds.yaml)")
    p.add_argument("--risk-tier", help="gate tier in the thresholds file (default: its default)")
    p.add_argument("--framework", choices=["torch", "jax"])
    p.add_argument("--use-ray", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--ray-address", help="Ray address for ray.init (default: local/auto)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--full-model", action=argparse.BooleanOptionalAction, default=None,
                   help="GPU-size model spec instead of the CI spec")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--top-k", type=int, help="flagged spectra to explain")
    p.add_argument("--xai-per-class", type=int,
                   help="also explain this many top-scored spectra per labelled class")
    p.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1 while scoring")
    p.add_argument("--push-gateway", help="Pushgateway host:port for the final snapshot")
    p.add_argument("--expect-version", help="fail unless the installed workload has this version")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> PipelineConfig:
    args = build_parser().parse_args(argv)
    cfg = PipelineConfig.from_json(args.config) if args.config else PipelineConfig()
    for f in dataclasses.fields(PipelineConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, value)
    return cfg


# --------------------------------------------------------------------------- the run


def _log(msg: str) -> None:
    print(f"[qso-anomaly {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class ScoredRun:
    """What the scoring step produced, joined with the survey's z / S/N / labels."""

    scores_dir: Path
    targetid: np.ndarray
    score: np.ndarray
    label: np.ndarray | None
    z: np.ndarray
    snr: np.ndarray | None
    reference: np.ndarray
    flag_threshold: float
    metrics: Any  # metrics.ScoringMetrics, None when read back from files
    drift: dict[str, Any] | None
    spectra_per_second: float
    rejected: dict[str, int]

    @property
    def n(self) -> int:
        return int(self.score.size)

    @property
    def n_flagged(self) -> int:
        return int(np.sum(self.score > self.flag_threshold))


def _grid_and_spec(cfg: PipelineConfig) -> tuple[Any, Any]:
    from qso_anomaly.models.spec import ModelSpec

    spec = ModelSpec.full() if cfg.full_model else ModelSpec.ci()
    return spec, spec.input_grid()


def _survey(cfg: PipelineConfig, directory: Path, n: int, seed: int, fraction: float,
            grid: Any) -> list[Path]:
    from qso_anomaly.data.synth import write_survey

    return write_survey(directory, n, seed, shard_size=cfg.shard_size, grid=grid,
                        anomaly_fraction=fraction)


def _lineage(cfg: PipelineConfig, train_dir: Path, shards: list[Path], trained: Any
             ) -> dict[str, Any]:
    from qso_anomaly.registry.tracking import combined_hash, hash_files

    data = hash_files([*shards, train_dir / "manifest.json"], root=train_dir)
    templates = dict(trained.metrics.get("templates_sha256") or {})
    return {
        "benchmark": "qso-inject-v1",
        "generator": json.loads((train_dir / "manifest.json").read_text()).get("generator"),
        "generator_seed": cfg.seed,
        "n_train_spectra": cfg.n_train or 2 * cfg.n_spectra,
        "train_anomaly_fraction": cfg.train_anomaly_fraction,
        "eval_generator_seed": cfg.seed + 1,
        "eval_anomaly_fraction": cfg.anomaly_fraction,
        "grid": json.dumps(trained.grid.to_dict()),
        "data_version": combined_hash({**data, **templates}),
        "data_sha256": data,
        "templates_sha256": templates,
    }


def _train(cfg: PipelineConfig, out: Path) -> tuple[Any, dict[str, Any]]:
    from qso_anomaly.train import fit

    spec, grid = _grid_and_spec(cfg)
    n_train = cfg.n_train or 2 * cfg.n_spectra
    train_dir = out / "data" / "train"
    shards = _survey(cfg, train_dir, n_train, cfg.seed, cfg.train_anomaly_fraction, grid)
    _log(f"training on {n_train} spectra ({cfg.epochs} epochs, framework={cfg.framework}, "
         f"ray={cfg.use_ray})")
    if cfg.use_ray:
        _init_ray(cfg)
    trained = fit(spec, grid, shards, use_ray=cfg.use_ray, num_workers=cfg.num_workers,
                  use_gpu=cfg.use_gpu, epochs=cfg.epochs, seed=cfg.seed,
                  framework=cfg.framework)  # type: ignore[arg-type]
    trained.save(out / "model" / "trained")
    return trained, _lineage(cfg, train_dir, shards, trained)


def _init_ray(cfg: PipelineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)  # inside a Ray job
    else:
        ray.init(num_cpus=max(2, cfg.num_workers), include_dashboard=False,
                 log_to_driver=False, object_store_memory=256 * 1024**2)


def _register(registry: Any, cfg: PipelineConfig, trained: Any, model_dir: Path,
              lineage: dict[str, Any]) -> Any:
    numeric = {k: v for k, v in trained.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    params = {**{f"spec.{k}": v for k, v in trained.spec.to_dict().items()},
              "epochs": cfg.epochs, "seed": cfg.seed, "framework": cfg.framework,
              "use_ray": cfg.use_ray, "n_train": lineage["n_train_spectra"],
              "grid": lineage["grid"], "workload_version": __version__}
    data_hashes = {**lineage["data_sha256"],
                   **{f"templates/{k}": v for k, v in lineage["templates_sha256"].items()},
                   "data_version": lineage["data_version"]}
    return registry.register(
        model_dir=model_dir, model_name=cfg.model_name, params=params,
        metrics={"train": numeric}, data_hashes=data_hashes, generator_seed=cfg.seed,
        tags={"framework": cfg.framework, "workload_version": __version__,
              "spec_version": trained.spec.version},
        run_name=f"train-{cfg.framework}-seed{cfg.seed}")


def _score(cfg: PipelineConfig, trained: Any, model_name: str, version: str,
           shards: list[Path], run_dir: Path, flag_quantile: float) -> ScoredRun:
    from qso_anomaly.metrics import BatchObserver, ScoringMetrics
    from qso_anomaly.score import score_shards
    from qso_anomaly.train.calibrate import conformal_threshold

    reference = np.asarray(trained.reference_scores, dtype=np.float64)
    # conformal: flagged ⇔ p-value against the held-out calibration set ≤ 1 − flag_quantile
    threshold = conformal_threshold(reference, 1.0 - flag_quantile)
    tags_sha = os.environ.get("QSO_ANOMALY_GIT_SHA", "unknown")
    metrics = ScoringMetrics(model=model_name, version=version, framework=cfg.framework,
                             git_sha=tags_sha, data_hash=_short_hash(shards),
                             reference_scores=reference if reference.size else None,
                             flag_threshold=threshold)
    server = None
    if cfg.metrics_port is not None:
        server, port = metrics.serve(cfg.metrics_port)
        _log(f"metrics on http://127.0.0.1:{port}/metrics")
    observer = BatchObserver(metrics)
    scores_dir = run_dir / "scores"
    try:
        if cfg.use_ray:
            _init_ray(cfg)
        observer.start()
        summary = score_shards(trained, shards, scores_dir, use_ray=cfg.use_ray,
                               batch_size=cfg.batch_size,
                               framework=cfg.framework,  # type: ignore[arg-type]
                               on_batch=observer)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    observer.finish(summary.n_scored, summary.elapsed, summary.n_rejected_by_reason)
    scored = load_scored(summary.outputs, shards, reference, threshold)
    drift = metrics.update_drift()
    scored.scores_dir = scores_dir
    scored.metrics = metrics
    scored.drift = None if drift is None else drift.to_dict()
    scored.spectra_per_second = summary.spectra_per_second
    scored.rejected = dict(summary.n_rejected_by_reason)
    return scored


def load_scored(outputs: Sequence[Path], shards: Sequence[Path], reference: np.ndarray,
                threshold: float) -> ScoredRun:
    """Read scoring outputs and join z / S/N from the input shards by targetid."""
    import pyarrow.parquet as pq

    from qso_anomaly.metrics import score_drift

    if not outputs:
        raise PipelineError("no scoring outputs to read", hint="run the score step first")
    table = pq.read_table([str(p) for p in sorted(outputs)])
    targetid = table.column("targetid").to_numpy()
    score = table.column("score").to_numpy().astype(np.float64)
    label = (np.asarray(table.column("label").to_pylist(), dtype=object).astype(str)
             if "label" in table.column_names and table.column("label").null_count == 0 else None)
    names = pq.read_schema(shards[0]).names
    side = pq.read_table([str(p) for p in shards],
                         columns=[c for c in ("targetid", "z", "snr") if c in names])
    order = {int(t): i for i, t in enumerate(side.column("targetid").to_numpy())}
    rows = np.array([order[int(t)] for t in targetid], dtype=np.int64)
    z = side.column("z").to_numpy()[rows]
    snr = side.column("snr").to_numpy()[rows] if "snr" in side.column_names else None
    drift = score_drift(reference, score).to_dict() if reference.size and score.size else None
    return ScoredRun(scores_dir=Path(outputs[0]).parent, targetid=targetid, score=score,
                     label=label, z=z, snr=snr, reference=reference, flag_threshold=threshold,
                     metrics=None, drift=drift, spectra_per_second=float("nan"), rejected={})


def _short_hash(paths: list[Path]) -> str:
    from qso_anomaly.registry.tracking import combined_hash, hash_files

    return combined_hash(hash_files(paths))[:12]


def _explain(cfg: PipelineConfig, trained: Any, shards: list[Path], scored: ScoredRun,
             out_dir: Path) -> Any:
    from qso_anomaly.data.batch import SpectraBatch
    from qso_anomaly.data.io import read_shards
    from qso_anomaly.data.validate import clean_batch
    from qso_anomaly.explain.runner import ExplainConfig, TorchScorer, explain, select_indices
    from qso_anomaly.models.torch_model import anomaly_score_torch

    pick = select_indices(scored.score, scored.label,
                          ExplainConfig(top_k=cfg.top_k, per_class=cfg.xai_per_class))
    wanted = {int(t) for t in scored.targetid[pick]}
    parts = []
    for batch in read_shards(shards, trained.grid):
        sel = np.array([int(t) in wanted for t in batch.targetid])
        if sel.any():
            parts.append(batch.take(sel))
    batch, _ = clean_batch(SpectraBatch.concat(parts))
    score_of = dict(zip(scored.targetid.tolist(), scored.score.tolist(), strict=True))
    scores = np.array([score_of[int(t)] for t in batch.targetid])
    ecfg = ExplainConfig(top_k=len(batch), ig_steps=cfg.ig_steps,
                         occlusion_window=cfg.occlusion_window,
                         deletion_window=cfg.occlusion_window // 2,
                         deletion_steps=cfg.deletion_steps, seed=cfg.seed,
                         framework=cfg.framework)
    factory = _jax_factory(trained) if cfg.framework == "jax" else None
    ex = explain(TorchScorer(trained.torch_model(), anomaly_score_torch), flux=batch.flux,
                 ivar=batch.ivar, mask=batch.mask, z=batch.z, scores=scores,
                 wave=trained.grid.wave, targetid=batch.targetid, labels=batch.label,
                 truth_mask=batch.truth_mask, snr=batch.snr, cfg=ecfg,
                 jax_score_factory=factory)
    ex.save(out_dir)
    return ex


def _jax_factory(trained: Any) -> Any:
    from qso_anomaly.models.jax_model import anomaly_score_jax, params_from_torch

    spec, grid = trained.spec, trained.grid

    def factory(torch_model: Any) -> Any:
        params = params_from_torch(torch_model)
        return lambda flux, ivar, z: anomaly_score_jax(params, spec, grid, flux, ivar, z)

    return factory


def _evaluate(scored: ScoredRun) -> dict[str, Any] | None:
    from qso_anomaly.registry.evaluation import evaluate_detection

    if scored.label is None or len(set(scored.label.tolist())) < 2:
        return None
    return evaluate_detection(scored.score, scored.label, snr=scored.snr, z=scored.z,
                              n_boot=200, seed=0)


def _normal_drift(scored: ScoredRun) -> dict[str, Any] | None:
    """Drift of the held-out *normal* scores vs the reference (what the gate checks)."""
    from qso_anomaly.metrics import score_drift

    if not scored.reference.size:
        return None
    cur = scored.score if scored.label is None else scored.score[scored.label == "normal"]
    if cur.size == 0:
        return None
    return score_drift(scored.reference, cur).to_dict()


def _model_details(rv: Any, trained: Any, cfg: PipelineConfig) -> dict[str, Any]:
    import platform

    import torch

    return {
        "name": rv.name, "version": rv.version, "run_id": rv.run_id,
        "task": "unsupervised anomaly detection on quasar spectra",
        "architecture": f"spender-like 1-D conv autoencoder + GMM latent density "
                        f"({trained.spec.version})",
        "channels": str(list(trained.spec.channels)), "latent_dim": trained.spec.latent_dim,
        "framework": cfg.framework, "workload_version": __version__,
        "torch_version": torch.__version__, "python": platform.python_version(),
        "training_epochs": cfg.epochs, "licence": "MIT",
        "citation": "skyrig qso_anomaly; Melchior et al. 2023 (spender) design",
    }


def _report(cfg: PipelineConfig, trained: Any, model: dict[str, str], scored: ScoredRun,
            ex: Any, evaluation: dict[str, Any] | None, gates: dict[str, Any] | None,
            path: Path, links: dict[str, str]) -> Path:
    from qso_anomaly.report import ReportInputs, write_report

    inp = ReportInputs(
        scores=scored.score, labels=scored.label, reference_scores=scored.reference,
        flag_threshold=scored.flag_threshold, evaluation=evaluation, drift=scored.drift,
        explanations=ex, wave=trained.grid.wave, gates=gates,
        model={**model, "framework": cfg.framework},
        summary={"spectra_per_second": scored.spectra_per_second,
                 "rejected_spectra": sum(v for k, v in scored.rejected.items()
                                         if not k.startswith("masked_pixels:"))},
        links=links,
        title=f"qso_anomaly run — {model.get('name', '?')} v{model.get('version', '?')}")
    return write_report(inp, path)


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the chain and return the summary that :func:`main` prints as JSON."""
    if cfg.expect_version and cfg.expect_version != __version__:
        raise PipelineError(
            f"workload version mismatch: the job pins qso_anomaly {cfg.expect_version} but "
            f"{__version__} is installed",
            hint="install the pinned version in the Ray runtime env or update the stack pin")
    if cfg.framework not in ("torch", "jax"):
        raise PipelineError(f"framework must be torch or jax, got {cfg.framework!r}")
    from qso_anomaly.registry.gates import load_thresholds
    from qso_anomaly.registry.mlflow_registry import CHAMPION, ModelRegistry
    from qso_anomaly.registry.tracking import sqlite_tracking_uri

    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    thresholds = load_thresholds(cfg.thresholds)
    tracking_uri = cfg.tracking_uri or sqlite_tracking_uri(out)
    registry = ModelRegistry(tracking_uri, experiment=cfg.experiment,
                             artifact_root=out / "mlartifacts")
    timings: dict[str, float] = {}

    # 1. model: the pinned alias if it exists, else train + register as candidate.
    t = time.perf_counter()
    resolved = (registry.resolve_alias(cfg.model_name, cfg.model_alias)
                if cfg.model_alias else None)
    trained = None
    if resolved is not None:
        from qso_anomaly.errors import ModelError
        from qso_anomaly.train import TrainedModel

        try:
            trained = TrainedModel.load(registry.download_model_dir(
                resolved, out / "model" / f"v{resolved.version}"))
            _log(f"using {cfg.model_name}@{cfg.model_alias} = version {resolved.version}")
        except ModelError as exc:  # e.g. a 0.1.x champion (qso-ae-1) under this release
            _log(f"{cfg.model_name}@{cfg.model_alias} (version {resolved.version}) cannot be "
                 f"used by qso_anomaly {__version__}: {exc.message}; training a new version")
            resolved = None
    if trained is not None and resolved is not None:
        rv, trained_here = resolved, False
        lineage: dict[str, Any] = {}
    else:
        if cfg.model_alias:
            _log(f"alias {cfg.model_name}@{cfg.model_alias} not found: training a new version")
        trained, lineage = _train(cfg, out)
        timings["train"] = time.perf_counter() - t
        rv = _register(registry, cfg, trained, out / "model" / "trained", lineage)
        trained_here = True
        _log(f"registered {rv.name} version {rv.version} as candidate")
    timings["model"] = time.perf_counter() - t

    # 2. score a held-out survey with the Prometheus exporter attached.
    t = time.perf_counter()
    _, grid = _grid_and_spec(cfg)
    if grid.npix != trained.grid.npix:
        grid = trained.grid
    shards = _survey(cfg, out / "data" / "survey", cfg.n_spectra, cfg.seed + 1,
                     cfg.anomaly_fraction, trained.grid)
    scored = _score(cfg, trained, rv.name, str(rv.version), shards, out / "run",
                    thresholds.flag_quantile)
    timings["score"] = time.perf_counter() - t
    _log(f"scored {scored.n} spectra ({scored.spectra_per_second:.0f}/s), "
         f"{scored.n_flagged} flagged")

    # 3. explain the top-k.
    t = time.perf_counter()
    ex = _explain(cfg, trained, shards, scored, out / "run" / "explain")
    scored.metrics.observe_explanations(len(ex.index), time.perf_counter() - t)
    timings["explain"] = time.perf_counter() - t

    # 4. evaluate; release (gates → champion → card) for a freshly trained version.
    t = time.perf_counter()
    evaluation = _evaluate(scored)
    metrics_path = scored.metrics.write_textfile(out / "run" / "metrics.prom")
    release_dir = out / "release"
    gates: dict[str, Any] | None = None
    promoted = False
    card_path: str | None = None
    if trained_here:
        from qso_anomaly.registry.release import release_version

        outcome = release_version(
            registry, rv, thresholds=thresholds, release_dir=release_dir,
            evaluation=evaluation or {}, drift=_normal_drift(scored), xai=ex.report,
            model_details=_model_details(rv, trained, cfg), data_lineage=lineage,
            tier=cfg.risk_tier, extra_files=(metrics_path,))
        rv, gates, promoted = outcome.version, outcome.gates.to_dict(), outcome.promoted
        card_path = outcome.files["model_card"]
        if not promoted:
            _log(f"not promoted: {outcome.blocked_reason}")
    else:
        got = registry.download_release_file(rv, "model_card.md", release_dir)
        card_path = str(got) if got else None
    timings["release"] = time.perf_counter() - t

    # 5. metrics snapshot (again, with explanation counters) and the report.
    t = time.perf_counter()
    metrics_path = scored.metrics.write_textfile(out / "run" / "metrics.prom")
    if cfg.push_gateway:
        scored.metrics.push(cfg.push_gateway)
    if CHAMPION in rv.aliases:
        alias = CHAMPION
    elif resolved is not None and cfg.model_alias:
        alias = cfg.model_alias
    else:
        alias = "candidate"
    links = {"metrics": "metrics.prom"}
    if card_path:
        links["model card"] = os.path.relpath(card_path, out / "run")
    report_path = _report(cfg, trained,
                          {"name": rv.name, "version": str(rv.version), "alias": alias},
                          scored, ex, evaluation, gates, out / "run" / "report.html", links)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    rand = ex.report.get("randomisation") or {}
    return {
        "report": str(report_path),
        "metrics": str(metrics_path),
        "model_card": card_path,
        "scores": str(scored.scores_dir),
        "model": {"name": rv.name, "version": str(rv.version), "alias": alias,
                  "aliases": list(rv.aliases), "trained": trained_here, "promoted": promoted,
                  "run_id": rv.run_id},
        "tracking_uri": tracking_uri,
        "workload_version": __version__,
        "n_scored": scored.n,
        "n_flagged": scored.n_flagged,
        "flag_threshold": scored.flag_threshold,
        "calibration": trained.metrics.get("calibration"),
        "rejected": scored.rejected,
        "drift": scored.drift,
        "xai": {"localisation_auroc_localised_mean":
                ex.report.get("localisation_auroc_localised_mean"),
                "deletion_gain": ex.report.get("deletion_gain"),
                "randomisation_passed": rand.get("passed")},
        "gates_passed": None if gates is None else gates["passed"],
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if argv is not None:
        argv = [a for a in argv if a != "--debug"]
    elif debug:
        argv = [a for a in sys.argv[1:] if a != "--debug"]
    try:
        cfg = config_from_args(argv)
        summary = run_pipeline(cfg)
    except QsoAnomalyError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, default=_json_default), flush=True)
    return 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


if __name__ == "__main__":
    raise SystemExit(main())
