"""Scoring throughput: PyTorch vs JAX, plain loop vs Ray Data, end to end over Parquet shards
(read → validate → score → write), side by side in one run, plus peak RSS at two survey sizes,
a kill-at-half resume check at the benchmark size, and the projection to 1.6 M DR1 spectra.

Plain-loop runs execute in a fresh child process each (``python -m qso_anomaly.bench.throughput
--child ...``), which reports its own peak RSS (``VmHWM``, :func:`qso_anomaly.bench.rss
.peak_rss_mib`) — the scoring run's resident memory, not the benchmark's (``ru_maxrss`` of a
child includes the parent's RSS at fork). The Ray Data runs execute in this process
against one local Ray instance (``ray.init`` time reported separately, actor start-up included
in each run: it is part of every real job).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from qso_anomaly import __version__
from qso_anomaly.bench.rss import peak_rss_mib
from qso_anomaly.data.synth import generate, write_survey
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.score import ScoringSummary, output_path, score_shards
from qso_anomaly.score.config import THREAD_ENV, ScoringConfig
from qso_anomaly.score.scorer import Scorer, usable_cores
from qso_anomaly.score.shards import score_stream
from qso_anomaly.train.trained import TrainedModel

DR1_QSOS = 1_600_000
Progress = Callable[[str], None]


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    for key, value in THREAD_ENV.items():
        env.setdefault(key, value)
    return env


def run_child(model_dir: Path, shards: list[Path], out: Path, framework: str, batch_size: int,
              *, kill_after_shards: int | None = None, timeout: float = 3600.0,
              progress: Progress = _progress) -> dict[str, Any]:
    """Score ``shards`` with the plain loop in a fresh Python process; return its summary and
    peak RSS. ``seconds`` is the child's own clock (from the scoring call, after its imports);
    ``process_seconds`` runs from the process start to its exit (interpreter start, imports,
    model load, scoring, exit), the span a Ray job's actor start-up is inside of. With
    ``kill_after_shards`` the child is SIGKILLed as soon as that many outputs
    exist (the resume check) and ``{"killed": True, ...}`` comes back."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    listing = out.parent / f"{out.name}.shards.json"
    listing.write_text(json.dumps([str(p) for p in shards]))
    cmd = [sys.executable, "-m", "qso_anomaly.bench.throughput", "--child",
           str(model_dir), str(listing), str(out), framework, str(batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=_child_env(), text=True)
    if kill_after_shards is not None:
        while proc.poll() is None and time.perf_counter() - t0 < timeout:
            if len(list(out.glob("*.scores.parquet"))) >= kill_after_shards:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
        done = len(list(out.glob("*.scores.parquet")))
        progress(f"child killed after {time.perf_counter() - t0:.1f}s with {done} shards done")
        return {"killed": proc.returncode == -signal.SIGKILL, "shards_done_at_kill": done,
                "seconds_to_kill": time.perf_counter() - t0}
    stdout, _ = proc.communicate(timeout=timeout)
    process_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"scoring child failed with exit code {proc.returncode}: {cmd}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "process_seconds": process_seconds}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its threads. On a shared machine the wall
    time of a run moves with the other load; the CPU time it needs moves much less.
    ``time.process_time`` (``CLOCK_PROCESS_CPUTIME_ID``, ns resolution): ``os.times`` counts
    in 10 ms ticks, 5 % of one 2,048-spectrum model-only pass of JAX."""
    return time.process_time()


def _child_main(argv: list[str]) -> int:
    model_dir, listing, out, framework, batch_size = argv
    shards = [Path(p) for p in json.loads(Path(listing).read_text())]
    cfg = ScoringConfig(framework=framework, batch_size=int(batch_size))  # type: ignore[arg-type]
    cpu0 = _cpu_seconds()
    s = score_shards(model_dir, shards, out, config=cfg)
    print(json.dumps({"n_scored": s.n_scored, "seconds": s.elapsed,
                      "cpu_seconds": _cpu_seconds() - cpu0,
                      "spectra_per_s": s.spectra_per_second, "peak_rss_mib": peak_rss_mib(),
                      "threads": s.threads_per_worker}))
    return 0


def _model_only_child_main(argv: list[str]) -> int:
    model_dir, framework, batch_size, n, seed, samples = argv
    res = model_only(TrainedModel.load(model_dir, torch_weights=framework != "jax"), framework,
                     int(batch_size), int(n),
                     int(seed), samples=int(samples))
    print(json.dumps(res))
    return 0


def run_model_only_child(model_dir: Path, framework: str, batch_size: int, n: int, seed: int,
                         samples: int, timeout: float = 1800.0) -> dict[str, Any]:
    """:func:`model_only` in a fresh Python process, like the plain-loop runs it is compared
    with (same imports, same thread set-up, nothing else loaded)."""
    return _json_child("model-only", [model_dir, framework, batch_size, n, seed, samples],
                       timeout)


def _json_child(kind: str, args: list[Any], timeout: float) -> dict[str, Any]:
    """Run ``python -m qso_anomaly.bench.throughput --<kind>-child ARGS`` with the scoring
    children's environment and return the JSON object on its last stdout line."""
    cmd = [sys.executable, "-m", "qso_anomaly.bench.throughput", f"--{kind}-child",
           *map(str, args)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env=_child_env(), text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed with exit code {proc.returncode}: {cmd}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def model_only(tm: TrainedModel, framework: str, batch_size: int, n: int, seed: int,
               samples: int = 7) -> dict[str, Any]:
    """In-memory spectra/s of the model alone (same Scorer, threads and batch size as the
    plain loop; no I/O, no validation): the median of ``samples`` timed passes over the same
    ``n`` spectra, after one warm-up batch (JIT). One pass is a second or less, so a single
    one moves with every burst of other load on a shared machine; the median does not."""
    batch = generate(n, seed, tm.grid)
    scorer = Scorer(tm, config=ScoringConfig(framework=framework,  # type: ignore[arg-type]
                                             batch_size=batch_size))
    scorer.score_batch(batch.take(slice(0, batch_size)))  # warm-up (JIT)
    rates, cpu = [], []
    for _ in range(samples):
        t, c = time.perf_counter(), _cpu_seconds()
        scorer.score_batch(batch)
        rates.append(n / (time.perf_counter() - t))
        cpu.append((_cpu_seconds() - c) / n * 1e3)
    return {"spectra_per_s": float(np.median(rates)), "samples_spectra_per_s": rates,
            "cpu_ms_per_spectrum": float(np.median(cpu)), "samples_cpu_ms_per_spectrum": cpu,
            "n": n}


def paired(model_dir: Path, shards: list[Path], out: Path, framework: str, batch_size: int,
           n_model_only: int, seed: int, groups: int) -> dict[str, Any]:
    """The plain loop and the model alone, interleaved in one process with one Scorer.

    The shards are split into ``groups`` consecutive groups; a model-only pass over the same
    ``n_model_only`` in-memory spectra runs before the first group and after every group, so
    each second of the plain loop has model-only time beside it, under the same load, thread
    pool and JIT cache. Separate processes measured the model-only CPU cost per spectrum on
    two levels (0.18-0.21 and 0.24-0.26 ms for the CI model with JAX, sometimes within one
    run), which moved an unpaired ratio by ±10 points. Each group is one
    :func:`qso_anomaly.score.shards.score_stream` call (reader, model, writer), so the plain
    side also pays a reader start per group, which only lowers its figure.

    Args:
        model_dir: A trained-model directory.
        shards: Input shards (scored into ``out``, which is emptied first).
        out: Output directory.
        framework: ``torch`` or ``jax``.
        batch_size: Spectra per model call (both sides).
        n_model_only: In-memory spectra per model-only pass.
        seed: Seed of the in-memory spectra.
        groups: Shard groups (at most one per shard).

    Returns:
        ``plain_seconds``/``plain_cpu_seconds`` (sums over the groups), ``n_scored``,
        ``model_only_seconds``/``model_only_cpu_seconds`` (sums over the passes),
        ``model_only_n`` (spectra over all passes), ``groups``, the per-group and per-pass
        lists, and ``rate_ratio`` (plain spectra/s over model-only spectra/s) and
        ``cpu_ratio`` (model-only CPU per spectrum over the plain loop's).
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = ScoringConfig(framework=framework, batch_size=batch_size)  # type: ignore[arg-type]
    tm = TrainedModel.load(model_dir, torch_weights=framework != "jax")
    scorer = Scorer(tm, config=cfg)
    batch = generate(n_model_only, seed, tm.grid)
    scorer.score_batch(batch.take(slice(0, batch_size)))  # warm-up (JIT)
    summary = ScoringSummary(0, {}, out, 0.0, framework=framework, backend="local")
    mo_wall: list[float] = []
    mo_cpu: list[float] = []
    pl_wall: list[float] = []
    pl_cpu: list[float] = []

    def model_pass() -> None:
        t, c = time.perf_counter(), _cpu_seconds()
        scorer.score_batch(batch)
        mo_wall.append(time.perf_counter() - t)
        mo_cpu.append(_cpu_seconds() - c)

    model_pass()
    for group in np.array_split(np.arange(len(shards)), max(1, min(groups, len(shards)))):
        t, c = time.perf_counter(), _cpu_seconds()
        score_stream(scorer, [shards[i] for i in group], out, summary)
        pl_wall.append(time.perf_counter() - t)
        pl_cpu.append(_cpu_seconds() - c)
        model_pass()
    n_mo = n_model_only * len(mo_wall)
    return {"n_scored": summary.n_scored, "groups": len(pl_wall),
            "plain_seconds": sum(pl_wall), "plain_cpu_seconds": sum(pl_cpu),
            "model_only_seconds": sum(mo_wall), "model_only_cpu_seconds": sum(mo_cpu),
            "model_only_n": n_mo, "group_seconds": pl_wall, "group_cpu_seconds": pl_cpu,
            "pass_seconds": mo_wall, "pass_cpu_seconds": mo_cpu,
            "rate_ratio": (summary.n_scored / sum(pl_wall)) / (n_mo / sum(mo_wall)),
            "cpu_ratio": (sum(mo_cpu) / n_mo) / (sum(pl_cpu) / summary.n_scored)}


def _paired_child_main(argv: list[str]) -> int:
    model_dir, listing, out, framework, batch_size, n_model_only, seed, groups = argv
    shards = [Path(p) for p in json.loads(Path(listing).read_text())]
    print(json.dumps(paired(Path(model_dir), shards, Path(out), framework, int(batch_size),
                            int(n_model_only), int(seed), int(groups))))
    return 0


def run_paired_child(model_dir: Path, shards: list[Path], out: Path, framework: str,
                     batch_size: int, n_model_only: int, seed: int, groups: int,
                     timeout: float = 3600.0) -> dict[str, Any]:
    """:func:`paired` in a fresh Python process (same environment as the plain-loop child)."""
    listing = out.parent / f"{out.name}.shards.json"
    listing.write_text(json.dumps([str(p) for p in shards]))
    return _json_child("paired", [model_dir, listing, out, framework, batch_size, n_model_only,
                                  seed, groups], timeout)


def _row(n_scored: int, seconds: float, **extra: Any) -> dict[str, Any]:
    rate = n_scored / seconds if seconds > 0 else 0.0
    return {"n_scored": n_scored, "seconds": seconds, "spectra_per_s": rate,
            "projected_dr1_minutes": DR1_QSOS / rate / 60 if rate else None, **extra}


def resume_check(model_dir: Path, shards: list[Path], out: Path, batch_size: int,
                 n_expected: int, progress: Progress = _progress) -> dict[str, Any]:
    """Kill a plain-loop scoring child once half the shards are done, resume in a new child,
    and count rows and duplicate targetids in the outputs."""
    half = max(1, len(shards) // 2)
    killed = run_child(model_dir, shards, out, "torch", batch_size, kill_after_shards=half,
                       progress=progress)
    # resume into the same directory (run_child would clear it): score in-process
    s = score_shards(model_dir, shards, out,
                     config=ScoringConfig(framework="torch", batch_size=batch_size))
    ids = np.concatenate([pq.read_table(output_path(out, p), columns=["targetid"])
                          .column("targetid").to_numpy() for p in shards])
    leftovers = sorted(p.name for p in out.glob("*.tmp"))
    return {**killed, "n_shards": len(shards), "resumed_shards_skipped": s.n_shards_skipped,
            "resumed_shards_scored": s.n_shards_scored, "rows": int(ids.size),
            "rows_expected": n_expected, "duplicates": int(ids.size - np.unique(ids).size),
            "tmp_files_left": leftovers,
            "ok": bool(ids.size == n_expected and np.unique(ids).size == ids.size)}


def run_throughput(
    *,
    n_spectra: int = 4000,
    shard_size: int = 500,
    batch_size: int = 256,
    model_dir: str | Path | None = None,
    spec: ModelSpec | None = None,
    frameworks: tuple[str, ...] = ("torch", "jax"),
    use_ray: bool = True,
    rss_small: int | None = None,
    resume: bool = True,
    work_dir: str | Path | None = None,
    seed: int = 7,
    plain_rounds: int = 1,
    model_only_samples: int = 7,
    paired_groups: int = 20,
    progress: Progress = _progress,
) -> dict[str, Any]:
    """One side-by-side run; returns the JSON-able result (see docs/benchmarks.md).

    ``plain_rounds=2`` runs the plain loops of the frameworks a second time in reverse order
    (torch, jax, jax, torch): on a shared machine whose load drifts during the run, the JAX /
    PyTorch time ratio is then taken from the summed times, which cancels a linear drift. The
    Ray Data run follows each plain run in every round, and Ray / plain is also taken from the
    summed times (the per-round ratios are kept): one Ray sample moved the ratio by 0.14.
    The model-only rates are medians of ``model_only_samples`` passes (:func:`model_only`) in
    a fresh process right before every plain-loop run, pooled per framework; plain / model
    only is given on the rate (wall) and on the CPU time per spectrum.

    With ``paired_groups`` > 0 each framework also gets one :func:`paired` run (the plain loop
    and the model alone interleaved in one process, in that many shard groups): on a machine
    whose speed moves by tens of percent between seconds, the plain / model-only ratio is
    taken from that run (``paired_{fw}``), the unpaired ones are kept beside it."""
    spec = spec or ModelSpec.ci()
    grid = spec.input_grid()
    work = Path(work_dir or tempfile.mkdtemp(prefix="qso-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    if model_dir is None:
        model_dir = work / "model"
        if not Path(model_dir).exists():
            from qso_anomaly.train.fitting import fit  # PyTorch: not in the scoring children

            fit(spec, grid, generate(600, seed, grid), epochs=1, seed=seed).save(model_dir)
    model_dir = Path(model_dir)
    tm = TrainedModel.load(model_dir)
    t = time.perf_counter()
    shards = write_survey(work / f"shards-{n_spectra}-{shard_size}", n=n_spectra, seed=seed,
                          shard_size=shard_size, grid=tm.grid)
    progress(f"{n_spectra} spectra in {len(shards)} shards on {tm.grid.npix} px "
             f"({time.perf_counter() - t:.0f}s to write/check)")
    results: dict[str, Any] = {}
    n_model_only = min(2048, max(batch_size, n_spectra))

    def measure_model_only(fw: str) -> None:
        """A model-only child right before each plain-loop child of ``fw``: both see about
        the same load on a shared machine; the samples of all its children are pooled."""
        mo = run_model_only_child(model_dir, fw, batch_size, n_model_only, seed + 1,
                                  model_only_samples)
        agg = results.setdefault(f"model_only_{fw}", {"samples_spectra_per_s": [],
                                                      "samples_cpu_ms_per_spectrum": [],
                                                      "n": n_model_only})
        agg["samples_spectra_per_s"] += mo["samples_spectra_per_s"]
        agg["samples_cpu_ms_per_spectrum"] += mo["samples_cpu_ms_per_spectrum"]
        agg["spectra_per_s"] = float(np.median(agg["samples_spectra_per_s"]))
        agg["cpu_ms_per_spectrum"] = float(np.median(agg["samples_cpu_ms_per_spectrum"]))
        results[f"model_only_{fw}_spectra_per_s"] = agg["spectra_per_s"]
        progress(f"model only {fw}: " + ", ".join(f"{x:.0f}" for x in mo["samples_spectra_per_s"])
                 + f"/s → median so far {agg['spectra_per_s']:.0f}/s, "
                 f"{agg['cpu_ms_per_spectrum']:.3f} CPU-ms per spectrum")

    ray_init_s = None
    if use_ray:
        from qso_anomaly.train.ray_train import ensure_ray

        t = time.perf_counter()
        ensure_ray(num_cpus=usable_cores(), object_store_memory=512 * 1024**2)
        ray_init_s = time.perf_counter() - t
        # warm the Ray worker pool and the page cache with one small run (not measured)
        score_shards(model_dir, shards[:1], work / "out-ray-warmup", use_ray=True,
                     config=ScoringConfig(batch_size=batch_size))
        shutil.rmtree(work / "out-ray-warmup", ignore_errors=True)

    for fw in frameworks:
        measure_model_only(fw)
        res = run_child(model_dir, shards, work / f"out-plain-{fw}", fw, batch_size)
        results[f"plain_{fw}"] = _row(res["n_scored"], res["seconds"],
                                      cpu_seconds=res.get("cpu_seconds"),
                                      process_seconds=res["process_seconds"],
                                      peak_rss_mib=res["peak_rss_mib"],
                                      threads=res["threads"], load_1m=os.getloadavg()[0])
        progress(f"plain {fw}: {res['spectra_per_s']:.0f}/s ({res['seconds']:.1f}s, "
                 f"peak RSS {res['peak_rss_mib']:.0f} MiB)")
        if use_ray:
            out = work / f"out-ray-{fw}"
            shutil.rmtree(out, ignore_errors=True)
            s = score_shards(model_dir, shards, out, use_ray=True,
                             config=ScoringConfig(framework=fw,  # type: ignore[arg-type]
                                                  batch_size=batch_size))
            results[f"ray_{fw}"] = _row(s.n_scored, s.elapsed, actors=s.actors,
                                        threads_per_actor=s.threads_per_worker,
                                        load_1m=os.getloadavg()[0])
            results[f"ray_{fw}"]["round_seconds"] = [s.elapsed]
            results[f"ray_over_plain_{fw}"] = s.elapsed / results[f"plain_{fw}"]["seconds"]
            progress(f"ray {fw}: {s.spectra_per_second:.0f}/s ({s.elapsed:.1f}s, "
                     f"{s.actors} actors × {s.threads_per_worker} threads) → ratio "
                     f"{results[f'ray_over_plain_{fw}']:.3f}")
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work / f"out-plain-{fw}", ignore_errors=True)
    for r in range(1, plain_rounds):
        for fw in (frameworks[::-1] if r % 2 else frameworks):
            measure_model_only(fw)
            res = run_child(model_dir, shards, work / f"out-plain-{fw}", fw, batch_size)
            results[f"plain_{fw}"].setdefault("round_seconds", [
                results[f"plain_{fw}"]["seconds"]]).append(res["seconds"])
            results[f"plain_{fw}"].setdefault("round_cpu_seconds", [
                results[f"plain_{fw}"]["cpu_seconds"]]).append(res.get("cpu_seconds"))
            results[f"plain_{fw}"].setdefault("round_process_seconds", [
                results[f"plain_{fw}"]["process_seconds"]]).append(res["process_seconds"])
            progress(f"plain {fw} (round {r + 1}): {res['spectra_per_s']:.0f}/s "
                     f"({res['seconds']:.1f}s)")
            shutil.rmtree(work / f"out-plain-{fw}", ignore_errors=True)
            if use_ray:  # Ray right after plain in every round: the ratio sees the same load
                out = work / f"out-ray-{fw}"
                shutil.rmtree(out, ignore_errors=True)
                s = score_shards(model_dir, shards, out, use_ray=True,
                                 config=ScoringConfig(framework=fw,  # type: ignore[arg-type]
                                                      batch_size=batch_size))
                results[f"ray_{fw}"]["round_seconds"].append(s.elapsed)
                progress(f"ray {fw} (round {r + 1}): {s.spectra_per_second:.0f}/s "
                         f"({s.elapsed:.1f}s)")
                shutil.rmtree(out, ignore_errors=True)
    if paired_groups > 0:
        for fw in frameworks:
            res = run_paired_child(model_dir, shards, work / f"out-paired-{fw}", fw, batch_size,
                                   n_model_only, seed + 1, paired_groups)
            results[f"paired_{fw}"] = res
            progress(f"paired {fw}: plain {res['n_scored'] / res['plain_seconds']:.0f}/s, model "
                     f"only {res['model_only_n'] / res['model_only_seconds']:.0f}/s over "
                     f"{res['groups']} groups → rate {100 * res['rate_ratio']:.0f} %, CPU "
                     f"{100 * res['cpu_ratio']:.0f} %")
            shutil.rmtree(work / f"out-paired-{fw}", ignore_errors=True)
    if use_ray:  # the plain loop timed from its process start, as a Ray actor's start-up is
        for fw in frameworks:
            row = results[f"plain_{fw}"]
            results[f"ray_over_plain_process_{fw}"] = (
                sum(results[f"ray_{fw}"]["round_seconds"])
                / sum(row.get("round_process_seconds", [row["process_seconds"]])))
    if use_ray and plain_rounds > 1:  # summed over the rounds, as the JAX / PyTorch ratio
        for fw in frameworks:
            plain = results[f"plain_{fw}"].get("round_seconds",
                                               [results[f"plain_{fw}"]["seconds"]])
            ray_s = results[f"ray_{fw}"]["round_seconds"]
            results[f"ray_over_plain_{fw}_rounds"] = [r / q for r, q in
                                                      zip(ray_s, plain, strict=True)]
            results[f"ray_over_plain_{fw}"] = sum(ray_s) / sum(plain)
    for fw in frameworks:
        row, mo = results[f"plain_{fw}"], results.get(f"model_only_{fw}")
        if not mo:
            continue
        secs = row.get("round_seconds", [row["seconds"]])
        cpus = row.get("round_cpu_seconds", [row["cpu_seconds"]])
        results[f"plain_over_model_only_{fw}"] = (
            row["n_scored"] * len(secs) / sum(secs) / mo["spectra_per_s"])
        if all(c is not None for c in cpus):  # CPU per spectrum, model only / plain loop
            results[f"plain_over_model_only_cpu_{fw}"] = (
                mo["cpu_ms_per_spectrum"] / (1e3 * sum(cpus) / (row["n_scored"] * len(cpus))))
    if "torch" in frameworks and "jax" in frameworks:
        def plain_total(fw: str) -> float:
            row = results[f"plain_{fw}"]
            return float(sum(row.get("round_seconds", [row["seconds"]])))

        results["jax_over_torch_plain_time"] = plain_total("jax") / plain_total("torch")

        def plain_cpu(fw: str) -> float:
            row = results[f"plain_{fw}"]
            return float(sum(row.get("round_cpu_seconds", [row["cpu_seconds"]])))

        results["jax_over_torch_plain_cpu"] = plain_cpu("jax") / plain_cpu("torch")
        if use_ray:
            results["jax_over_torch_ray_time"] = (
                results["ray_jax"]["seconds"] / results["ray_torch"]["seconds"])

    if rss_small:
        k = max(1, rss_small // shard_size)
        res = run_child(model_dir, shards[:k], work / "out-rss-small", "torch", batch_size)
        results["rss"] = {
            "small_n": res["n_scored"], "small_peak_rss_mib": res["peak_rss_mib"],
            "large_n": results["plain_torch"]["n_scored"] if "torch" in frameworks else None,
            "large_peak_rss_mib": (results["plain_torch"]["peak_rss_mib"]
                                   if "torch" in frameworks else None)}
        if results["rss"]["large_peak_rss_mib"]:
            results["rss"]["relative_difference"] = (
                results["rss"]["large_peak_rss_mib"] / res["peak_rss_mib"] - 1.0)
        shutil.rmtree(work / "out-rss-small", ignore_errors=True)
        progress(f"peak RSS: {results['rss']}")

    if resume:
        results["resume"] = resume_check(model_dir, shards, work / "out-resume", batch_size,
                                         n_expected=_expected_rows(shards), progress=progress)
        shutil.rmtree(work / "out-resume", ignore_errors=True)
        progress(f"resume: {results['resume']}")

    if use_ray:
        import ray

        ray.shutdown()
    return {
        "benchmark": "qso-throughput-v2",
        "qso_anomaly_version": __version__,
        "n_spectra": n_spectra,
        "shard_size": shard_size,
        "n_shards": len(shards),
        "batch_size": batch_size,
        "grid_npix": tm.grid.npix,
        "spec_version": tm.spec.version,
        "ray_init_s": ray_init_s,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "platform": platform.platform(),
        "results": results,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _expected_rows(shards: list[Path]) -> int:
    """Rows that pass validation: every row of the synthetic shards is valid, so the count is
    the shards' row total (checked against the scored total of the plain run)."""
    return int(sum(pq.ParquetFile(p).metadata.num_rows for p in shards))


def markdown_table(result: dict[str, Any]) -> str:
    r = result["results"]
    la0, la1 = result["load_average_start"][0], result["load_average_end"][0]
    lines = [(f"### Scoring throughput ({result['n_spectra']:,} spectra in "
              f"{result['n_shards']} shards, {result['grid_npix']} px, batch "
              f"{result['batch_size']}, {result['usable_cores']} cores, 1-min load average "
              f"{la0:.1f} at the start and {la1:.1f} at the end)"), "",
             ("| path | framework | spectra/s | seconds | projected 1.6 M spectra (min) | "
              "Ray / plain time |"), "|---|---|---|---|---|---|"]
    for fw in ("torch", "jax"):
        for kind in ("plain", "ray"):
            row = r.get(f"{kind}_{fw}")
            if not row:
                continue
            ratio = r.get(f"ray_over_plain_{fw}") if kind == "ray" else None
            name = ("plain loop" if kind == "plain"
                    else f"Ray Data ({_count(row['actors'], 'actor')} × "
                          f"{_count(row['threads_per_actor'], 'thread')})")
            lines.append(
                f"| {name} | {fw} | {row['spectra_per_s']:.0f} | {row['seconds']:.1f} | "
                f"{row['projected_dr1_minutes']:.1f} | "
                + ("—" if ratio is None else f"{ratio:.3f}") + " |")
    lines.append("")
    for fw in ("torch", "jax"):
        if f"model_only_{fw}_spectra_per_s" in r:
            mo = r.get(f"model_only_{fw}") or {}
            samples = mo.get("samples_spectra_per_s", [])
            cpu_ratio = r.get(f"plain_over_model_only_cpu_{fw}")
            lines.append(
                f"- Model only {fw} (in memory, same batch and threads, a fresh process before "
                f"each plain run, median of {len(samples)} passes"
                + (f", {min(samples):.0f}-{max(samples):.0f}" if samples else "")
                + f"): {r[f'model_only_{fw}_spectra_per_s']:.0f} spectra/s, "
                f"{mo.get('cpu_ms_per_spectrum', float('nan')):.3f} CPU-ms per spectrum; plain "
                f"loop (all rounds) at {100 * r.get(f'plain_over_model_only_{fw}', float('nan')):.0f}"
                " % of its rate"
                + (f", {100 * cpu_ratio:.0f} % of its CPU efficiency" if cpu_ratio else "")
                + ".")
    for fw in ("torch", "jax"):
        pr = r.get(f"paired_{fw}")
        if pr:
            lines.append(
                f"- Paired, {fw} (plain loop and model only interleaved in one process: "
                f"{pr['groups']} shard groups, a {pr['model_only_n'] // (pr['groups'] + 1):,}-spectrum "
                f"model-only pass before the first and after every group): plain "
                f"{pr['n_scored'] / pr['plain_seconds']:.0f} spectra/s, model only "
                f"{pr['model_only_n'] / pr['model_only_seconds']:.0f} spectra/s → plain loop at "
                f"**{100 * pr['rate_ratio']:.0f} %** of the model-only rate, "
                f"{100 * pr['cpu_ratio']:.0f} % of its CPU efficiency (model only "
                f"{1e3 * pr['model_only_cpu_seconds'] / pr['model_only_n']:.3f}, plain loop "
                f"{1e3 * pr['plain_cpu_seconds'] / pr['n_scored']:.3f} CPU-ms per spectrum).")
    for fw in ("torch", "jax"):
        rounds = (r.get(f"plain_{fw}") or {}).get("round_seconds")
        if rounds:
            lines.append(f"- Plain loop {fw}, rounds in the order torch, jax, jax, torch: "
                         + ", ".join(f"{x:.1f} s" for x in rounds) + ".")
    for fw in ("torch", "jax"):
        row = r.get(f"plain_{fw}") or {}
        procs = row.get("round_process_seconds", [row["process_seconds"]] if row else [])
        if procs and f"ray_over_plain_process_{fw}" in r:
            lines.append(f"- Plain loop {fw} from its process start to its exit (interpreter, "
                         "imports, model load, scoring, exit — the span a Ray actor's start-up "
                         "is inside of): " + ", ".join(f"{x:.1f} s" for x in procs)
                         + f"; Ray / plain on that span {r[f'ray_over_plain_process_{fw}']:.3f}"
                         f" (on the plain loop's own clock {r[f'ray_over_plain_{fw}']:.3f}).")
    for fw in ("torch", "jax"):
        cpu = (r.get(f"plain_{fw}") or {}).get("round_cpu_seconds")
        if cpu:
            lines.append(f"- Plain loop {fw}, CPU seconds per round: "
                         + ", ".join(f"{x:.1f}" for x in cpu) + ".")
    if "jax_over_torch_plain_cpu" in r:
        lines.append(f"- JAX / PyTorch end-to-end CPU time (plain loop): "
                     f"{r['jax_over_torch_plain_cpu']:.2f}.")
    if "jax_over_torch_plain_time" in r:
        lines.append(f"- JAX / PyTorch end-to-end time: plain {r['jax_over_torch_plain_time']:.2f}"
                     + (f", Ray {r['jax_over_torch_ray_time']:.2f}"
                        if "jax_over_torch_ray_time" in r else "") + ".")
    if "rss" in r:
        x = r["rss"]
        lines.append(f"- Peak RSS of the plain PyTorch scoring process: "
                     f"{x['small_peak_rss_mib']:.0f} MiB at {x['small_n']:,} spectra, "
                     f"{x['large_peak_rss_mib']:.0f} MiB at {x['large_n']:,} "
                     f"({100 * x.get('relative_difference', float('nan')):+.1f} %).")
    if "resume" in r:
        x = r["resume"]
        lines.append(f"- Resume at {result['n_spectra']:,}: killed with {x['shards_done_at_kill']}"
                     f" of {x['n_shards']} shards done, resumed ({x['resumed_shards_skipped']} "
                     f"skipped, {x['resumed_shards_scored']} scored): {x['rows']:,} rows of "
                     f"{x['rows_expected']:,} expected, {x['duplicates']} duplicates.")
    if result.get("ray_init_s") is not None:
        lines.append(f"- `ray.init` took {result['ray_init_s']:.1f} s (not included; actor "
                     "start-up is included in every Ray row).")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raise SystemExit(_child_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "--model-only-child":
        raise SystemExit(_model_only_child_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "--paired-child":
        raise SystemExit(_paired_child_main(sys.argv[2:]))
    raise SystemExit("use benchmarks/bench_qso_throughput.py")
