"""score_shards(): one output Parquet per input shard, resumable, bad input counted, streamed.

Resume contract: an output file appears (atomic rename) only once every row of its input
shard has been scored or rejected, so a restart skips finished shards and redoes unfinished
ones from scratch; a row is never written twice. Rejected rows are not written; their reasons
are counted in the summary and stored in the output's Parquet metadata.

Memory: neither path materialises the survey. The plain loop reads shards in
``batch_size``-row record batches; a reader thread converts and validates them ``prefetch``
batches ahead and a writer thread writes finished shards, so Arrow decoding, validation and
writing overlap the model (:func:`score_stream`); Ray actors run the same loop on whole shards.
Only the small score rows of the shard being scored and of at most two finished ones are held
(≈ 30 bytes a row).

Times are in seconds (wall clock, ``time.perf_counter``); memory limits in bytes.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qso_anomaly.data.batch import REQUIRED_COLUMNS, SpectraBatch
from qso_anomaly.data.io import check_shard
from qso_anomaly.data.validate import merge_counts, n_rejected_rows
from qso_anomaly.errors import ShardError
from qso_anomaly.models.scoring import ScoreResult
from qso_anomaly.score.config import Framework, ScoringConfig, worker_env
from qso_anomaly.score.scorer import OUTPUT_SCHEMA, Scorer, usable_cores
from qso_anomaly.train.trained import TrainedModel, as_trained

OUTPUT_SUFFIX = ".scores.parquet"
META_KEY = b"qso_anomaly.scoring"

OnBatch = Callable[[SpectraBatch, ScoreResult], None]


@dataclass
class ScoringSummary:
    """What one :func:`score_shards` call did (``to_dict`` is the JSON form in run reports).

    Attributes:
        n_scored: Spectra scored and written by this call.
        n_rejected_by_reason: Counts by reason: rejected rows, failed shards
            (``corrupt_shard``, ``missing_columns``: one per shard), masked pixels
            (``masked_pixels:<reason>``: pixels, not rows) and rows scored but flagged
            (``flagged:<reason>``).
        out_dir: Directory of the ``<shard>.scores.parquet`` outputs.
        elapsed: Wall-clock duration of the call in seconds.
        framework: ``torch`` or ``jax``.
        backend: ``local`` (plain loop) or ``ray_data``.
        n_shards_scored: Shards scored and written by this call.
        n_shards_skipped: Shards whose output already existed (resume).
        n_shards_failed: Shards that could not be read (counted, not raised).
        n_already_scored: Rows in the outputs of skipped shards.
        outputs: Output paths of scored and skipped shards.
        actors: Ray Data scorer actors (0 for the plain loop).
        threads_per_worker: PyTorch threads of the plain loop or of each actor.
    """

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
    actors: int = 0
    threads_per_worker: int = 0

    @property
    def n_rejected(self) -> int:
        """Sum of the counts by reason except ``masked_pixels:*`` and ``flagged:*``.

        That is the rejected rows, plus 1 for each shard that failed as a whole.
        """
        return n_rejected_rows(self.n_rejected_by_reason)

    @property
    def spectra_per_second(self) -> float:
        """Throughput ``n_scored / elapsed`` in spectra per second (0 when nothing was timed)."""
        return self.n_scored / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data, with ``n_rejected`` and ``spectra_per_second``.

        Returns:
            Every field by name (paths as strings) plus the two derived figures.
        """
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["outputs"] = [str(p) for p in self.outputs]
        d["n_rejected"] = self.n_rejected
        d["spectra_per_second"] = self.spectra_per_second
        return d


def output_path(out_dir: str | Path, shard: str | Path) -> Path:
    """The output file of a shard: ``out_dir/<shard name without .parquet>.scores.parquet``.

    Args:
        out_dir: Output directory.
        shard: Input shard path (only its file name is used).

    Returns:
        The output path (not created).
    """
    name = Path(shard).name
    stem = name.removesuffix(".parquet")
    return Path(out_dir) / f"{stem}{OUTPUT_SUFFIX}"


def _write_output(table: pa.Table, path: Path, meta: dict[str, Any]) -> None:
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def score_shards(
    model_dir_or_trained: TrainedModel | str | Path,
    shard_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    use_ray: bool = False,
    batch_size: int | None = None,
    framework: Framework | None = None,
    on_batch: OnBatch | None = None,
    concurrency: int | None = None,
    object_store_limit: int | None = None,
    actor_cpus: float | None = None,
    config: ScoringConfig | None = None,
) -> ScoringSummary:
    """Score every shard into ``out_dir/<shard>.scores.parquet``, resumably.

    Output rows: targetid, score, chi2_dof, density_nll, label (rejected rows are counted,
    not written; the counts also go to the file's Parquet metadata). A shard whose output
    exists is skipped (resume contract in the module docstring). ``on_batch(batch, result)``
    is called for every scored batch of accepted spectra (plain loop; with Ray, once per
    finished shard with that shard's scored rows and a batch holding only targetid).

    Args:
        model_dir_or_trained: A trained model or the path of a trained-model directory
            (loaded only when some shard needs scoring).
        shard_paths: Input Parquet shards (columns targetid, z, flux, ivar, mask, optional
            label; flux in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in flux⁻²).
        out_dir: Output directory (created if missing; with Ray, storage every node can
            write).
        use_ray: Score through a Ray Data actor pool instead of the plain loop.
        batch_size: Overrides ``config.batch_size`` (spectra per model call).
        framework: Overrides ``config.framework``.
        on_batch: Callback ``(SpectraBatch, ScoreResult) -> None``.
        concurrency: Overrides ``config.concurrency`` (Ray actors).
        object_store_limit: Overrides ``config.object_store_limit`` (bytes).
        actor_cpus: Overrides ``config.actor_cpus`` (logical CPUs per actor).
        config: Scoring settings (default :meth:`ScoringConfig.from_env`).

    Returns:
        The summary (counts, outputs, elapsed seconds, actors).

    Raises:
        ScoringConfigError: For invalid settings (including ``QSO_SCORE_*`` variables).
        ModelError: When the model directory is not a usable trained model.
    """
    cfg = config or ScoringConfig.from_env()
    cfg = cfg.with_(**{k: v for k, v in {
        "batch_size": batch_size, "framework": framework, "concurrency": concurrency,
        "object_store_limit": object_store_limit, "actor_cpus": actor_cpus}.items()
        if v is not None})
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    summary = ScoringSummary(0, counts, out, 0.0, framework=cfg.framework,
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

    if pending:
        # a JAX run reads the weights as NumPy arrays: no PyTorch import in its process
        trained = as_trained(model_dir_or_trained, torch_weights=cfg.framework != "jax")
        if use_ray:
            source = (None if isinstance(model_dir_or_trained, TrainedModel)
                      else Path(model_dir_or_trained))
            _score_ray(trained, pending, out, summary, cfg, on_batch, source)
        else:
            _score_local(trained, pending, out, summary, cfg, on_batch)
    summary.elapsed = time.perf_counter() - t0
    return summary


def _meta(spec_version: str, framework: str, source: Path, rejected: dict[str, int]) -> dict:
    return {"source": str(source), "framework": framework, "spec_version": spec_version,
            "rejected": rejected}


def _columns(path: Path) -> list[str]:
    names = pq.read_schema(path).names
    return [*REQUIRED_COLUMNS, *(["label"] if "label" in names else [])]


_END = object()


def iter_shard_batches(
    pending: Sequence[Path], batch_size: int, prefetch: int = 2,
    prepare: Callable[[pa.RecordBatch], Any] | None = None,
) -> Iterator[tuple[Path, Any]]:
    """Stream the record batches of several shards, optionally from a reader thread.

    Yields ``(shard, record batch)`` for every ``batch_size``-row batch of every shard, then
    ``(shard, None)`` when the shard is complete, or ``(shard, ShardError)`` when it cannot be
    read (the shard is abandoned). With ``prefetch > 0`` a reader thread keeps that many
    batches ahead, across shard boundaries (the next shard is read while the last batches of
    the current one are scored); at most ``prefetch + 2`` batches are in memory. Closing the
    generator stops the thread (joined for up to 10 s).

    Args:
        pending: Shard paths, read in order.
        batch_size: Rows per record batch.
        prefetch: Batches the reader thread keeps ahead (0: read in the calling thread).
        prepare: Applied to every record batch in the reader thread (conversion and
            validation, :meth:`Scorer.prepare_record_batch`); its result is yielded instead.

    Yields:
        ``(path, item)`` with item a ``pyarrow.RecordBatch`` (required columns plus label
        when present) or ``prepare``'s result for it, ``None`` (shard complete) or a
        :class:`ShardError` (reason ``corrupt_shard``; yielded, not raised).

    Raises:
        BaseException: Any other exception of the reader thread (``prepare``'s included) is
            re-raised in the consumer.
    """
    if prefetch <= 0:
        for path in pending:
            for item in _shard_items(path, batch_size):
                yield _prepared(item, prepare)
        return

    q: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def emit(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for path in pending:
                for item in _shard_items(path, batch_size):
                    if not emit(_prepared(item, prepare)):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            emit(exc)
        finally:
            emit(_END)

    thread = threading.Thread(target=run, name="qso-shard-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def _prepared(item: tuple[Path, Any], prepare: Callable[[pa.RecordBatch], Any] | None,
              ) -> tuple[Path, Any]:
    path, rb = item
    if prepare is None or not isinstance(rb, pa.RecordBatch):
        return item
    return path, prepare(rb)


def _shard_items(path: Path, batch_size: int) -> Iterator[tuple[Path, Any]]:
    """One shard's ``(path, record batch)`` items, then ``(path, None)``.

    Or ``(path, ShardError)`` when the shard turns out unreadable part-way.
    """
    try:
        reader = pq.ParquetFile(path)
        # decoded in this (reader) thread only: Arrow's own thread pool decoded the columns
        # in parallel but took 10-15 % more CPU for it, on cores the model is using
        batches = reader.iter_batches(batch_size=batch_size, columns=_columns(path),
                                      use_threads=False)
        while True:
            try:
                rb = next(batches)
            except StopIteration:
                break
            yield path, rb
    except (OSError, pa.ArrowException, ValueError) as exc:
        yield path, ShardError(f"cannot read data ({exc})", reason="corrupt_shard",
                               path=str(path))
        return
    yield path, None


def _score_local(
    trained: TrainedModel, pending: list[tuple[Path, int]], out: Path, summary: ScoringSummary,
    cfg: ScoringConfig, on_batch: OnBatch | None,
) -> None:
    scorer = Scorer(trained, config=cfg)
    summary.actors = 0
    summary.threads_per_worker = cfg.threads or usable_cores()
    score_stream(scorer, [p for p, _ in pending], out, summary, on_batch)


def score_stream(scorer: Scorer, paths: Sequence[Path], out: Path, summary: ScoringSummary,
                 on_batch: OnBatch | None = None) -> None:
    """The streamed loop shared by the plain path and every Ray actor.

    Three stages overlap: a reader thread reads ``paths`` in ``batch_size`` record batches
    and converts and validates them (:meth:`Scorer.prepare_record_batch`), ``prefetch``
    batches ahead and across shard boundaries; the calling thread scores, starting each batch
    before it collects the previous one (:meth:`Scorer.start_prepared`: with JAX, XLA computes
    batch k+1 while this thread builds batch k's rows); a writer thread
    writes each finished shard's output atomically (temporary file + rename) while the next
    shard is scored (at most one shard's output waits for it). Arrow's Parquet decoding and
    writing and most NumPy work release the GIL, so the stages run on the cores the model
    leaves idle. Memory stays bounded: ``prefetch + 2`` prepared batches, the score rows of
    the shard being scored and of at most two finished shards. An unreadable shard is counted
    under its reason and its partial rows dropped. When the call returns, every output is
    written; an error of the writer is raised here.

    Args:
        scorer: The loaded model and settings (``batch_size``, ``prefetch``).
        paths: Shards to score (outputs are not checked for here: callers skip finished
            shards).
        out: Output directory (must exist).
        summary: Updated in place (scored rows and shards, failures, reasons, outputs).
        on_batch: Callback ``(accepted spectra, their ScoreResult)`` per scored batch.
    """
    cfg = scorer.config
    parts: list[pa.Table] = []
    shard_counts: dict[str, int] = {}
    pending: Callable[[], Any] | None = None

    def finish() -> None:
        """Collect the batch in flight into its shard's rows."""
        nonlocal pending
        if pending is None:
            return
        table, c, good, res = pending()
        pending = None
        merge_counts(shard_counts, c)
        parts.append(table)
        if on_batch is not None and good is not None and res is not None and len(res):
            on_batch(good, res)

    with _ShardWriter() as writer:
        for path, item in iter_shard_batches(paths, cfg.batch_size, cfg.prefetch,
                                             prepare=scorer.prepare_record_batch):
            if not isinstance(item, ShardError) and item is not None:
                # start this batch before collecting the previous one: with JAX the model
                # computes it while this thread builds the previous batch's rows
                started = scorer.start_prepared(item)
                finish()
                pending = started
                continue
            finish()
            if isinstance(item, ShardError):
                merge_counts(summary.n_rejected_by_reason, {item.reason: 1})
                summary.n_shards_failed += 1
                parts, shard_counts = [], {}
                continue
            if item is None:  # shard complete
                table = pa.concat_tables(parts) if parts else OUTPUT_SCHEMA.empty_table()
                dest = output_path(out, path)
                writer.submit(table, dest, _meta(scorer.spec.version, cfg.framework, path,
                                                 shard_counts))
                merge_counts(summary.n_rejected_by_reason, shard_counts)
                summary.n_scored += table.num_rows
                summary.n_shards_scored += 1
                summary.outputs.append(dest)
                parts, shard_counts = [], {}
        finish()


class _ShardWriter:
    """Writes finished shards' outputs in a thread, one at a time, in submission order.

    ``submit`` blocks while one output is still waiting (so at most two are held: one being
    written, one queued) and raises the error of an earlier write; leaving the ``with`` block
    waits for every write and raises the first error (after the body's own exception, if
    any, which wins).
    """

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="qso-shard-writer", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is _END:
                return
            if self._error is None:
                try:
                    _write_output(*job)
                except BaseException as exc:  # noqa: BLE001 - raised in the scoring thread
                    self._error = exc

    def submit(self, table: pa.Table, dest: Path, meta: dict[str, Any]) -> None:
        self._raise()
        self._q.put((table, dest, meta))

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._q.put(_END)
        self._thread.join()
        if exc is None:
            self._raise()


# ---------------------------------------------------------------------- Ray Data
@dataclass(frozen=True)
class ActorPool:
    """How the Ray Data scorer pool is laid out (see :func:`actor_pool_size`).

    Attributes:
        concurrency: Number of scorer actors.
        actor_cpus: Logical CPUs each actor asks Ray for.
        num_gpus: GPUs each actor asks for (0 on CPU; fractions share a card).
        threads: PyTorch intra-op threads per actor.
    """

    concurrency: int
    actor_cpus: float
    num_gpus: float
    threads: int


def actor_pool_size(resources: dict[str, float], cfg: ScoringConfig) -> ActorPool:
    """Scorer actors from the resources Ray reports (``ray.cluster_resources()``).

    GPU (``cfg.num_gpus > 0``): ``floor(GPU / num_gpus)`` actors (``num_gpus=0.5`` puts two
    actors on each card), one CPU (its reader thread and host-side validation) and one
    intra-op thread each. CPU: one actor per core, each with one PyTorch thread and one
    logical CPU (``cfg.threads`` for more threads and fewer actors: ``floor(CPU / threads)``
    of them, each asking for as many CPUs as it runs threads) — the actors read their own
    shards, so no Ray read task needs a CPU, and threads never outnumber cores. One-thread
    actors are the default because independent pipelines keep every core busy where one
    actor's two OpenMP threads stall together whenever one of them is preempted by Ray's own
    processes: at 100,000 spectra on 2 cores, 2 × 1 thread took 21.2–23.5 s (PyTorch) and
    14.9–15.7 s (JAX) against 27.5–28.0 s and 15.4–16.6 s for 1 × 2 threads (plain loop
    24.3–25.0 s and 13.8–14.0 s; docs/benchmarks.md). ``cfg.concurrency`` /
    ``cfg.actor_cpus`` override.

    Args:
        resources: Ray's resource totals, e.g. ``{"CPU": 2.0, "GPU": 1.0}`` (logical units).
        cfg: Scoring settings (``num_gpus``, ``threads``, ``concurrency``, ``actor_cpus``).

    Returns:
        The pool layout (at least one actor).
    """
    cpus = float(resources.get("CPU", 1.0))
    if cfg.num_gpus > 0:
        gpus = float(resources.get("GPU", 0.0))
        k = cfg.concurrency or max(1, math.floor(gpus / cfg.num_gpus + 1e-9))
        return ActorPool(k, cfg.actor_cpus or 1.0, cfg.num_gpus, cfg.threads or 1)
    threads = cfg.threads or 1
    k = cfg.concurrency or max(1, int(cpus) // threads)
    actor_cpus = cfg.actor_cpus or min(float(threads), cpus / k)
    return ActorPool(k, actor_cpus, 0.0, threads)


class RayShardScorer:
    """Ray Data actor that scores whole shards (one path per call) with :func:`score_stream`.

    It writes the outputs itself, so spectra never enter the object store and only one small
    summary row per shard travels back to the driver. ``out_dir`` must be storage every node
    can write (local disk on one node; a shared volume on a cluster).

    Args:
        model_dir: Path of a trained-model directory, readable from the actor's node.
        out_dir: Output directory (must exist).
        config: :class:`ScoringConfig` fields by name.

    Raises:
        ScoringConfigError: When ``config`` holds an out-of-range value.
        ModelError: When ``model_dir`` is not a usable trained model.
    """

    def __init__(self, model_dir: str, out_dir: str, config: dict[str, Any]) -> None:
        self.config = ScoringConfig(**config)
        self.scorer = Scorer(model_dir, config=self.config)
        self.out = Path(out_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score the shards named in a batch, in one :func:`score_stream` call.

        One call for all of them, so the reader thread reads and validates the next shard
        while the current one scores, as in the plain loop (one call per shard left that
        overlap out: Ray/plain went from 1.07 to 1.19-1.22 for PyTorch once the plain loop
        gained it, docs/benchmarks.md).

        Args:
            batch: ``{"path": (S,) shard paths}`` (Ray Data numpy batch format).

        Returns:
            One row per shard: ``path``, ``n_scored`` (rows written), ``failed`` (1 when the
            shard left no output) and ``counts`` (JSON of the counts by reason of the whole
            batch on its first row, ``{}`` on the others), each (S,).
        """
        paths = [Path(str(p)) for p in batch["path"]]
        s = ScoringSummary(0, {}, self.out, 0.0)
        score_stream(self.scorer, paths, self.out, s)
        rows: dict[str, list[Any]] = {"path": [], "n_scored": [], "failed": [], "counts": []}
        for i, path in enumerate(paths):
            dest = output_path(self.out, path)
            written = dest.exists()
            rows["path"].append(str(path))
            rows["n_scored"].append(pq.ParquetFile(dest).metadata.num_rows if written else 0)
            rows["failed"].append(0 if written else 1)
            rows["counts"].append(json.dumps(s.n_rejected_by_reason if i == 0 else {}))
        return {k: np.asarray(v) for k, v in rows.items()}


def shards_per_call(n_shards: int, actors: int) -> int:
    """Shards one Ray scorer actor streams per call: ``ceil(n / (4 · actors))``, 1 to 8.

    Several per call keep the read-ahead across shard boundaries; about four calls per actor
    keep the load balanced and the driver's progress (one result row per shard, sent when the
    call ends) regular; at most 8 bounds what one interrupted call can leave unfinished.

    Args:
        n_shards: Shards still to score.
        actors: Scorer actors in the pool.

    Returns:
        Shards per ``map_batches`` batch (≥ 1).
    """
    return max(1, min(8, math.ceil(n_shards / (4 * max(1, actors)))))


def _score_ray(
    trained: TrainedModel, pending: list[tuple[Path, int]], out: Path, summary: ScoringSummary,
    cfg: ScoringConfig, on_batch: OnBatch | None, source: Path | None = None,
) -> None:
    """Ray Data over shard paths: ``from_items(paths) → map_batches(RayShardScorer)``.

    The actors load the model from ``source`` (the directory ``trained`` was loaded from);
    without one, ``trained`` is saved to a temporary directory first.

    A fixed pool of ``k`` actors (``ActorPoolStrategy(size=k)``; Ray 2.51 deprecated
    ``concurrency=`` for it); results stream back per finished shard in completion order.
    """
    import ray
    import ray.data

    from qso_anomaly.train.ray_train import ensure_ray

    ensure_ray()
    pool = actor_pool_size(ray.cluster_resources(), cfg)
    summary.actors, summary.threads_per_worker = pool.concurrency, pool.threads
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=cfg.object_store_limit)
    ctx.enable_progress_bars = False
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    tmpdir = None
    if source is None:  # an in-memory model: the actors load it from a saved copy
        tmpdir = Path(tempfile.mkdtemp(prefix="qso-model-"))
        source = trained.save(tmpdir / "model")
    model_dir = Path(source).resolve()
    # Workers of a Ray started by this process inherit its environment, and each actor sets
    # the scoring variables it lacks itself before importing a framework (``apply_thread_env``
    # at import, :func:`~qso_anomaly.score.scorer.prepare_jax_env` in ``Scorer``), as the plain
    # loop does. A runtime_env would make Ray start each actor's worker through its
    # runtime-env agent (0.7 s more per job measured on 2 idle cores, tens of seconds loaded),
    # so it is used only for a remote cluster, whose workers do not share this environment.
    env_vars = worker_env(cfg) if os.environ.get("RAY_ADDRESS") else {}
    actor_cfg = cfg.with_(threads=pool.threads).to_dict()
    try:
        paths = [str(p.resolve()) for p, _ in pending]
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
        kwargs: dict[str, Any] = {}
        if pool.num_gpus:
            kwargs["num_gpus"] = pool.num_gpus
        if env_vars:
            kwargs["runtime_env"] = {"env_vars": env_vars}
        done = ds.map_batches(
            RayShardScorer,
            fn_constructor_kwargs={"model_dir": str(model_dir), "out_dir": str(out.resolve()),
                                   "config": actor_cfg},
            batch_size=shards_per_call(len(paths), pool.concurrency),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool.concurrency),
            num_cpus=pool.actor_cpus,
            **kwargs,
        )
        for row in done.iter_rows():
            path = Path(str(row["path"]))
            counts = json.loads(str(row["counts"]))
            merge_counts(summary.n_rejected_by_reason, counts)
            if int(row["failed"]):
                summary.n_shards_failed += int(row["failed"])
                continue
            dest = output_path(out, path)
            summary.n_scored += int(row["n_scored"])
            summary.n_shards_scored += 1
            summary.outputs.append(dest)
            if on_batch is not None and int(row["n_scored"]):
                _replay(dest, on_batch)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _replay(dest: Path, on_batch: OnBatch) -> None:
    """``on_batch`` for a shard an actor finished.

    Passes its scored rows and a batch holding only targetid and ``meta["stratum"]`` (the
    spectra stayed in the actor).
    """
    accepted = pq.read_table(dest)
    n = accepted.num_rows
    ids = accepted.column("targetid").to_numpy()
    stub = SpectraBatch(ids, np.zeros(n, np.float32), np.zeros((n, 0), np.float32),
                        np.zeros((n, 0), np.float32), np.zeros((n, 0), bool),
                        meta=({"stratum": accepted.column("stratum").to_numpy()}
                              if "stratum" in accepted.column_names else {}))
    on_batch(stub, ScoreResult(accepted.column("score").to_numpy(),
                               accepted.column("chi2_dof").to_numpy(),
                               accepted.column("density_nll").to_numpy()))
