"""Issue 12, rows 14–15: drift alarms at a stated rate; explanation metrics in their ranges."""

from __future__ import annotations

import numpy as np
import pytest

from qso_anomaly.explain.faithfulness import perturbation_curves, randomisation_check
from qso_anomaly.metrics.drift import psi_band, score_drift

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("n_reference", [118, 300])
def test_row14_no_drift_raises_an_alarm_at_most_5_percent_of_the_time(n_reference) -> None:
    rng = np.random.default_rng(n_reference)
    alarms, bands = 0, 0
    runs = 300
    for _ in range(runs):
        ref = rng.gumbel(size=n_reference)
        cur = rng.gumbel(size=600)
        d = score_drift(ref, cur)
        alarms += d.drifted
        bands += d.psi_band != "none"
    assert alarms / runs <= 0.05, alarms / runs
    assert bands / runs <= 0.05, bands / runs  # 36 % landed in "moderate" before


def test_row14_real_drift_is_still_detected() -> None:
    rng = np.random.default_rng(1)
    d = score_drift(rng.normal(size=300), rng.normal(0.5, 1.0, size=600))
    assert d.drifted and d.ks_pvalue < 0.01
    assert psi_band(0.3) == "significant" and psi_band(0.05) == "none"


def test_row15_deletion_and_insertion_aucs_stay_in_0_1() -> None:
    rng = np.random.default_rng(0)
    n, p = 6, 256
    x = rng.normal(1.0, 0.1, (n, p)).astype(np.float32)
    base = np.ones_like(x)

    def wild(f: np.ndarray) -> np.ndarray:  # scores that overshoot both ends when perturbed
        d = f - 1.0
        return (np.abs(d).sum(1) * 10 - 200 * d[:, :64].sum(1) + 300 * d[:, 64:128].sum(1))

    attr = rng.normal(size=(n, p))
    curves = perturbation_curves(wild, x, base, attr, window=16, n_steps=8)
    for key, vals in curves.aucs().items():
        assert np.all((vals >= 0.0) & (vals <= 1.0)), (key, vals)
    assert np.all((curves.deletion >= 0) & (curves.deletion <= 1))
    s = curves.summary()
    assert -1.0 <= s["deletion_gain_mean"] <= 1.0 or np.isnan(s["deletion_gain_mean"])


def test_row15_randomisation_check_separates_trained_from_randomised() -> None:
    rng = np.random.default_rng(2)
    n, p = 20, 400
    truth = np.zeros((n, p), bool)
    truth[:, 150:190] = True
    trained = rng.normal(0, 0.2, (n, p)) + 3.0 * truth
    # a randomised network whose attributions still "localise" (smooth bump on the same region)
    # but are otherwise unrelated: the old check (similarity only) passed it
    randomised = rng.normal(0, 0.2, (n, p)) + 0.5 * truth
    fails = randomisation_check(trained, trained + rng.normal(0, 0.01, (n, p)), truth=truth)
    assert not fails.passed
    ok = randomisation_check(trained, rng.normal(size=(n, p)), truth=truth)
    assert ok.passed and ok.separated and ok.localisation_gap > 0.3
    same_loc = randomisation_check(trained, randomised, truth=truth, max_similarity=0.9)
    assert same_loc.localisation_gap is not None
    assert 0.0 <= same_loc.localisation_auroc_randomised <= 1.0
    assert same_loc.separated == (same_loc.localisation_gap >= 0.05)
    # a random network that localises as well as the trained one: dissimilar maps (old check
    # passed it), but not separated
    matched = randomisation_check(trained, trained[::-1].copy(), truth=truth)
    assert matched.localisation_gap == pytest.approx(0.0, abs=1e-9)
    assert matched.separated is False
