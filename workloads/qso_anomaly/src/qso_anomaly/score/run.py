"""The scoring step of a run: score shards with the Prometheus exporter attached, read back.

:func:`score_run` scores Parquet shards (:func:`qso_anomaly.score.score_shards`) with a
:class:`~qso_anomaly.metrics.ScoringMetrics` observer and returns a :class:`ScoredRun`, the
scores joined with the input's redshift, S/N and labels; :func:`load_scored` rebuilds one from
files written earlier (``qso-anomaly explain`` / ``report``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.errors import DataError

if TYPE_CHECKING:
    from qso_anomaly.metrics import ScoringMetrics
    from qso_anomaly.train.mondrian import MondrianCalibration
    from qso_anomaly.train.trained import TrainedModel

#: Environment variable with the git commit of the deployed workload (``anomaly_model_info``).
GIT_SHA_ENV = "QSO_ANOMALY_GIT_SHA"


@dataclass
class ScoredRun:
    """What the scoring step produced, joined with the input's z / S/N / labels.

    Attributes:
        scores_dir: Directory of the ``*.scores.parquet`` outputs.
        targetid: DESI TARGETIDs of the scored spectra, shape ``(N,)``.
        score: Anomaly scores (standardised, higher = more unusual), shape ``(N,)``.
        label: Injected class per spectrum (``"normal"`` or a class name), shape ``(N,)``;
            ``None`` for unlabelled (real) input.
        z: Redshifts, shape ``(N,)``.
        snr: Median S/N per pixel, shape ``(N,)``, or ``None`` when the input has none.
        reference: The model's calibration scores (drift reference), shape ``(M,)``.
        flag_threshold: Pooled conformal threshold of the unmasked held-out normals (what the
            report's histogram marks); the decision itself is per coverage stratum.
        metrics: The run's Prometheus metrics; ``None`` when read back from files.
        drift: Score drift against the reference (:meth:`ScoreDrift.to_dict`) or ``None``.
        spectra_per_second: Scoring throughput (NaN when read back from files).
        rejected: Spectra not scored (and masked pixels) by the scorer, counted by reason.
        rejected_on_read: Spectra rejected (and pixels masked) by the data policy while the
            input was read (DESI files, :func:`qso_anomaly.data.inputs.prepare_input`).
        stratum: Coverage stratum code per spectrum, shape ``(N,)``
            (:func:`qso_anomaly.train.mondrian.coverage_strata`); ``None`` for outputs written
            before the column existed (decided against the pooled set).
        p_value: Conformal p-value per spectrum within its stratum, shape ``(N,)``; ``None``
            when no calibration was given (then :attr:`flag_threshold` decides).
        level: Calibration level used per spectrum (index into
            :data:`qso_anomaly.train.mondrian.LEVELS`), shape ``(N,)``, or ``None``.
        flag_alpha: The level α of the decision ``p ≤ α``.
    """

    scores_dir: Path
    targetid: NDArray[np.int64]
    score: NDArray[np.float64]
    label: NDArray[np.str_] | None
    z: NDArray[np.floating[Any]]
    snr: NDArray[np.floating[Any]] | None
    reference: NDArray[np.float64]
    flag_threshold: float
    metrics: ScoringMetrics | None
    drift: dict[str, Any] | None
    spectra_per_second: float
    rejected: dict[str, int]
    rejected_on_read: dict[str, int] = field(default_factory=dict)
    stratum: NDArray[np.int16] | None = None
    p_value: NDArray[np.float64] | None = None
    level: NDArray[np.int8] | None = None
    flag_alpha: float = 0.01

    @property
    def n(self) -> int:
        """Number of scored spectra."""
        return int(self.score.size)

    @property
    def flagged(self) -> NDArray[np.bool_]:
        """Flag per spectrum, shape ``(N,)``.

        ``p ≤ flag_alpha`` within the spectrum's coverage stratum, or (without p-values)
        ``score > flag_threshold``.
        """
        if self.p_value is not None:
            return np.asarray(np.nan_to_num(self.p_value, nan=2.0) <= self.flag_alpha)
        return np.asarray(self.score > self.flag_threshold)

    @property
    def n_flagged(self) -> int:
        """Number of flagged spectra (:attr:`flagged`)."""
        return int(np.sum(self.flagged))

    def flag_summary(self) -> dict[str, Any]:
        """Flags by coverage stratum and the calibration level each decision used.

        Returns:
            ``{"alpha", "levels": {stratum|cameras|pooled: n} or None, "strata": [{code,
            name, n, n_flagged}]}`` (JSON-able).
        """
        from qso_anomaly.train.mondrian import NO_STRATUM, level_counts, stratum_name

        st = (np.full(self.n, NO_STRATUM, np.int16) if self.stratum is None
              else np.asarray(self.stratum))
        flagged = self.flagged
        rows = [{"code": int(c), "name": stratum_name(int(c)), "n": int(np.sum(st == c)),
                 "n_flagged": int(np.sum(flagged[st == c]))} for c in np.unique(st)]
        return {"alpha": self.flag_alpha,
                "levels": level_counts(self.level) if self.level is not None else None,
                "strata": rows}

    def require_metrics(self) -> ScoringMetrics:
        """The run's Prometheus metrics.

        Returns:
            The :class:`~qso_anomaly.metrics.ScoringMetrics` of the scoring step.

        Raises:
            DataError: The run was read back from files and has no live metrics.
        """
        if self.metrics is None:
            raise DataError(f"scores under {self.scores_dir} were read back from files and have"
                            " no metrics", hint="score with score_run to get live metrics")
        return self.metrics


def shards_digest(paths: Sequence[str | Path]) -> str:
    """Short content hash of input files (the ``data_hash`` label of ``anomaly_model_info``).

    Args:
        paths: Input shard files.

    Returns:
        The first 12 hex digits of the combined sha256 of the files.

    Raises:
        OSError: A file cannot be read.
    """
    from qso_anomaly.registry.tracking import combined_hash, hash_files

    return combined_hash(hash_files([Path(p) for p in paths]))[:12]


def score_run(
    trained: TrainedModel,
    shards: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model_name: str,
    version: str,
    flag_quantile: float,
    framework: Literal["torch", "jax"] = "torch",
    use_ray: bool = False,
    batch_size: int | None = None,
    metrics_port: int | None = None,
    input_counts: Mapping[str, int] | None = None,
    log: Callable[[str], None] | None = None,
) -> ScoredRun:
    """Score Parquet shards with the metrics exporter attached and join the inputs back.

    A spectrum is flagged when its conformal p-value against the model's held-out calibration
    scores of its own coverage stratum is ≤ ``1 − flag_quantile`` (Mondrian conformal, Vovk et
    al. 2005 §4.5; :mod:`qso_anomaly.train.mondrian`; a model without strata decides against
    its pooled reference scores).

    Args:
        trained: The model.
        shards: Parquet shards on the model's grid (flux in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in
            flux⁻², wavelength in Å).
        out_dir: Run directory; scores go to ``out_dir/scores/*.scores.parquet``.
        model_name: Registered model name (metric label ``model``).
        version: Model version (metric label ``version``).
        flag_quantile: Calibration quantile of the flag threshold, e.g. 0.99.
        framework: ``"torch"`` or ``"jax"`` scoring.
        use_ray: Score with Ray Data (connect first, e.g. with
            :func:`qso_anomaly.train.steps.connect_ray`; otherwise a local Ray is started).
        batch_size: Spectra per scoring batch; None leaves it to ``QSO_SCORE_BATCH_SIZE``
            (else 256, :class:`~qso_anomaly.score.ScoringConfig`).
        metrics_port: Serve ``/metrics`` on 127.0.0.1 at this port while scoring (0: any free
            port; ``None``: do not serve).
        input_counts: Spectra rejected and pixels masked while the input was read, by reason
            (:attr:`ScoringInput.rejected_on_read`); counted in the metrics
            (``anomaly_input_rejected_total``, ``anomaly_input_masked_pixels_total``) and kept
            in :attr:`ScoredRun.rejected_on_read`.
        log: Progress messages (default: none).

    Returns:
        The scored run with live metrics, drift against the reference, throughput in spectra
        per second and rejection counts.

    Raises:
        ScoringConfigError: The scoring settings (``QSO_SCORE_*``) are invalid.
        DataError: Nothing was scored (no readable shard).
    """
    from qso_anomaly.metrics import BatchObserver, ScoringMetrics
    from qso_anomaly.score.shards import score_shards
    from qso_anomaly.train.calibrate import conformal_threshold

    reference = np.asarray(trained.reference_scores, dtype=np.float64)
    alpha = 1.0 - flag_quantile
    threshold = conformal_threshold(reference, alpha)
    calibration = trained.flag_calibration()
    metrics = ScoringMetrics(model=model_name, version=version, framework=framework,
                             git_sha=os.environ.get(GIT_SHA_ENV, "unknown"),
                             data_hash=shards_digest(shards),
                             reference_scores=reference if reference.size else None,
                             flag_threshold=threshold, flag_calibration=calibration,
                             flag_alpha=alpha)
    server = None
    if metrics_port is not None:
        server, port = metrics.serve(metrics_port)
        if log is not None:
            log(f"metrics on http://127.0.0.1:{port}/metrics")
    observer = BatchObserver(metrics)
    scores_dir = Path(out_dir) / "scores"
    try:
        observer.start()
        summary = score_shards(trained, shards, scores_dir, use_ray=use_ray,
                               batch_size=batch_size, framework=framework, on_batch=observer)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    read_counts = {k: int(v) for k, v in (input_counts or {}).items()}
    observer.finish(summary.n_scored, summary.elapsed,
                    _merged(read_counts, summary.n_rejected_by_reason))
    scored = load_scored(summary.outputs, shards, reference, threshold,
                         calibration=calibration, alpha=alpha)
    drift = metrics.update_drift()
    scored.scores_dir = scores_dir
    scored.metrics = metrics
    scored.drift = None if drift is None else drift.to_dict()
    scored.spectra_per_second = summary.spectra_per_second
    scored.rejected = dict(summary.n_rejected_by_reason)
    scored.rejected_on_read = read_counts
    return scored


def _merged(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + int(v)
    return out


def rows_of(available: NDArray[Any], wanted: NDArray[Any], *, where: str,
            hint: str) -> NDArray[np.int64]:
    """Return the row of each ``wanted`` TARGETID in ``available``.

    Args:
        available: TARGETIDs of a table, shape ``(M,)`` (unique).
        wanted: TARGETIDs to look up, shape ``(N,)``.
        where: What ``available`` is, for the message (e.g. "the input shards").
        hint: What to do when some are missing.

    Returns:
        Row indices into ``available``, shape ``(N,)``.

    Raises:
        DataError: A wanted TARGETID is not in ``available``.
    """
    order = {int(t): i for i, t in enumerate(available)}
    missing = [int(t) for t in wanted if int(t) not in order]
    if missing:
        raise DataError(f"{len(missing)} scored TARGETIDs (e.g. {missing[0]}) are not in "
                        f"{where}", hint=hint)
    return np.array([order[int(t)] for t in wanted], dtype=np.int64)


def load_scored(outputs: Sequence[str | Path], shards: Sequence[str | Path],
                reference: NDArray[Any], threshold: float, *,
                calibration: MondrianCalibration | None = None,
                alpha: float = 0.01) -> ScoredRun:
    """Read scoring outputs and join z / S/N from the input shards by TARGETID.

    Args:
        outputs: ``*.scores.parquet`` files (columns targetid, score, label, stratum).
        shards: The input Parquet shards they were scored from (columns targetid, z, snr).
        reference: The model's clean held-out scores (drift reference), shape ``(M,)``.
        threshold: Pooled flag threshold on the score (used to decide only without
            ``calibration``).
        calibration: The model's flag calibration (``TrainedModel.flag_calibration()``): when
            given, each spectrum gets a conformal p-value within its coverage stratum (outputs
            without a ``stratum`` column are decided against the pooled set).
        alpha: Level of the decision ``p ≤ α``.

    Returns:
        The scored run without live metrics (``metrics`` is ``None``, throughput NaN).

    Raises:
        DataError: There are no outputs, or a scored TARGETID is not in the input shards.
    """
    import pyarrow.parquet as pq

    from qso_anomaly.metrics import score_drift

    if not outputs:
        raise DataError("no scoring outputs to read", hint="run the score step first")
    if not shards:
        raise DataError("no input shards to join the scores with",
                        hint="pass the shards (or DESI files) that were scored")
    ref = np.asarray(reference, dtype=np.float64)
    files = sorted(map(str, outputs))
    table = pq.read_table(files)
    targetid = table.column("targetid").to_numpy()
    score = table.column("score").to_numpy().astype(np.float64)
    label = (np.asarray(table.column("label").to_pylist(), dtype=object).astype(str)
             if "label" in table.column_names and table.column("label").null_count == 0 else None)
    names = pq.read_schema(shards[0]).names
    side = pq.read_table([str(p) for p in shards],
                         columns=[c for c in ("targetid", "z", "snr") if c in names])
    rows = rows_of(side.column("targetid").to_numpy(), targetid, where="the input shards",
                   hint="pass the data the scores were computed from")
    z = side.column("z").to_numpy()[rows]
    snr = side.column("snr").to_numpy()[rows] if "snr" in side.column_names else None
    drift = score_drift(ref, score).to_dict() if ref.size and score.size else None
    stratum = (table.column("stratum").to_numpy().astype(np.int16)
               if "stratum" in table.column_names else None)
    p_value = level = None
    if calibration is not None:
        p_value, level = calibration.p_values(score, stratum, alpha)
    return ScoredRun(scores_dir=Path(files[0]).parent, targetid=targetid,
                     score=score, label=label, z=z, snr=snr, reference=ref,
                     flag_threshold=threshold, metrics=None, drift=drift,
                     spectra_per_second=float("nan"), rejected={}, stratum=stratum,
                     p_value=p_value, level=level, flag_alpha=alpha)
