"""score_shards(): one output Parquet per input shard, resumable, bad input counted.

Resume contract: an output file appears (atomic rename) only once every row of its input
shard has been scored or rejected, so a restart skips finished shards and redoes unfinished
ones from scratch; a row is never written twice. Rejected rows are not written; their reasons
are counted in the summary and stored in the output's Parquet metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qso_anomaly.data.batch import REQUIRED_COLUMNS, SpectraBatch
from qso_anomaly.data.io import check_shard, read_shard
from qso_anomaly.data.validate import merge_counts, n_rejected_rows
from qso_anomaly.errors import ShardError
from qso_anomaly.models.scoring import ScoreResult
from qso_anomaly.score.scorer import SCORED_SCHEMA, Framework, Scorer
from qso_anomaly.train.trained import TrainedModel, as_trained

OUTPUT_SUFFIX = ".scores.parquet"
META_KEY = b"qso_anomaly.scoring"

OnBatch = Callable[[SpectraBatch, ScoreResult], None]


@dataclass
class ScoringSummary:
    n_scored: int
    n_rejected_by_reason: dict[str, int]
    out_dir: Path
    elapsed: float
    framework: str = "torch"
    backend: str = "local"
    n_shards_scored: int = 0
    n_shards_skipped: int = 0
    n_shards_failed: int = 0
    n_already_scored: int = 0
    outputs: list[Path] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return n_rejected_rows(self.n_rejected_by_reason)

    @property
    def spectra_per_second(self) -> float:
        return self.n_scored / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["outputs"] = [str(p) for p in self.outputs]
        d["n_rejected"] = self.n_rejected
        d["spectra_per_second"] = self.spectra_per_second
        return d


def output_path(out_dir: str | Path, shard: str | Path) -> Path:
    name = Path(shard).name
    stem = name.removesuffix(".parquet")
    return Path(out_dir) / f"{stem}{OUTPUT_SUFFIX}"


def _write_output(table: pa.Table, path: Path, meta: dict[str, Any]) -> None:
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _accepted(scored: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    reasons = np.asarray(scored.column("reject_reason").to_pylist(), dtype=object)
    counts = {str(k): int(v) for k, v in Counter(reasons[reasons != ""].tolist()).items()}
    keep = pa.array(reasons == "")
    out = scored.filter(keep).drop_columns(
        [c for c in ("reject_reason", "path") if c in scored.column_names])
    return out.cast(SCORED_SCHEMA.remove(SCORED_SCHEMA.get_field_index("reject_reason"))), counts


def score_shards(
    model_dir_or_trained: TrainedModel | str | Path,
    shard_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    use_ray: bool = False,
    batch_size: int = 256,
    framework: Framework = "torch",
    on_batch: OnBatch | None = None,
    concurrency: int = 2,
    object_store_limit: int = 512 * 1024**2,
    actor_cpus: float = 0.5,
) -> ScoringSummary:
    """Score every shard into ``out_dir/<shard>.scores.parquet`` (targetid, score, chi2_dof,
    density_nll, label). ``on_batch(batch, result)`` is called for every scored batch of clean
    spectra (plain loop; with Ray, once per finished shard with that shard's scored rows and
    a batch holding only targetid/z).

    Ray: ``concurrency`` scorer actors of ``actor_cpus`` logical CPUs each (each actor runs
    one compute thread); Parquet reads ask for 0.1 CPU but Ray Data's file-listing task asks
    for a whole CPU, so ``concurrency × actor_cpus`` must leave at least one CPU free (two
    1-CPU actors on a 2-CPU node starve the reads and the pipeline hangs)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    summary = ScoringSummary(0, counts, out, 0.0, framework=framework,
                             backend="ray_data" if use_ray else "local")
    pending: list[tuple[Path, int]] = []
    for p in map(Path, shard_paths):
        dest = output_path(out, p)
        if dest.exists():
            summary.n_shards_skipped += 1
            summary.n_already_scored += pq.ParquetFile(dest).metadata.num_rows
            summary.outputs.append(dest)
            continue
        try:
            nrows, _ = check_shard(p)
        except ShardError as exc:
            merge_counts(counts, {exc.reason: 1})
            summary.n_shards_failed += 1
            continue
        pending.append((p, nrows))

    trained = as_trained(model_dir_or_trained) if pending else None
    if pending and trained is not None:
        if use_ray:
            _score_ray(trained, pending, out, summary, batch_size, framework, on_batch,
                       concurrency, object_store_limit, actor_cpus)
        else:
            _score_local(trained, pending, out, summary, batch_size, framework, on_batch)
    summary.elapsed = time.perf_counter() - t0
    return summary


def _meta(trained: TrainedModel, framework: str, source: Path, rejected: dict[str, int]) -> dict:
    return {"source": str(source), "framework": framework, "spec_version": trained.spec.version,
            "rejected": rejected}


def _score_local(
    trained: TrainedModel, pending: list[tuple[Path, int]], out: Path, summary: ScoringSummary,
    batch_size: int, framework: Framework, on_batch: OnBatch | None,
) -> None:
    scorer = Scorer(trained, framework)
    for path, _ in pending:
        try:
            batch, shard_counts = read_shard(path, trained.grid)
        except ShardError as exc:
            merge_counts(summary.n_rejected_by_reason, {exc.reason: 1})
            summary.n_shards_failed += 1
            continue
        parts: list[pa.Table] = []
        for s in range(0, len(batch), batch_size):
            chunk = batch.take(slice(s, s + batch_size))
            res, reasons, c = scorer.score_rows(chunk)
            merge_counts(shard_counts, c)
            ok = reasons == ""
            parts.append(pa.table({
                "targetid": pa.array(chunk.targetid[ok]),
                "score": pa.array(res.score[ok]),
                "chi2_dof": pa.array(res.chi2_dof[ok]),
                "density_nll": pa.array(res.density_nll[ok]),
                "label": pa.array(chunk.label[ok].tolist() if chunk.label is not None
                                  else [None] * int(ok.sum()), pa.string()),
            }))
            if on_batch is not None and ok.any():
                good = chunk.take(ok)
                on_batch(good, ScoreResult(res.score[ok], res.chi2_dof[ok], res.density_nll[ok]))
        table = pa.concat_tables(parts) if parts else SCORED_SCHEMA.empty_table().drop_columns(
            ["reject_reason"])
        dest = output_path(out, path)
        _write_output(table, dest, _meta(trained, framework, path, shard_counts))
        merge_counts(summary.n_rejected_by_reason, shard_counts)
        summary.n_scored += table.num_rows
        summary.n_shards_scored += 1
        summary.outputs.append(dest)


def _score_ray(
    trained: TrainedModel, pending: list[tuple[Path, int]], out: Path, summary: ScoringSummary,
    batch_size: int, framework: Framework, on_batch: OnBatch | None, concurrency: int,
    object_store_limit: int, actor_cpus: float,
) -> None:
    import ray
    import ray.data

    from qso_anomaly.score.scorer import RayScorer
    from qso_anomaly.train.ray_train import ensure_ray

    ensure_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=object_store_limit)
    ctx.enable_progress_bars = False
    tmpdir = None
    model_dir: Path
    if isinstance(trained, TrainedModel):
        tmpdir = Path(tempfile.mkdtemp(prefix="qso-model-"))
        model_dir = trained.save(tmpdir / "model")
    schemas = [pq.read_schema(p) for p, _ in pending]
    cols = list(REQUIRED_COLUMNS)
    if all("label" in s.names for s in schemas):
        cols.append("label")
    expected = {str(p.resolve()): n for p, n in pending}
    by_name = {p.resolve().name: str(p.resolve()) for p, _ in pending}
    buffers: dict[str, list[pa.Table]] = {k: [] for k in expected}
    received: dict[str, int] = dict.fromkeys(expected, 0)
    try:
        ds = ray.data.read_parquet([str(p.resolve()) for p, _ in pending], columns=cols,
                                   include_paths=True, num_cpus=0.1)
        scored = ds.map_batches(
            RayScorer,
            fn_constructor_kwargs={"model_dir": str(model_dir), "framework": framework,
                                   "threads": 1},
            batch_size=batch_size,
            batch_format="pyarrow",
            concurrency=concurrency,
            num_cpus=actor_cpus,
            zero_copy_batch=True,
        )
        for raw in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            tbl: pa.Table = raw  # type: ignore[assignment]
            for key in set(tbl.column("path").to_pylist()):
                part = tbl.filter(pa.compute.equal(tbl.column("path"), key))
                full = by_name.get(Path(key).name, key)
                buffers[full].append(part)
                received[full] += part.num_rows
                if received[full] == expected[full]:
                    _finish_ray_shard(trained, framework, Path(full), buffers.pop(full), out,
                                      summary, on_batch)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _finish_ray_shard(
    trained: TrainedModel, framework: str, path: Path, parts: list[pa.Table], out: Path,
    summary: ScoringSummary, on_batch: OnBatch | None,
) -> None:
    table = pa.concat_tables(parts)
    accepted, counts = _accepted(table)
    dest = output_path(out, path)
    _write_output(accepted, dest, _meta(trained, framework, path, counts))
    merge_counts(summary.n_rejected_by_reason, counts)
    summary.n_scored += accepted.num_rows
    summary.n_shards_scored += 1
    summary.outputs.append(dest)
    if on_batch is not None and accepted.num_rows:
        n = accepted.num_rows
        ids = accepted.column("targetid").to_numpy()
        stub = SpectraBatch(ids, np.zeros(n, np.float32), np.zeros((n, 0), np.float32),
                            np.zeros((n, 0), np.float32), np.zeros((n, 0), bool))
        on_batch(stub, ScoreResult(accepted.column("score").to_numpy(),
                                   accepted.column("chi2_dof").to_numpy(),
                                   accepted.column("density_nll").to_numpy()))
