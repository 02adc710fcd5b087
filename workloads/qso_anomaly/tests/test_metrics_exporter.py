"""The Prometheus exporter, scraped over loopback and read back with prometheus_client's parser."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qso_anomaly.metrics import ScoringMetrics, psi, psi_from_counts

pytestmark = pytest.mark.unit


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture()
def run() -> ScoringMetrics:
    rng = np.random.default_rng(0)
    reference = rng.lognormal(0.0, 0.5, 4000)
    m = ScoringMetrics(model="qso-ae-torch", version="3", framework="torch", git_sha="abc123",
                       data_hash="d" * 12, reference_scores=reference, flag_threshold=3.0)
    for _ in range(3):
        m.observe_batch(rng.lognormal(0.0, 0.5, 100), latency_s=0.02,
                        rejected={"nan": 2, "out_of_scope": 0,
                                  "masked_pixels:nonfinite_flux": 40})
    m.reject("schema", 1)
    m.observe_explanations(5, 0.4, artefact_mass_fraction=0.25)
    m.update_drift()
    return m


def test_live_scrape_over_loopback_has_the_run_metrics(run: ScoringMetrics) -> None:
    server, port = run.serve(port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    s = _samples(text)
    labels = {"model": "qso-ae-torch", "version": "3"}
    assert _get(s, "anomaly_inference_requests_total", outcome="ok", **labels) == 300
    assert _get(s, "anomaly_inference_requests_total", outcome="rejected", **labels) == 7
    assert _get(s, "anomaly_input_rejected_total", reason="nan") == 6
    assert _get(s, "anomaly_input_rejected_total", reason="schema") == 1
    assert ("anomaly_input_rejected_total", (("reason", "out_of_scope"),)) not in s
    assert _get(s, "anomaly_input_masked_pixels_total", reason="nonfinite_flux") == 120
    assert _get(s, "anomaly_inference_latency_seconds_count", **labels) == 3
    assert _get(s, "anomaly_inference_latency_seconds_sum", **labels) == pytest.approx(0.06)
    assert _get(s, "anomaly_inference_batch_size_count", **labels) == 3
    assert _get(s, "anomaly_score_count", **labels) == 300
    flagged = int(np.sum(run.scores() >= 3.0))
    assert _get(s, "anomaly_flagged_total", **labels) == flagged
    assert _get(s, "anomaly_throughput_spectra_per_second", **labels) == pytest.approx(
        300 / 0.06)
    assert _get(s, "anomaly_model_info", model="qso-ae-torch", version="3", git_sha="abc123",
                data_hash="d" * 12, framework="torch") == 1
    assert _get(s, "anomaly_explanations_total") == 5
    assert _get(s, "anomaly_explanation_artefact_mass_fraction") == 0.25
    assert _get(s, "anomaly_score_psi", window="run") == pytest.approx(
        psi(run.reference, run.scores()))  # type: ignore[arg-type]
    assert 0.0 <= _get(s, "anomaly_score_ks_pvalue", window="run") <= 1.0


def test_score_buckets_are_reference_deciles_and_give_psi(run: ScoringMetrics) -> None:
    s = _samples(run.exposition())
    bounds = sorted(
        (float(dict(k[1])["le"]), v) for k, v in s.items()
        if k[0] == "anomaly_score_bucket")
    assert len(bounds) == 10  # 9 reference deciles + +Inf
    cumulative = np.array([v for _, v in bounds])
    counts = np.diff(np.concatenate([[0.0], cumulative]))
    ref_counts = np.full(10, len(run.reference) / 10)  # type: ignore[arg-type]
    assert psi_from_counts(ref_counts, counts) == pytest.approx(
        psi(run.reference, run.scores()), abs=5e-3)  # type: ignore[arg-type]


def test_textfile_snapshot_survives_and_parses(run: ScoringMetrics, tmp_path: Path) -> None:
    path = run.write_textfile(tmp_path / "out" / "metrics.prom")
    text = Path(path).read_text()
    s = _samples(text)
    assert _get(s, "anomaly_score_count", model="qso-ae-torch", version="3") == 300
    assert not list((tmp_path / "out").glob(".metrics-*"))


def test_two_runs_in_one_process_do_not_collide() -> None:
    a = ScoringMetrics(model="m", version="1", framework="jax")
    b = ScoringMetrics(model="m", version="2", framework="jax")
    a.observe_batch(np.ones(4), 0.01)
    assert "anomaly_score_count" in a.exposition()
    assert _get(_samples(b.exposition()), "anomaly_model_info", model="m", version="2",
                git_sha="unknown", data_hash="unknown", framework="jax") == 1
    assert b.update_drift() is None
