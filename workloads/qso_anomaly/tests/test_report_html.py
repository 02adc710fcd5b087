"""The HTML report: figures are real PNGs, sections appear when their data exists."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from qso_anomaly.explain.runner import ExplanationSet
from qso_anomaly.metrics import score_drift
from qso_anomaly.registry.evaluation import evaluate_detection
from qso_anomaly.report import ReportInputs, write_report
from qso_anomaly.report.plots import spectrum_panel

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _explanations(wave: np.ndarray, rng: np.random.Generator) -> ExplanationSet:
    n, p = 4, wave.size
    flux = (1 + rng.normal(scale=0.1, size=(n, p))).astype(np.float32)
    truth = np.zeros((n, p), dtype=bool)
    truth[:, 100:130] = True
    flux[:, 100:130] *= 0.3
    ivar = np.full((n, p), 100.0, dtype=np.float32)
    ivar[:, :5] = 0
    report = {"method": "ig", "n_explained": n, "localisation_auroc_localised_mean": 0.91,
              "deletion_auc_mean": 0.3, "deletion_auc_random_mean": 0.8,
              "randomisation": {"passed": True, "spearman_abs_mean": 0.12},
              "per_class": {"hibal": {"n": 4, "localised": True, "mask_fraction_median": 0.07,
                                      "auroc_mean": 0.91, "relevance_mass_mean": 0.6,
                                      "pointing_game_mean": 1.0}},
              "per_class_occlusion": {"hibal": {"auroc_mean": 0.88}},
              "curves": {"fractions": [0, 0.5, 1], "deletion_mean": [1, 0.2, 0],
                         "deletion_random_mean": [1, 0.6, 0]}}
    return ExplanationSet(
        index=np.arange(n), targetid=np.arange(100, 100 + n), score=np.linspace(5, 2, n),
        label=np.array(["hibal"] * n), z=np.full(n, 2.0, np.float32), snr=None, flux=flux,
        recon=np.ones((n, p), np.float32), ivar=ivar, truth_mask=truth,
        ig=(truth * 1.0 + rng.normal(scale=0.05, size=(n, p))).astype(np.float32),
        occlusion=np.zeros((n, p), np.float32), report=report)


def test_spectrum_panel_is_a_png() -> None:
    wave = np.linspace(3600, 9800, 300)
    png = spectrum_panel(wave, np.ones(300), np.ones(300), np.zeros(300),
                         truth=np.arange(300) > 250, title="t")
    assert png.startswith(PNG_MAGIC) and len(png) > 2000


def test_full_report_has_every_section_and_embedded_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    labels = np.array(["normal"] * n, dtype=object)
    labels[:40] = "hibal"
    labels[40:70] = "star"
    scores = rng.normal(size=n) + 2.0 * (labels != "normal")
    reference = rng.normal(size=2000)
    snr, z = rng.uniform(0.5, 9, n), rng.uniform(0.2, 3.5, n)
    ev = evaluate_detection(scores, labels.astype(str), snr=snr, z=z, n_boot=30)
    drift = score_drift(reference, scores).to_dict()
    wave = np.linspace(3600, 9800, 400)
    inp = ReportInputs(
        scores=scores, labels=labels.astype(str), reference_scores=reference,
        flag_threshold=2.3, evaluation=ev, drift=drift, explanations=_explanations(wave, rng),
        wave=wave, model={"name": "qso-ae-torch", "version": "2", "alias": "champion"},
        gates={"tier": "ci", "passed": False, "results": [
            {"id": "overall_auroc", "metric": "detection.overall.auroc", "op": ">=",
             "threshold": 0.99, "observed": 0.8, "passed": False}]},
        summary={"spectra_per_second": 1234.5}, links={"model card": "model_card.md"},
        title="test <run>")
    path = write_report(inp, tmp_path / "report.html")
    text = path.read_text()
    for anchor in ('id="summary"', 'id="top"', 'id="scores"', 'id="performance"', 'id="xai"',
                   'id="gates"'):
        assert anchor in text, anchor
    assert "test &lt;run&gt;" in text  # titles are escaped
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    # score dist + PR + slices + 4 top spectra + deletion curves
    assert len(images) == 8
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "hibal" in text and "star" in text and "FAIL" in text and "champion" in text
    blob = re.search(r'<script type="application/json" id="run-summary">(.*?)</script>', text,
                     re.DOTALL)
    assert blob is not None
    assert json.loads(blob.group(1))["model"]["version"] == "2"


def test_minimal_report_for_unlabelled_data(tmp_path: Path) -> None:
    scores = np.random.default_rng(1).normal(size=50)
    text = write_report(ReportInputs(scores=scores), tmp_path / "r.html").read_text()
    assert 'id="performance"' not in text and 'id="xai"' not in text
    assert len(re.findall(r"data:image/png;base64", text)) == 1
    assert "No explanations in this run." in text
