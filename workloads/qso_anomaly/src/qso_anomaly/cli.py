"""``qso-anomaly``: synth | train | score | explain | report | benchmark | pipeline.

Every command prints one JSON object on stdout (machine-readable) and progress on stderr.
Errors print one message and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# PyTorch's OpenMP threads must not spin on shared machines (see qso_anomaly.score.config);
# libgomp reads this once, when torch is first imported, so it is set before any import of it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from qso_anomaly import __version__
from qso_anomaly.errors import QsoAnomalyError

if TYPE_CHECKING:
    from qso_anomaly.data.inputs import ScoringInput
    from qso_anomaly.score.run import ScoredRun
    from qso_anomaly.train.trained import TrainedModel


class CliError(QsoAnomalyError):
    """A command-line argument is invalid."""


def _input(args: argparse.Namespace, trained: TrainedModel, work_dir: Path) -> ScoringInput:
    """Shards for ``--data``: Parquet as is, DESI coadds (with ``--redshifts`` or the redrock
    files next to them) through the model's reader and data policy, written under work_dir."""
    from qso_anomaly.data.inputs import prepare_input
    from qso_anomaly.data.policy import DataPolicy

    return prepare_input(args.data, grid=trained.grid, policy=DataPolicy.for_spec(trained.spec),
                         work_dir=work_dir, redshifts=getattr(args, "redshifts", None))


def _load_model(args: argparse.Namespace) -> tuple[TrainedModel, str, str]:
    """(trained model, model name, version) from --model DIR or --model-uri models:/n@alias."""
    from qso_anomaly.train import TrainedModel

    # a JAX command reads the weights as NumPy arrays (weights.npz): no PyTorch import
    torch_weights = getattr(args, "framework", "torch") != "jax"
    if getattr(args, "model_uri", None):
        from qso_anomaly.registry.mlflow_registry import ModelRegistry

        uri = args.model_uri
        if not uri.startswith("models:/") or "@" not in uri:
            raise CliError(f"--model-uri {uri!r} is not of the form models:/<name>@<alias>")
        name, alias = uri[len("models:/"):].split("@", 1)
        if not args.tracking_uri:
            raise CliError("--model-uri needs --tracking-uri")
        reg = ModelRegistry(args.tracking_uri)
        rv = reg.resolve_alias(name, alias)
        if rv is None:
            raise CliError(f"{uri}: no such registered model alias in {args.tracking_uri}",
                           hint="train and release a version first (qso-anomaly pipeline)")
        dst = Path(args.out) / "model"
        return (TrainedModel.load(reg.download_model_dir(rv, dst), torch_weights=torch_weights),
                name, rv.version)
    if not args.model:
        raise CliError("give --model DIR or --model-uri models:/<name>@<alias>")
    return TrainedModel.load(args.model, torch_weights=torch_weights), Path(args.model).name, "local"


def _emit(obj: Any) -> None:
    print(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# --------------------------------------------------------------------------- commands


def cmd_synth(args: argparse.Namespace) -> dict[str, Any]:
    from qso_anomaly.data.grid import WavelengthGrid
    from qso_anomaly.data.synth import write_survey

    grid = WavelengthGrid.desi_edr().downsample(args.downsample)
    paths = write_survey(args.out, args.n, args.seed, shard_size=args.shard_size, grid=grid,
                         anomaly_fraction=args.anomaly_fraction)
    return {"shards": [str(p) for p in paths], "manifest": str(Path(args.out) / "manifest.json"),
            "npix": grid.npix}


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from qso_anomaly.data.inputs import parquet_shards
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.train import fit

    spec = ModelSpec.full() if args.full_model else ModelSpec.ci()
    shards = parquet_shards(args.data)
    trained = fit(spec, spec.input_grid(), shards, use_ray=args.use_ray,
                  num_workers=args.num_workers, use_gpu=args.use_gpu, epochs=args.epochs,
                  seed=args.seed, framework=args.framework)
    out = trained.save(args.out)
    result: dict[str, Any] = {"model_dir": str(out), "final_loss": trained.metrics.get(
        "final_loss"), "n_train": trained.metrics.get("n_train")}
    if args.register:
        from qso_anomaly.registry.mlflow_registry import ModelRegistry
        from qso_anomaly.registry.tracking import hash_files, sqlite_tracking_uri

        uri = args.tracking_uri or sqlite_tracking_uri(Path(args.out).parent)
        reg = ModelRegistry(uri)
        rv = reg.register(model_dir=out, model_name=args.model_name,
                          params={"epochs": args.epochs, "seed": args.seed,
                                  "framework": args.framework, **spec.to_dict()},
                          metrics={"train": {k: v for k, v in trained.metrics.items()
                                             if isinstance(v, (int, float))}},
                          data_hashes=hash_files(shards),
                          generator_seed=None,
                          tags={"framework": args.framework, "workload_version": __version__})
        result["registered"] = rv.to_dict()
        result["tracking_uri"] = uri
    return result


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    from qso_anomaly.registry.gates import load_thresholds
    from qso_anomaly.score.config import ENV_PREFIX, ScoringConfig
    from qso_anomaly.score.run import score_run
    from qso_anomaly.train.steps import connect_ray

    for key in ("device", "num_gpus", "concurrency", "precision"):
        value = getattr(args, key, None)
        if value is not None:  # score_shards reads its settings from QSO_SCORE_*
            os.environ[ENV_PREFIX + key.upper()] = str(value)
    ScoringConfig.from_env()  # fail early, before the model loads, on a bad combination
    trained, name, version = _load_model(args)
    quantile = load_thresholds(args.thresholds).flag_quantile if args.thresholds else 0.99
    data = _input(args, trained, Path(args.out) / "input")
    if args.use_ray:
        connect_ray()
    scored = score_run(trained, data.shards, args.out, model_name=name, version=version,
                       flag_quantile=quantile, framework=args.framework, use_ray=args.use_ray,
                       batch_size=args.batch_size, metrics_port=args.metrics_port,
                       input_counts=data.rejected_on_read)
    metrics = scored.require_metrics()
    metrics_path = metrics.write_textfile(Path(args.out) / "metrics.prom")
    if args.push_gateway:
        metrics.push(args.push_gateway)
    return {"scores": str(scored.scores_dir), "metrics": metrics_path, "n_scored": scored.n,
            "n_flagged": scored.n_flagged, "flag_threshold": scored.flag_threshold,
            "flags": scored.flag_summary(),
            "spectra_per_second": scored.spectra_per_second, "drift": scored.drift,
            "rejected": scored.rejected, "rejected_on_read": scored.rejected_on_read}


def _scored_from_files(args: argparse.Namespace, trained: TrainedModel, data: ScoringInput
                       ) -> ScoredRun:
    from qso_anomaly.score.run import load_scored

    outputs = sorted(Path(args.scores).glob("*.scores.parquet"))
    reference = np.asarray(trained.reference_scores, dtype=np.float64)
    threshold = float(np.quantile(reference, 0.99)) if reference.size else float("inf")
    scored = load_scored(outputs, data.shards, reference, threshold,
                         calibration=trained.flag_calibration(), alpha=0.01)
    scored.rejected_on_read = dict(data.rejected_on_read)
    return scored


def cmd_explain(args: argparse.Namespace) -> dict[str, Any]:
    from qso_anomaly.explain.run import explain_scored

    trained, _, _ = _load_model(args)
    data = _input(args, trained, Path(args.out) / "input")
    scored = _scored_from_files(args, trained, data)
    ex = explain_scored(trained, data.shards, scored, args.out, top_k=args.top_k,
                        ig_steps=args.ig_steps, occlusion_window=args.occlusion_window,
                        framework=args.framework)
    keys = ("n_explained", "localisation_auroc_localised_mean", "deletion_auc_mean",
            "deletion_auc_random_mean", "randomisation")
    return {"explanations": str(Path(args.out) / "explanations.npz"),
            "xai_report": str(Path(args.out) / "xai_report.json"),
            "rejected_on_read": data.rejected_on_read,
            **{k: ex.report.get(k) for k in keys}}


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    from qso_anomaly.explain.runner import ExplanationSet
    from qso_anomaly.registry.steps import evaluate_scored
    from qso_anomaly.report.steps import write_run_report

    trained, name, version = _load_model(args)
    data = _input(args, trained, Path(args.out).parent / "input")
    scored = _scored_from_files(args, trained, data)
    ex = ExplanationSet.load(args.explain) if args.explain else None
    path = write_run_report(trained, {"name": name, "version": version}, scored, args.out,
                            explanations=ex, evaluation=evaluate_scored(scored),
                            framework=args.framework)
    return {"report": str(path), "n_scored": scored.n}


def cmd_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from qso_anomaly.explain.benchmark import run_xai_benchmark

    trained, _, _ = _load_model(args)
    return run_xai_benchmark(trained, n=args.n, seed=args.seed, per_class=args.per_class,
                             ig_steps=args.ig_steps, framework=args.framework,
                             out=args.out)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qso-anomaly", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"qso-anomaly {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic qso-inject-v1 survey as Parquet shards")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shard-size", type=int, default=500)
    s.add_argument("--anomaly-fraction", type=float, default=0.1)
    s.add_argument("--downsample", type=int, default=4, help="grid downsampling (1 = full)")

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="trained-model directory")
        sp.add_argument("--model-uri", help="models:/<name>@<alias> from the registry")
        sp.add_argument("--tracking-uri")
        sp.add_argument("--framework", choices=["torch", "jax"], default="torch")

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", required=True, nargs="+",
                        help="Parquet shards (files or a directory) or DESI healpix "
                             "coadd-*.fits (files or a directory)")
        sp.add_argument("--redshifts", nargs="*",
                        help="redrock-*.fits or zcatalog files or a directory (default: the "
                             "redrock-* files next to the coadds), matched by TARGETID")

    t = sub.add_parser("train", help="train a model on shards (optionally register it)")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True, help="trained-model directory to write")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--framework", choices=["torch", "jax"], default="torch")
    t.add_argument("--use-ray", action="store_true")
    t.add_argument("--num-workers", type=int, default=1)
    t.add_argument("--use-gpu", action="store_true")
    t.add_argument("--full-model", action="store_true")
    t.add_argument("--register", action="store_true", help="log + register as candidate")
    t.add_argument("--tracking-uri")
    t.add_argument("--model-name", default="qso-ae-torch")

    sc = sub.add_parser("score", help="score shards; write scores and metrics.prom")
    model_args(sc)
    data_args(sc)
    sc.add_argument("--out", required=True)
    sc.add_argument("--batch-size", type=int,
                    help="spectra per model call (env QSO_SCORE_BATCH_SIZE; default 256)")
    sc.add_argument("--use-ray", action="store_true")
    sc.add_argument("--device", choices=("cpu", "cuda"),
                    help="scoring device (env QSO_SCORE_DEVICE; default cpu)")
    sc.add_argument("--num-gpus", type=float,
                    help="GPUs per Ray scorer actor, e.g. 0.5 (env QSO_SCORE_NUM_GPUS)")
    sc.add_argument("--concurrency", type=int,
                    help="Ray scorer actors (env QSO_SCORE_CONCURRENCY; default from resources)")
    sc.add_argument("--precision", choices=("float32", "tf32", "bfloat16"),
                    help="GPU precision (env QSO_SCORE_PRECISION; default float32)")
    sc.add_argument("--metrics-port", type=int)
    sc.add_argument("--push-gateway")
    sc.add_argument("--thresholds", help="thresholds file (for the flag quantile)")

    e = sub.add_parser("explain", help="explain the top-k flagged spectra of a scored run")
    model_args(e)
    data_args(e)
    e.add_argument("--scores", required=True, help="directory of *.scores.parquet")
    e.add_argument("--out", required=True)
    e.add_argument("--top-k", type=int, default=10)
    e.add_argument("--ig-steps", type=int, default=32)
    e.add_argument("--occlusion-window", type=int, default=32)

    r = sub.add_parser("report", help="HTML report of a scored (and explained) run")
    model_args(r)
    data_args(r)
    r.add_argument("--scores", required=True)
    r.add_argument("--explain", help="directory with explanations.npz + xai_report.json")
    r.add_argument("--out", required=True, help="report.html path")

    b = sub.add_parser("benchmark", help="XAI faithfulness benchmark on fresh synthetic data")
    model_args(b)
    b.add_argument("--n", type=int, default=2000)
    b.add_argument("--seed", type=int, default=123)
    b.add_argument("--per-class", type=int, default=8)
    b.add_argument("--ig-steps", type=int, default=32)
    b.add_argument("--out", default="xai-benchmark")

    sub.add_parser("pipeline", help="train → register → score → explain → report "
                                    "(options: python -m qso_anomaly.pipeline --help)",
                   add_help=False)
    return p


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "score": cmd_score, "explain": cmd_explain,
            "report": cmd_report, "benchmark": cmd_benchmark}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if argv and argv[0] == "pipeline":
        from qso_anomaly.pipeline import main as pipeline_main

        return pipeline_main(argv[1:] + (["--debug"] if debug else []))
    args = build_parser().parse_args(argv)
    try:
        _emit(COMMANDS[args.command](args))
    except QsoAnomalyError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
