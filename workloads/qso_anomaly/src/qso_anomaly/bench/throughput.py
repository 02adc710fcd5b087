"""Scoring throughput: PyTorch vs JAX, plain loop vs Ray Data, end to end over Parquet shards
(read → validate → score → write), plus the projection to the 1.6 M-spectrum DR1 corpus."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qso_anomaly import __version__
from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.score import score_shards
from qso_anomaly.train import TrainedModel, fit

DR1_QSOS = 1_600_000


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_throughput(
    *,
    n_spectra: int = 4000,
    shard_size: int = 500,
    batch_size: int = 256,
    model_dir: str | Path | None = None,
    spec: ModelSpec | None = None,
    frameworks: tuple[str, ...] = ("torch", "jax"),
    ray_concurrency: int = 2,
    work_dir: str | Path | None = None,
    seed: int = 7,
    progress: Callable[[str], None] = _progress,
) -> dict[str, Any]:
    spec = spec or ModelSpec.ci()
    grid = spec.input_grid()
    work = Path(work_dir or tempfile.mkdtemp(prefix="qso-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        tm = fit(spec, grid, generate(600, seed, grid), epochs=1, seed=seed)
        model_dir = tm.save(work / "model")
    tm = TrainedModel.load(model_dir)
    shards = write_survey(work / "shards", n=n_spectra, seed=seed, shard_size=shard_size,
                          grid=grid)
    progress(f"{n_spectra} spectra in {len(shards)} shards on {grid.npix} px")
    results: dict[str, Any] = {}

    # model-only (in memory) reference
    batch = generate(min(1024, n_spectra), seed + 1, grid)
    model = tm.torch_model()
    score_torch(model, batch.take(slice(0, 64)))
    t = time.perf_counter()
    score_torch(model, batch)
    results["model_only_torch_spectra_per_s"] = len(batch) / (time.perf_counter() - t)

    def run(label: str, **kw: Any) -> None:
        out = work / f"out-{label}"
        shutil.rmtree(out, ignore_errors=True)
        s = score_shards(model_dir, shards, out, batch_size=batch_size, **kw)
        results[label] = {"n_scored": s.n_scored, "seconds": s.elapsed,
                          "spectra_per_s": s.spectra_per_second,
                          "projected_dr1_hours": DR1_QSOS / s.spectra_per_second / 3600}
        progress(f"{label}: {s.spectra_per_second:.0f} spectra/s ({s.elapsed:.1f}s)")

    for fw in frameworks:
        run(f"plain_{fw}", framework=fw)
    ray_init_s = None
    try:
        import ray

        from qso_anomaly.train.ray_train import ensure_ray

        t = time.perf_counter()
        ensure_ray(num_cpus=os.cpu_count() or 2, object_store_memory=512 * 1024**2)
        ray_init_s = time.perf_counter() - t
        for fw in frameworks:
            # warm run (actor start-up, imports, jit) then the measured run
            run(f"ray_warmup_{fw}", framework=fw, use_ray=True, concurrency=ray_concurrency)
            run(f"ray_{fw}", framework=fw, use_ray=True, concurrency=ray_concurrency)
            plain = results[f"plain_{fw}"]["seconds"]
            results[f"ray_overhead_{fw}"] = results[f"ray_{fw}"]["seconds"] / plain - 1.0
        ray.shutdown()
    except ImportError:
        progress("ray is not installed: Ray Data rows skipped")
    return {
        "benchmark": "qso-throughput-v1",
        "qso_anomaly_version": __version__,
        "n_spectra": n_spectra,
        "shard_size": shard_size,
        "batch_size": batch_size,
        "grid_npix": grid.npix,
        "spec_version": spec.version,
        "ray_init_s": ray_init_s,
        "ray_concurrency": ray_concurrency,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "results": results,
    }


def markdown_table(result: dict[str, Any]) -> str:
    r = result["results"]
    lines = [(f"### Scoring throughput ({result['n_spectra']} spectra, {result['grid_npix']} px, "
             f"batch {result['batch_size']}, {result['cpu_count']} CPUs, load average "
             f"{result['load_average'][0]:.1f} at the end)"), "",
             ("| path | framework | spectra/s | seconds | projected 1.6 M spectra (h) | "
             "Ray overhead |"), "|---|---|---|---|---|---|"]
    for fw in ("torch", "jax"):
        for kind in ("plain", "ray"):
            row = r.get(f"{kind}_{fw}")
            if not row:
                continue
            ovh = r.get(f"ray_overhead_{fw}") if kind == "ray" else None
            lines.append(
                f"| {'plain loop' if kind == 'plain' else 'Ray Data (actor pool)'} | {fw} | "
                f"{row['spectra_per_s']:.0f} | {row['seconds']:.1f} | "
                f"{row['projected_dr1_hours']:.1f} | "
                + ("—" if ovh is None else f"{100 * ovh:+.0f}%") + " |")
    lines.append("")
    lines.append(f"Model-only PyTorch forward+score (in memory): "
                 f"{r['model_only_torch_spectra_per_s']:.0f} spectra/s; "
                 f"`ray.init` took {result['ray_init_s'] or float('nan'):.1f} s (not included).")
    return "\n".join(lines)
