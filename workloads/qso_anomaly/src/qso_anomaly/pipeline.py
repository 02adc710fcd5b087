"""Ray-job entrypoint: train → register → score → explain → release → report.

``python -m qso_anomaly.pipeline --out DIR [--model-alias champion] [--tracking-uri URI]
[--n-spectra N] [--config job.json]`` runs the whole chain and prints, as its last stdout line,
one JSON object with the paths of the report, metrics file and model card and the registered
model's name/version/alias. skyrig submits it to a Ray head through the Ray Jobs API with the
workload version (``--expect-version``) and the model alias pinned by the stack.

With ``--model-alias A``: if alias A exists in the registry, that version is downloaded and used
for scoring (no training, no new release); otherwise a model is trained, registered as
``candidate`` and promoted to ``champion`` only when the release gates pass.

``--approver NAME`` (or ``QSO_RELEASE_APPROVER``) records the person who approved a release in
``release_decision.json``; without one the release records no human approver.
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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from qso_anomaly import __version__
from qso_anomaly.errors import ModelError, QsoAnomalyError

if TYPE_CHECKING:
    from qso_anomaly.train.trained import TrainedModel


#: Environment variable naming the person who approves releases (``--approver`` wins).
APPROVER_ENV = "QSO_RELEASE_APPROVER"


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
    # score these instead of a synthetic held-out survey: Parquet shards or DESI healpix coadds
    # (files or a directory) with redrock/zcatalog files (default: redrock-* next to them)
    data: list[str] | None = None
    redshifts: list[str] | None = None
    # the person who approves a release (default: env QSO_RELEASE_APPROVER; none: no approver)
    approver: str | None = None
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
    p.add_argument("--approver",
                   help=f"name of the person approving a release (default: ${APPROVER_ENV}; "
                        "none given: the release records no human approver)")
    p.add_argument("--data", nargs="+",
                   help="score these instead of a synthetic survey: Parquet shards or DESI "
                        "healpix coadd-*.fits (files or a directory)")
    p.add_argument("--redshifts", nargs="+",
                   help="redrock-*.fits or zcatalog files for --data coadds (default: the "
                        "redrock-* files next to them), matched by TARGETID")
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


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the chain and return the summary that :func:`main` prints as JSON."""
    if cfg.expect_version and cfg.expect_version != __version__:
        raise PipelineError(
            f"workload version mismatch: the job pins qso_anomaly {cfg.expect_version} but "
            f"{__version__} is installed",
            hint="install the pinned version in the Ray runtime env or update the stack pin")
    if cfg.framework not in ("torch", "jax"):
        raise PipelineError(f"framework must be torch or jax, got {cfg.framework!r}")
    framework: Literal["torch", "jax"] = "jax" if cfg.framework == "jax" else "torch"
    from qso_anomaly.data.inputs import ScoringInput, prepare_input
    from qso_anomaly.data.policy import DataPolicy
    from qso_anomaly.data.synth import write_survey
    from qso_anomaly.explain.run import explain_scored
    from qso_anomaly.registry.gates import load_thresholds
    from qso_anomaly.registry.mlflow_registry import CHAMPION, ModelRegistry, check_approver
    from qso_anomaly.registry.steps import (
        baseline_evaluation,
        data_lineage,
        evaluate_scored,
        model_details,
        normal_score_drift,
        register_trained,
    )
    from qso_anomaly.registry.tracking import sqlite_tracking_uri
    from qso_anomaly.report.steps import write_run_report
    from qso_anomaly.score.run import score_run
    from qso_anomaly.train.steps import connect_ray, select_spec, train_on_survey
    from qso_anomaly.train.trained import TrainedModel

    approver = check_approver(cfg.approver or os.environ.get(APPROVER_ENV))  # a person, or None
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
    trained: TrainedModel | None = None
    if resolved is not None:
        try:
            trained = TrainedModel.load(registry.download_model_dir(
                resolved, out / "model" / f"v{resolved.version}"))
            _log(f"using {cfg.model_name}@{cfg.model_alias} = version {resolved.version}")
        except ModelError as exc:  # e.g. a 0.1.x champion (qso-ae-1) under this release
            _log(f"{cfg.model_name}@{cfg.model_alias} (version {resolved.version}) cannot be "
                 f"used by qso_anomaly {__version__}: {exc.message}; training a new version")
            resolved = None
    lineage: dict[str, Any] = {}
    train_shards: list[Path] = []
    if trained is not None and resolved is not None:
        rv, trained_here = resolved, False
    else:
        if cfg.model_alias:
            _log(f"alias {cfg.model_name}@{cfg.model_alias} not found: training a new version")
        spec, grid = select_spec(cfg.full_model)
        n_train = cfg.n_train or 2 * cfg.n_spectra
        trained, train_shards = train_on_survey(
            spec, grid, out, n_train=n_train, seed=cfg.seed, epochs=cfg.epochs,
            anomaly_fraction=cfg.train_anomaly_fraction, shard_size=cfg.shard_size,
            framework=framework, use_ray=cfg.use_ray, ray_address=cfg.ray_address,
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, log=_log)
        lineage = data_lineage(out / "data" / "train", train_shards, trained,
                               generator_seed=cfg.seed, n_train=n_train,
                               train_anomaly_fraction=cfg.train_anomaly_fraction,
                               eval_generator_seed=cfg.seed + 1,
                               eval_anomaly_fraction=cfg.anomaly_fraction)
        timings["train"] = time.perf_counter() - t
        rv = register_trained(registry, trained, out / "model" / "trained", lineage,
                              model_name=cfg.model_name, epochs=cfg.epochs, seed=cfg.seed,
                              framework=framework, use_ray=cfg.use_ray)
        trained_here = True
        _log(f"registered {rv.name} version {rv.version} as candidate")
    timings["model"] = time.perf_counter() - t

    # 2. score the input (a held-out synthetic survey, or --data: Parquet shards or DESI
    #    coadds through the model's reader and data policy) with the exporter attached.
    t = time.perf_counter()
    if cfg.data:
        data = prepare_input([cfg.data] if isinstance(cfg.data, str) else cfg.data,
                             grid=trained.grid, policy=DataPolicy.for_spec(trained.spec),
                             work_dir=out / "data" / "input", redshifts=cfg.redshifts)
        _log(f"scoring {data.kind} input ({len(data.sources)} files); rejected on read: "
             f"{data.rejected_on_read or 'none'}")
    else:
        data = ScoringInput(shards=write_survey(
            out / "data" / "survey", cfg.n_spectra, cfg.seed + 1, shard_size=cfg.shard_size,
            grid=trained.grid, anomaly_fraction=cfg.anomaly_fraction), kind="synthetic")
    shards = data.shards
    if cfg.use_ray:
        connect_ray(cfg.ray_address, cfg.num_workers)
    scored = score_run(trained, shards, out / "run", model_name=rv.name,
                       version=str(rv.version), flag_quantile=thresholds.flag_quantile,
                       framework=framework, use_ray=cfg.use_ray, batch_size=cfg.batch_size,
                       metrics_port=cfg.metrics_port, input_counts=data.rejected_on_read,
                       log=_log)
    metrics = scored.require_metrics()
    timings["score"] = time.perf_counter() - t
    _log(f"scored {scored.n} spectra ({scored.spectra_per_second:.0f}/s), "
         f"{scored.n_flagged} flagged")

    # 3. explain the top-k.
    t = time.perf_counter()
    ex = explain_scored(trained, shards, scored, out / "run" / "explain", top_k=cfg.top_k,
                        per_class=cfg.xai_per_class, ig_steps=cfg.ig_steps,
                        occlusion_window=cfg.occlusion_window,
                        deletion_steps=cfg.deletion_steps, seed=cfg.seed, framework=framework)
    metrics.observe_explanations(len(ex.index), time.perf_counter() - t)
    timings["explain"] = time.perf_counter() - t

    # 4. evaluate; release (gates → champion → card) for a freshly trained version.
    t = time.perf_counter()
    evaluation = evaluate_scored(scored)
    if evaluation is None and trained_here:
        _log("the scored input has no injection labels: the release has no detection metrics "
             "and its gates block promotion; release from a synthetic run (no --data), then "
             "score real data with --model-alias champion")
    metrics_path = metrics.write_textfile(out / "run" / "metrics.prom")
    release_dir = out / "release"
    gates: dict[str, Any] | None = None
    promoted = False
    card_path: str | None = None
    drift_normal = normal_score_drift(scored)  # None without labelled normal spectra
    if trained_here:
        from qso_anomaly.registry.release import release_version

        baselines = (baseline_evaluation(train_shards, scored, shards, trained.grid,
                                         model_evaluation=evaluation, seed=cfg.seed)
                     if evaluation is not None else None)
        outcome = release_version(
            registry, rv, thresholds=thresholds, release_dir=release_dir,
            evaluation=evaluation or {}, drift=drift_normal, xai=ex.report,
            model_details=model_details(rv, trained, framework=framework, epochs=cfg.epochs),
            data_lineage=lineage, tier=cfg.risk_tier, extra_files=(metrics_path,),
            approver=approver, baselines=baselines)
        if approver is None:
            _log("no approver given (--approver / QSO_RELEASE_APPROVER): the release records "
                 "no human approver")
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
    metrics_path = metrics.write_textfile(out / "run" / "metrics.prom")
    if cfg.push_gateway:
        metrics.push(cfg.push_gateway)
    if CHAMPION in rv.aliases:
        alias = CHAMPION
    elif resolved is not None and cfg.model_alias:
        alias = cfg.model_alias
    else:
        alias = "candidate"
    links = {"metrics": "metrics.prom"}
    if card_path:
        links["model card"] = os.path.relpath(card_path, out / "run")
    report_path = write_run_report(
        trained, {"name": rv.name, "version": str(rv.version), "alias": alias}, scored,
        out / "run" / "report.html", explanations=ex, evaluation=evaluation, gates=gates,
        links=links, framework=framework)
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
        "flags": scored.flag_summary(),
        "calibration": trained.metrics.get("calibration"),
        "input": data.kind,
        "rejected": scored.rejected,
        "rejected_on_read": scored.rejected_on_read,
        "drift": scored.drift,
        "drift_normal": drift_normal,
        "xai": {"localisation_auroc_localised_mean":
                ex.report.get("localisation_auroc_localised_mean"),
                "deletion_gain": ex.report.get("deletion_gain"),
                "randomisation_passed": rand.get("passed")},
        "gates_passed": None if gates is None else gates["passed"],
        "approver": approver if trained_here else None,
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
