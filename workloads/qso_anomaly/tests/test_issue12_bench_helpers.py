"""Issue 12, row 16: the benchmark's uncertainty and detectability figures."""

from __future__ import annotations

import numpy as np
import pytest

from qso_anomaly.bench.detection import UNDETECTABLE_CHI2, detectability
from qso_anomaly.bench.metrics import bootstrap_ci, per_class_with_ci
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.synth import generate

pytestmark = pytest.mark.unit


def test_row16_per_class_ci_covers_the_estimate_and_flags_chance_level_classes() -> None:
    rng = np.random.default_rng(0)
    n_norm, n_pos = 2000, 40
    labels = np.array(["normal"] * n_norm + ["easy"] * n_pos + ["invisible"] * n_pos)
    scores = np.concatenate([rng.normal(size=n_norm), rng.normal(3.0, 1.0, n_pos),
                             rng.normal(size=n_pos)])
    rows = per_class_with_ci(scores, labels, n_boot=200)
    easy, inv = rows["easy"], rows["invisible"]
    assert easy["ap_ci"][0] <= easy["ap"] <= easy["ap_ci"][1]
    assert easy["above_chance"] and easy["auroc_ci"][0] > 0.9
    assert not inv["above_chance"]  # a class at chance level is not counted as detected
    assert inv["auroc_ci"][0] < 0.5 < inv["auroc_ci"][1]
    assert bootstrap_ci(scores[:10], np.zeros(10, bool))["ap"] is None


def test_row16_detectability_is_the_injected_signal_chi2() -> None:
    grid = WavelengthGrid.desi_edr().downsample(8)
    b = generate(60, 4, grid, anomaly_fraction=0.5, signal=True)
    chi2 = b.meta["signal_chi2"]
    assert np.all(chi2[b.label == "normal"] == 0.0)
    assert np.all(chi2[b.label != "normal"] >= 0.0)
    same = generate(60, 4, grid, anomaly_fraction=0.5)  # the side stream leaves spectra alone
    np.testing.assert_array_equal(same.flux, b.flux)
    det = detectability(chi2, b.label)
    assert set(det) == set(b.label) - {"normal"}
    for row in det.values():
        assert row["p10_signal_chi2"] <= row["median_signal_chi2"] <= row["p90_signal_chi2"]
        assert 0.0 <= row["share_undetectable"] <= 1.0
    fake = detectability(np.array([0.0, 1.0, 100.0]), np.array(["a", "a", "b"]))
    assert fake["a"]["share_undetectable"] == 1.0 and UNDETECTABLE_CHI2 == 9.0
