"""Scorer: a loaded model (torch or JAX) that turns raw rows into scored rows.

All model calls go through :meth:`Scorer.score_batch`: PyTorch via
:func:`qso_anomaly.models.torch_model.score_parts_torch`, JAX via
:func:`qso_anomaly.models.jax_model.score_jax` (batches padded to one fixed shape, so XLA
compiles once per process).

Rows carry flux and ivar as lists of P float32 values on the model's grid (flux in 1e-17 erg
s⁻¹ cm⁻² Å⁻¹, ivar in flux⁻², mask True = bad pixel); every row passes the data policy
(:mod:`qso_anomaly.data.policy`) before it is scored, and rejected rows are counted by reason,
never raised. Scores are dimensionless (higher = more anomalous), ``chi2_dof`` is χ² per valid
pixel, ``density_nll`` is −log p(latent) in nats. ``stratum`` is the coverage stratum of the row
(:func:`qso_anomaly.train.mondrian.coverage_strata` of its valid pixels; -1 when the row has
no spectrum on the grid), which the flag decision is calibrated by.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.policy import DataPolicy
from qso_anomaly.data.validate import clean_rows, merge_counts
from qso_anomaly.errors import ModelError
from qso_anomaly.models.scoring import ScoreResult
from qso_anomaly.score.columns import record_batch_to_spectra
from qso_anomaly.score.config import Framework, ScoringConfig
from qso_anomaly.train.mondrian import NO_STRATUM, observed_strata
from qso_anomaly.train.trained import TrainedModel, as_trained

SCORED_SCHEMA = pa.schema([
    ("targetid", pa.int64()),
    ("score", pa.float32()),
    ("chi2_dof", pa.float32()),
    ("density_nll", pa.float32()),
    ("label", pa.string()),
    ("reject_reason", pa.string()),
    ("stratum", pa.int16()),
])
#: What :meth:`Scorer.score_prepared` returns: (accepted rows in :data:`OUTPUT_SCHEMA`, counts
#: by reason, the accepted spectra as read, their scores); the last two None for no rows.
ScoredRows = tuple[pa.Table, dict[str, int], SpectraBatch | None, ScoreResult | None]
OUTPUT_SCHEMA = SCORED_SCHEMA.remove(SCORED_SCHEMA.get_field_index("reject_reason"))


def usable_cores() -> int:
    """CPU cores this process may run on (affinity mask, else ``os.cpu_count()``).

    Returns:
        Core count, at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def prepare_jax_env(config: ScoringConfig) -> None:
    """Set the XLA allocator variables before JAX is first imported.

    With ``jax_preallocate=False`` JAX allocates on demand instead of taking 75 % of the GPU
    (docs.jax.dev "GPU memory allocation"); on CPU JAX stays off any GPU it might find.
    Variables already set in ``os.environ`` are kept.

    Args:
        config: The scoring settings (``jax_preallocate``, ``device``).
    """
    if not config.jax_preallocate:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if config.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def enable_jax_compilation_cache(config: ScoringConfig) -> Path | None:
    """Point JAX's persistent compilation cache at ``config.jax_cache_path()``.

    A cache directory already set (``JAX_COMPILATION_CACHE_DIR`` /
    ``jax_compilation_cache_dir``) is kept. Every compilation is cached (JAX's default skips
    those under 1 s; the CI model's scoring function compiles in 0.8-1.2 s on CPU). Must run
    before the first compile.

    Args:
        config: The scoring settings (``jax_cache_path()``).

    Returns:
        The cache directory in use, or None when the cache is off or cannot be created (then
        every process compiles, as before).
    """
    import jax

    current = getattr(jax.config, "jax_compilation_cache_dir", None)
    if current:
        return Path(current)
    path = config.jax_cache_path()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"[qso-anomaly] JAX compilation cache off: cannot create {path} ({exc})",
              file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


@dataclass
class PreparedRows:
    """Raw rows converted and validated, not yet scored (:meth:`Scorer.prepare_record_batch`).

    Attributes:
        batch: The M rows with the grid length, as read.
        cleaned: Their policy-masked copy (None when M = 0).
        reasons: Rejection reason per row (M,) (``""`` = to be scored).
        counts: Counts by reason (wrong grid length, policy rejections, masked pixels).
        strata: Coverage stratum per row (M,) int16 (:meth:`Scorer.strata`; computed with
            the rest, in the reader thread, so it overlaps the model).
    """

    batch: SpectraBatch
    cleaned: SpectraBatch | None
    reasons: np.ndarray
    counts: dict[str, int]
    strata: np.ndarray


class Scorer:
    """Holds one model in one framework on one device.

    ``score_rows``/``score_record_batch``/``score_table`` never raise on bad rows: they are
    rejected and counted by reason. Building a Scorer loads the model, sets PyTorch's thread
    count (``threads`` or every usable core) and, for JAX, the XLA variables
    (:func:`prepare_jax_env`).

    Args:
        model: A trained model, or the path of a trained-model directory.
        framework: ``torch`` or ``jax``; overrides ``config.framework``.
        threads: PyTorch intra-op threads; overrides ``config.threads``.
        config: Scoring settings (default :class:`ScoringConfig` defaults).

    Raises:
        ModelError: When ``model`` is not a trained-model directory, its spec is not
            compatible with this release, or the framework is unknown.
        ScoringConfigError: When ``framework`` or ``threads`` is out of range.
    """

    def __init__(
        self, model: TrainedModel | str | Path, framework: Framework | None = None,
        threads: int | None = None, *, config: ScoringConfig | None = None,
    ) -> None:
        cfg = config or ScoringConfig()
        if framework is not None:
            cfg = cfg.with_(framework=framework)
        if threads is not None:
            cfg = cfg.with_(threads=threads)
        self.config = cfg
        # a JAX scorer reads the weights as NumPy arrays: no PyTorch import in its process
        tm = as_trained(model, torch_weights=cfg.framework != "jax")
        self.spec, self.grid, self.framework = tm.spec, tm.grid, cfg.framework
        self.policy = DataPolicy.for_spec(tm.spec)
        self._staging: list[Any] = []
        if cfg.framework == "torch":
            import torch

            torch.set_num_threads(cfg.threads or usable_cores())
            self.device = torch.device("cuda:0" if cfg.device == "cuda" else "cpu")
            if cfg.device == "cuda" and cfg.precision == "tf32":
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
            self.model: Any = tm.torch_model().to(self.device).eval()
        elif cfg.framework == "jax":
            prepare_jax_env(cfg)
            import jax

            self.jax_cache = enable_jax_compilation_cache(cfg)
            if cfg.device == "cuda" and cfg.precision == "float32":
                # XLA uses TF32 for float32 matmul/conv on Ampere+ unless asked not to
                jax.config.update("jax_default_matmul_precision", "highest")
            self.params = tm.jax_params()
            self.jax_device = jax.devices("gpu" if cfg.device == "cuda" else "cpu")[0]
        else:
            raise ModelError(f"unknown framework {cfg.framework!r}; use 'torch' or 'jax'")

    # ------------------------------------------------------------------ model calls
    def score_batch(self, batch: SpectraBatch) -> ScoreResult:
        """Score a clean batch (N rows, any N) in chunks of ``config.batch_size``.

        The batch is not validated: use :meth:`score_rows` for raw rows.

        Args:
            batch: N spectra on the model's grid: flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹,
                ivar (N, P) in flux⁻², z (N,).

        Returns:
            Scores, χ²/dof and −log p(latent), each (N,) float32, in input order.
        """
        b = self.config.batch_size
        if len(batch) <= b:
            return self._score_chunk(batch.flux, batch.ivar, batch.z)
        if self.framework != "jax":
            return ScoreResult.concat([
                self._score_chunk(batch.flux[s:s + b], batch.ivar[s:s + b], batch.z[s:s + b])
                for s in range(0, len(batch), b)])
        # JAX: the next chunk is dispatched before the previous one is collected, so XLA's
        # threads are not idle while this thread converts a result
        parts: list[ScoreResult] = []
        pending: Callable[[], ScoreResult] | None = None
        for s in range(0, len(batch), b):
            started = self._dispatch_jax(batch.flux[s:s + b], batch.ivar[s:s + b],
                                         batch.z[s:s + b])
            if pending is not None:
                parts.append(pending())
            pending = started
        if pending is not None:
            parts.append(pending())
        return ScoreResult.concat(parts)

    def _score_chunk(self, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> ScoreResult:
        if self.framework == "torch":
            return self._score_torch(flux, ivar, z)
        return self._score_jax(flux, ivar, z)

    def _score_torch(self, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> ScoreResult:
        import torch

        from qso_anomaly.models.torch_model import score_parts_torch

        arrays = [a if a.flags.c_contiguous and a.flags.writeable else np.array(a)
                  for a in (flux, ivar, z)]
        if self.device.type == "cuda":
            tensors = [self._to_device(i, a) for i, a in enumerate(arrays)]
        else:
            tensors = [torch.from_numpy(a) for a in arrays]
        autocast: Any = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" and self.config.precision == "bfloat16"
                         else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            sc, c2, nl = score_parts_torch(self.model, *tensors)
        return ScoreResult(*(t.float().cpu().numpy() for t in (sc, c2, nl)))

    def _to_device(self, slot: int, a: np.ndarray) -> Any:
        """Host→device copy through a reusable page-locked staging buffer (``pin_memory``).

        The copy is asynchronous, and the buffer is reused only after the results of the
        previous chunk came back (which orders it after that chunk's copy).
        """
        import torch

        src = torch.from_numpy(a)
        if not self.config.pin_memory:
            return src.to(self.device)
        while len(self._staging) <= slot:
            self._staging.append(None)
        buf = self._staging[slot]
        if buf is None or buf.numel() < src.numel():
            buf = torch.empty(max(src.numel(), self.config.batch_size * int(np.prod(a.shape[1:]))),
                              dtype=src.dtype, pin_memory=True)
            self._staging[slot] = buf
        view = buf[: src.numel()].view(src.shape)
        view.copy_(src)
        return view.to(self.device, non_blocking=True)

    def _score_jax(self, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray) -> ScoreResult:
        return self._dispatch_jax(flux, ivar, z)()

    def _dispatch_jax(self, flux: np.ndarray, ivar: np.ndarray,
                      z: np.ndarray) -> Callable[[], ScoreResult]:
        """Start one JAX call of at most ``batch_size`` rows.

        The result comes from calling what this returns
        (:func:`qso_anomaly.models.jax_model.score_jax_async`).
        """
        import jax

        from qso_anomaly.models.jax_model import score_jax_async

        n, b = len(z), self.config.batch_size
        pad = b - n
        if pad > 0:  # one fixed shape: XLA compiles once
            flux = np.pad(flux, ((0, pad), (0, 0)))
            ivar = np.pad(ivar, ((0, pad), (0, 0)), constant_values=1.0)
            z = np.pad(z, (0, pad), constant_values=1.0)
        with jax.default_device(self.jax_device):
            wait = score_jax_async(self.params, self.spec, self.grid, flux, ivar, z)

        def result() -> ScoreResult:
            res = wait()
            return ScoreResult(res.score[:n], res.chi2_dof[:n], res.density_nll[:n])

        return result

    # ------------------------------------------------------------------ rows and tables
    def score_rows(self, batch: SpectraBatch) -> tuple[ScoreResult, np.ndarray, dict[str, int]]:
        """Validate every row with the data policy and score the accepted ones.

        Args:
            batch: N raw spectra on the model's grid (flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹,
                ivar (N, P) in flux⁻², mask (N, P), z (N,)).

        Returns:
            ``(result, reasons, counts)``: scores (N,) float32 with NaN for rejected rows; the
            rejection reason per row (N,) (``""`` = scored; names in
            :data:`qso_anomaly.data.policy.ROW_REASONS`); counts by reason (rows, and masked
            pixels under ``masked_pixels:<reason>``).
        """
        cleaned, reasons, counts = clean_rows(batch, policy=self.policy)
        res, reasons = self._score_cleaned(cleaned, reasons)
        return res, reasons, counts

    def _score_cleaned(self, cleaned: SpectraBatch,
                       reasons: np.ndarray) -> tuple[ScoreResult, np.ndarray]:
        """Score the accepted rows (reason ``""``) of a policy-masked batch; NaN elsewhere."""
        return self._dispatch_cleaned(cleaned, reasons)()

    def _dispatch_cleaned(self, cleaned: SpectraBatch, reasons: np.ndarray,
                          ) -> Callable[[], tuple[ScoreResult, np.ndarray]]:
        """Start :meth:`_score_cleaned`; calling what this returns gives its value.

        A JAX batch of at most ``batch_size`` accepted rows is dispatched without waiting;
        PyTorch (eager) and longer batches are scored here.
        """
        n = len(cleaned)
        ok = reasons == ""
        pending: Callable[[], ScoreResult] | None = None
        done: ScoreResult | None = None
        if ok.any():
            sub = cleaned if ok.all() else cleaned.take(ok)
            if self.framework == "jax" and len(sub) <= self.config.batch_size:
                pending = self._dispatch_jax(sub.flux, sub.ivar, sub.z)
            else:
                done = self.score_batch(sub)

        def result() -> tuple[ScoreResult, np.ndarray]:
            out = ScoreResult(np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32),
                              np.full(n, np.nan, np.float32))
            res = pending() if pending is not None else done
            if res is not None:
                out.score[ok], out.chi2_dof[ok], out.density_nll[ok] = (
                    res.score, res.chi2_dof, res.density_nll)
            return out, reasons

        return result

    def strata(self, batch: SpectraBatch) -> np.ndarray:
        """Coverage stratum codes of raw rows.

        A pixel counts as observed when the data policy keeps it: mask off, flux and ivar
        finite, ivar above :data:`qso_anomaly.data.policy.IVAR_FLOOR` (the pixels left with
        ivar > 0 after :func:`qso_anomaly.data.policy.apply_policy`, as in calibration).

        Args:
            batch: N raw spectra on the model's grid (ivar (N, P) in flux⁻², mask (N, P)).

        Returns:
            Codes (N,) int16 (:func:`qso_anomaly.train.mondrian.coverage_strata`).
        """
        cleaned, _, _ = clean_rows(batch, policy=self.policy)
        return self._cleaned_strata(cleaned)

    def _cleaned_strata(self, cleaned: SpectraBatch) -> np.ndarray:
        """Strata of policy-cleaned rows: their ivar is > 0 exactly where observed."""
        return observed_strata(cleaned.ivar > 0, self.grid.wave)

    def score_record_batch(
        self, data: pa.RecordBatch | pa.Table,
    ) -> tuple[pa.Table, dict[str, int], SpectraBatch | None, ScoreResult | None]:
        """Score raw shard rows; rejected rows are counted, not kept.

        Args:
            data: N raw rows (columns targetid, z, flux, ivar, mask, optional label; any list
                layout, see :func:`qso_anomaly.score.columns.record_batch_to_spectra`).

        Returns:
            ``(table, counts, clean, result)``: the M accepted rows in :data:`OUTPUT_SCHEMA`
            (targetid, score, chi2_dof, density_nll, label, stratum); counts by reason (wrong
            grid length and policy rejections); the M accepted spectra as read (the policy's
            pixel masking is not applied to this copy; their strata in ``meta["stratum"]``) and
            their scores, for ``on_batch`` callbacks (both ``None`` when no row has the grid
            length).

        Raises:
            KeyError: When a required column is missing (shards are checked first with
                :func:`qso_anomaly.data.io.check_shard`).
            DataError: Likewise, on the slow conversion path.
        """
        return self.score_prepared(self.prepare_record_batch(data))

    def prepare_record_batch(self, data: pa.RecordBatch | pa.Table) -> PreparedRows:
        """The model-free half of :meth:`score_record_batch`: convert and validate raw rows.

        Thread-safe (NumPy and Arrow only): the plain loop runs it in its reader thread, so it
        overlaps the model (:func:`qso_anomaly.score.shards.score_stream`).

        Args:
            data: N raw rows (see :meth:`score_record_batch`).

        Returns:
            The rows with the grid length, their policy-masked copy, the rejection reason per
            row and the counts by reason, for :meth:`score_prepared`.

        Raises:
            KeyError: When a required column is missing.
            DataError: Likewise, on the slow conversion path.
        """
        batch, _, counts = record_batch_to_spectra(data, self.grid.npix)
        if len(batch) == 0:
            return PreparedRows(batch, None, np.zeros(0, dtype=object), counts,
                                np.zeros(0, np.int16))
        cleaned, reasons, c = clean_rows(batch, policy=self.policy)
        merge_counts(counts, c)
        return PreparedRows(batch, cleaned, reasons, counts, self._cleaned_strata(cleaned))

    def score_prepared(self, prepared: PreparedRows) -> ScoredRows:
        """The model half of :meth:`score_record_batch` (same return value).

        Args:
            prepared: From :meth:`prepare_record_batch`.

        Returns:
            As :meth:`score_record_batch`.
        """
        return self.start_prepared(prepared)()

    def start_prepared(self, prepared: PreparedRows) -> Callable[[], ScoredRows]:
        """Start :meth:`score_prepared`: the model call now, the rows when asked.

        A loop overlaps its own work with the model this way: this starts the model call
        (JAX: dispatched, not waited for; PyTorch: computed here) and returns a function that
        waits for it and builds the rows.

        Args:
            prepared: From :meth:`prepare_record_batch`.

        Returns:
            A function of no arguments returning :meth:`score_prepared`'s value; call it once,
            before starting more than one further batch.
        """
        if prepared.cleaned is None:
            counts = prepared.counts
            return lambda: (OUTPUT_SCHEMA.empty_table(), counts, None, None)
        wait = self._dispatch_cleaned(prepared.cleaned, prepared.reasons)
        return lambda: self._scored_rows(prepared, *wait())

    def _scored_rows(self, prepared: PreparedRows, res: ScoreResult,
                     reasons: np.ndarray) -> ScoredRows:
        batch, counts = prepared.batch, prepared.counts
        ok = reasons == ""
        keep = ok if not ok.all() else slice(None)
        label = (pa.array(batch.label[keep], pa.string()) if batch.label is not None
                 else pa.nulls(int(ok.sum()), pa.string()))
        strata = prepared.strata[keep]
        table = pa.Table.from_arrays(
            [pa.array(batch.targetid[keep]), pa.array(res.score[keep]),
             pa.array(res.chi2_dof[keep]), pa.array(res.density_nll[keep]), label,
             pa.array(strata, pa.int16())],
            schema=OUTPUT_SCHEMA)
        good = ScoreResult(res.score[keep], res.chi2_dof[keep], res.density_nll[keep])
        accepted = batch.take(ok) if not ok.all() else batch
        return table, counts, accepted.with_arrays(meta={**accepted.meta, "stratum": strata}), good

    def score_table(self, table: pa.Table) -> pa.Table:
        """Score raw rows into one output row per input row (the Ray Data row contract).

        Args:
            table: N raw rows (columns targetid, z, flux, ivar, mask, optional label and
                path; any list layout).

        Returns:
            N rows in :data:`SCORED_SCHEMA` (targetid, score, chi2_dof, density_nll, label,
            reject_reason, stratum) plus ``path`` when the input has it; rejected rows have NaN scores
            and a non-empty ``reject_reason``.

        Raises:
            KeyError: When a required column is missing.
            DataError: Likewise, on the slow conversion path.
        """
        n = table.num_rows
        batch, idx, _ = record_batch_to_spectra(table, self.grid.npix)
        reasons = np.full(n, "wrong_grid_length", dtype=object)
        score = np.full(n, np.nan, np.float32)
        chi2 = np.full(n, np.nan, np.float32)
        nll = np.full(n, np.nan, np.float32)
        strata = np.full(n, NO_STRATUM, np.int16)
        if idx.size:
            cleaned, r, _ = clean_rows(batch, policy=self.policy)
            res, r = self._score_cleaned(cleaned, r)
            score[idx], chi2[idx], nll[idx] = res.score, res.chi2_dof, res.density_nll
            reasons[idx] = r
            strata[idx] = self._cleaned_strata(cleaned)
        label = (table.column("label") if "label" in table.column_names
                 else pa.nulls(n, pa.string()))
        cols: dict[str, Any] = {
            "targetid": table.column("targetid").cast(pa.int64()),
            "score": pa.array(score), "chi2_dof": pa.array(chi2), "density_nll": pa.array(nll),
            "label": label, "reject_reason": pa.array(reasons.astype(str), pa.string()),
            "stratum": pa.array(strata, pa.int16()),
        }
        if "path" in table.column_names:
            cols["path"] = table.column("path")
        return pa.table(cols)


class RayScorer:
    """Callable class for ``Dataset.map_batches`` over spectra rows.

    One model per actor, Arrow batches in, small score tables out: the spectra never travel
    back to the driver (Ray Data batch inference with a callable class, docs.ray.io
    ``map_batches``).

    Args:
        model_dir: Path of a trained-model directory, readable from the actor's node.
        framework: ``torch`` or ``jax``.
        threads: PyTorch intra-op threads per actor.
        config: :class:`ScoringConfig` fields by name (default settings when ``None``).

    Raises:
        ModelError: As :class:`Scorer`.
        ScoringConfigError: When ``config`` holds an out-of-range value.
    """

    def __init__(self, model_dir: str, framework: Framework = "torch", threads: int = 1,
                 config: dict[str, Any] | None = None) -> None:
        cfg = ScoringConfig(**config) if config else ScoringConfig()
        self.scorer = Scorer(model_dir, framework, threads=threads, config=cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        """Score one batch of rows (see :meth:`Scorer.score_table`).

        Args:
            table: N raw rows.

        Returns:
            N rows in :data:`SCORED_SCHEMA`.
        """
        return self.scorer.score_table(table)
