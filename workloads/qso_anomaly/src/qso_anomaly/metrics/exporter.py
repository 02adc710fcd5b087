"""Prometheus metrics of a scoring run (names per reference §C5, prefix ``anomaly_``).

:class:`ScoringMetrics` owns its own ``CollectorRegistry`` (never the process-global one, so two
runs in one process do not collide). It can be scraped live (:meth:`serve`, loopback by default),
written as a textfile snapshot next to the report (:meth:`write_textfile`, e.g. for the
node-exporter textfile collector) and pushed to a Pushgateway (:meth:`push`).

The ``anomaly_score`` histogram's buckets are the reference (validation) score quantiles, so that
equal-mass buckets let PSI be computed from bucket increases alone.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    push_to_gateway,
    start_http_server,
)

from qso_anomaly.metrics.drift import ScoreDrift, reference_edges, score_drift

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)
BATCH_SIZE_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
PIXEL_PREFIX = "masked_pixels:"
DEFAULT_SCORE_BUCKETS = tuple(float(x) for x in np.geomspace(0.1, 100.0, 13))


def score_buckets(reference: NDArray[Any] | None, n_bins: int = 10) -> tuple[float, ...]:
    """Histogram bucket bounds: reference deciles (or a log grid without a reference)."""
    if reference is None or np.asarray(reference).size == 0:
        return DEFAULT_SCORE_BUCKETS
    return tuple(float(e) for e in reference_edges(reference, n_bins))


class ScoringMetrics:
    """Counters, histograms and gauges for one scoring run of one model version."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        framework: str,
        git_sha: str = "unknown",
        data_hash: str = "unknown",
        reference_scores: NDArray[Any] | None = None,
        flag_threshold: float | None = None,
        flag_calibration: Any = None,
        flag_alpha: float = 0.01,
        n_score_buckets: int = 10,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.model, self.version = model, version
        self.reference = None if reference_scores is None else np.asarray(
            reference_scores, dtype=np.float64)
        self.flag_threshold = flag_threshold
        #: A :class:`~qso_anomaly.train.mondrian.MondrianCalibration`: when set, a spectrum
        #: counts as flagged when its stratified conformal p-value is ≤ ``flag_alpha`` (the
        #: batch path's decision) instead of ``score >= flag_threshold``.
        self.flag_calibration = flag_calibration
        self.flag_alpha = flag_alpha
        self._scores: list[NDArray[np.float64]] = []
        self._start = time.monotonic()
        self._busy_s = 0.0
        labels = {"model": model, "version": version}
        r = self.registry
        self.requests = Counter("anomaly_inference_requests", "Spectra submitted for scoring.",
                                ["model", "version", "outcome"], registry=r)
        self.latency = Histogram("anomaly_inference_latency_seconds",
                                 "Wall time to score one batch.", ["model", "version"],
                                 buckets=LATENCY_BUCKETS, registry=r).labels(**labels)
        self.batch_size = Histogram("anomaly_inference_batch_size", "Spectra per scored batch.",
                                    ["model", "version"], buckets=BATCH_SIZE_BUCKETS,
                                    registry=r).labels(**labels)
        self.rejected = Counter("anomaly_input_rejected", "Spectra rejected before scoring.",
                                ["reason"], registry=r)
        self.masked_pixels = Counter("anomaly_input_masked_pixels",
                                     "Pixels masked by input validation (spectrum kept).",
                                     ["reason"], registry=r)
        self.score = Histogram("anomaly_score",
                               "Anomaly scores; buckets at the reference score quantiles.",
                               ["model", "version"],
                               buckets=score_buckets(self.reference, n_score_buckets),
                               registry=r).labels(**labels)
        self.flagged = Counter("anomaly_flagged",
                               "Spectra flagged (conformal p-value within their coverage stratum"
                               " <= alpha, or score >= the flag threshold).",
                               ["model", "version"], registry=r).labels(**labels)
        self.throughput = Gauge("anomaly_throughput_spectra_per_second",
                                "Spectra scored per second of scoring time in this run.",
                                ["model", "version"], registry=r).labels(**labels)
        self.psi = Gauge("anomaly_score_psi", "PSI of scores vs the reference distribution.",
                         ["window"], registry=r)
        self.ks_stat = Gauge("anomaly_score_ks_statistic", "KS statistic of scores vs reference.",
                             ["window"], registry=r)
        self.ks_pvalue = Gauge("anomaly_score_ks_pvalue", "KS p-value of scores vs reference.",
                               ["window"], registry=r)
        self.explain_latency = Histogram("anomaly_explanation_latency_seconds",
                                         "Wall time to explain one batch of flagged spectra.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.explanations = Counter("anomaly_explanations", "Flagged spectra explained.",
                                    registry=r)
        self.artefact_share = Gauge(
            "anomaly_explanation_artefact_mass_fraction",
            "Mean share of positive attribution within ±5 Å of sky lines or in arm joins "
            "(alert when the top-k is dominated by artefacts).", registry=r)
        self.model_info = Gauge("anomaly_model_info", "The model version this run uses (value 1).",
                                ["model", "version", "git_sha", "data_hash", "framework"],
                                registry=r)
        self.model_info.labels(model=model, version=version, git_sha=git_sha,
                               data_hash=data_hash, framework=framework).set(1)
        self.last_validated = Gauge("anomaly_model_last_validated_timestamp_seconds",
                                    "When this model version last passed its release gates.",
                                    registry=r)
        self.reference_age = Gauge("anomaly_reference_age_seconds",
                                   "Age of the reference score distribution.", registry=r)
        self.run_timestamp = Gauge("anomaly_run_last_update_timestamp_seconds",
                                   "Unix time of the last update of this run's metrics.",
                                   registry=r)

    # ------------------------------------------------------------------ observations

    def observe_batch(self, scores: NDArray[Any], latency_s: float,
                      rejected: Mapping[str, int] | None = None,
                      strata: NDArray[Any] | None = None) -> None:
        """Record one scored batch: its scores, wall time and input-validation counts by reason.

        ``strata`` (coverage stratum codes of the scores, ``(N,)``) select the calibration set
        of each spectrum's flag decision when ``flag_calibration`` is set (pooled without).

        Keys ``masked_pixels:<reason>`` count pixels (the spectrum was kept); every other key
        counts rejected spectra (the ``counts`` of ``data.validate.clean_batch``).
        """
        s = np.asarray(scores, dtype=np.float64).ravel()
        n_rej = 0
        for reason, count in (rejected or {}).items():
            if not count:
                continue
            if reason.startswith(PIXEL_PREFIX):
                self.masked_pixels.labels(reason=reason[len(PIXEL_PREFIX):]).inc(int(count))
                continue
            self.reject(reason, int(count))
            n_rej += int(count)
        self.requests.labels(self.model, self.version, "ok").inc(s.size)
        self.latency.observe(float(latency_s))
        self.batch_size.observe(s.size + n_rej)
        for value in s[np.isfinite(s)]:
            self.score.observe(float(value))
        if self.flag_calibration is not None:
            self.flagged.inc(int(np.sum(self.flag_calibration.flags(s, strata, self.flag_alpha))))
        elif self.flag_threshold is not None:
            self.flagged.inc(int(np.sum(s >= self.flag_threshold)))
        self._scores.append(s)
        self._busy_s += float(latency_s)
        self.throughput.set(self.n_scored / self._busy_s if self._busy_s > 0 else 0.0)
        self.run_timestamp.set(time.time())

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` inputs rejected for ``reason`` (schema, nan, out_of_scope, ...)."""
        self.rejected.labels(reason=reason).inc(count)
        self.requests.labels(self.model, self.version, "rejected").inc(count)

    def observe_explanations(self, count: int, latency_s: float,
                             artefact_mass_fraction: float | None = None) -> None:
        self.explanations.inc(count)
        self.explain_latency.observe(float(latency_s))
        if artefact_mass_fraction is not None and np.isfinite(artefact_mass_fraction):
            self.artefact_share.set(float(artefact_mass_fraction))

    def set_validated(self, timestamp: float, reference_created: float | None = None) -> None:
        self.last_validated.set(timestamp)
        if reference_created is not None:
            self.reference_age.set(max(0.0, time.time() - reference_created))

    @property
    def n_scored(self) -> int:
        return int(sum(s.size for s in self._scores))

    def scores(self) -> NDArray[np.float64]:
        return np.concatenate(self._scores) if self._scores else np.zeros(0)

    def update_drift(self, window: str = "run", *, psi_threshold: float = 0.25,
                     ks_alpha: float = 0.01) -> ScoreDrift | None:
        """Compute PSI/KS of this run's scores vs the reference and set the drift gauges."""
        if self.reference is None or self.n_scored == 0:
            return None
        drift = score_drift(self.reference, self.scores(), psi_threshold=psi_threshold,
                            ks_alpha=ks_alpha)
        self.psi.labels(window=window).set(drift.psi)
        self.ks_stat.labels(window=window).set(drift.ks_statistic)
        self.ks_pvalue.labels(window=window).set(drift.ks_pvalue)
        return drift

    # ------------------------------------------------------------------ export

    def exposition(self) -> str:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry).decode()

    def write_textfile(self, path: str | os.PathLike[str]) -> str:
        """Write a snapshot atomically (temp file + rename) so a reader never sees half a file."""
        target = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(target))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".metrics-", dir=directory)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.exposition())
        os.replace(tmp, target)
        return target

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> tuple[Any, int]:
        """Serve /metrics on ``addr:port`` (port 0 = any free port); returns (server, port).

        Call ``server.shutdown()`` when the run ends.
        """
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server, int(server.server_port)

    def push(self, gateway: str, job: str = "qso_anomaly_scoring",
             grouping_key: Mapping[str, str] | None = None) -> None:
        """Push the snapshot to a Prometheus Pushgateway (e.g. ``127.0.0.1:9091``)."""
        push_to_gateway(gateway, job=job, registry=self.registry,
                        grouping_key=dict(grouping_key or {"model": self.model,
                                                           "version": self.version}))


class BatchObserver:
    """``on_batch(batch, result)`` callback for ``score.score_shards`` feeding ScoringMetrics.

    ``score_shards`` does not time batches, so the latency of a batch is the wall time since
    the previous callback (or since the observer was started): read + validate + score.
    """

    def __init__(self, metrics: ScoringMetrics) -> None:
        self.metrics = metrics
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, batch: Any, result: Any) -> None:
        now = time.perf_counter()
        meta = getattr(batch, "meta", None) or {}
        self.metrics.observe_batch(np.asarray(result.score), now - self._last,
                                   strata=meta.get("stratum"))
        self._last = now

    def finish(self, n_scored: int, elapsed_s: float, rejected: Mapping[str, int]) -> None:
        """Record rejections of the whole run and the run's end-to-end throughput."""
        for reason, count in rejected.items():
            if not count:
                continue
            if reason.startswith(PIXEL_PREFIX):
                self.metrics.masked_pixels.labels(reason=reason[len(PIXEL_PREFIX):]).inc(count)
            else:
                self.metrics.reject(reason, int(count))
        if elapsed_s > 0:
            self.metrics.throughput.set(n_scored / elapsed_s)
        self.metrics.run_timestamp.set(time.time())
