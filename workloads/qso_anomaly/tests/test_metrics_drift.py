"""PSI and KS drift of score distributions."""

from __future__ import annotations

import numpy as np
import pytest

from qso_anomaly.metrics import (
    feature_ks,
    psi,
    psi_band,
    psi_from_counts,
    reference_edges,
    score_drift,
)
from qso_anomaly.metrics.drift import bin_counts

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(0).lognormal(mean=0.0, sigma=0.5, size=5000)


def test_reference_edges_are_equal_mass(reference: np.ndarray) -> None:
    edges = reference_edges(reference, 10)
    assert edges.size == 9
    counts = bin_counts(reference, edges)
    assert counts.sum() == reference.size
    np.testing.assert_allclose(counts / reference.size, 0.1, atol=0.002)


def test_psi_is_small_for_same_distribution_and_large_for_shift(reference: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    same = rng.lognormal(mean=0.0, sigma=0.5, size=3000)
    shifted = rng.lognormal(mean=0.5, sigma=0.5, size=3000)
    assert psi(reference, same) < 0.02
    assert psi(reference, shifted) > 0.25
    assert psi_band(psi(reference, same)) == "none"
    assert psi_band(psi(reference, shifted)) == "significant"
    assert psi_band(0.15) == "moderate"


def test_psi_matches_textbook_formula_on_counts() -> None:
    ref = np.array([50, 30, 20])
    cur = np.array([30, 30, 40])
    expected = sum((c - r) * np.log(c / r) for r, c in [(0.5, 0.3), (0.3, 0.3), (0.2, 0.4)])
    assert psi_from_counts(ref, cur) == pytest.approx(expected)
    with pytest.raises(ValueError, match="shapes differ"):
        psi_from_counts(ref, cur[:2])


def test_score_drift_flags_shift_but_not_resample(reference: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    ok = score_drift(reference, rng.lognormal(0.0, 0.5, 2000))
    assert not ok.drifted and ok.ks_pvalue > 0.01 and ok.n_current == 2000
    bad = score_drift(reference, rng.lognormal(0.3, 0.5, 2000))
    assert bad.drifted and bad.ks_statistic > 0.15 and bad.ks_pvalue < 1e-6
    assert set(bad.to_dict()) >= {"psi", "psi_band", "ks_statistic", "ks_pvalue", "drifted"}


def test_score_drift_rejects_empty_inputs(reference: np.ndarray) -> None:
    with pytest.raises(ValueError, match="finite scores"):
        score_drift(reference, np.array([np.nan]))


def test_feature_ks_bonferroni_finds_only_the_shifted_feature() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(800, 5))
    cur = rng.normal(size=(800, 5))
    cur[:, 2] += 0.5
    res = feature_ks(ref, cur, alpha=0.01)
    assert res["drifted_features"] == [2]
    assert res["alpha_bonferroni"] == pytest.approx(0.002)


def test_small_references_get_fewer_bins() -> None:
    from qso_anomaly.metrics.drift import effective_bins

    assert effective_bins(17) == 2 and effective_bins(55) == 5 and effective_bins(5000) == 10
    rng = np.random.default_rng(4)
    small_ref = rng.normal(size=17)
    res = score_drift(small_ref, rng.normal(size=120))
    assert res.n_bins == 2
    assert reference_edges(small_ref).size == 1
