import numpy as np
import pytest

from qso_anomaly.data import inject
from qso_anomaly.data.classes import ANOMALY_CLASSES, NORMAL
from qso_anomaly.data.synth import generate


@pytest.fixture(scope="module")
def survey(ci_grid):
    return generate(2600, seed=11, grid=ci_grid, anomaly_fraction=0.5)


def test_same_seed_gives_identical_spectra(ci_grid) -> None:
    a = generate(40, seed=5, grid=ci_grid)
    b = generate(40, seed=5, grid=ci_grid)
    c = generate(40, seed=6, grid=ci_grid)
    assert np.array_equal(a.flux, b.flux) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.flux, c.flux)


def test_redshift_and_snr_match_the_dr1_corpus(ci_grid) -> None:
    b = generate(3000, seed=3, grid=ci_grid, anomaly_fraction=0.0)
    q5, q50, q95 = np.quantile(b.z, [0.05, 0.5, 0.95])
    assert abs(q50 - 1.71) < 0.08
    assert abs(q5 - 0.69) < 0.08 and abs(q95 - 2.99) < 0.12
    # measured S/N per native pixel: median flux x sqrt(median ivar), rescaled to 0.8 Å pixels
    good = ~b.mask
    snr = np.array([
        np.median(b.flux[i][good[i]]) * np.sqrt(np.median(b.ivar[i][good[i]]))
        for i in range(len(b))
    ]) * np.sqrt(0.8 / 3.2)
    assert 1.9 < np.median(snr) < 2.9
    assert abs(np.median(b.snr) - 2.33) < 0.15
    # bad pixels: median fraction ≈ 0.42%, heavy tail, ivar 0 wherever masked
    frac = b.mask.mean(axis=1)
    assert 0.002 < np.median(frac) < 0.008
    assert frac.max() > 3 * np.median(frac)
    assert np.all(b.ivar[b.mask] == 0) and np.all(b.ivar[~b.mask] > 0)


def test_every_anomaly_class_is_present_with_a_truth_mask(survey) -> None:
    labels = set(survey.label.tolist())
    assert labels == {NORMAL, *ANOMALY_CLASSES}
    assert len(ANOMALY_CLASSES) >= 12
    for cls in ANOMALY_CLASSES:
        sel = survey.label == cls
        assert sel.sum() >= 100
        assert survey.truth_mask[sel].any(axis=1).all(), cls
    assert not survey.truth_mask[survey.label == NORMAL].any()


def test_absorption_classes_remove_flux_inside_their_masks(ci_grid) -> None:
    for cls in ("hibal", "dla"):
        b = generate(300, seed=21, grid=ci_grid, anomaly_fraction=1.0, classes=[cls])
        ratios = []
        for i in range(len(b)):
            t = b.truth_mask[i] & ~b.mask[i]
            o = ~b.truth_mask[i] & ~b.mask[i]
            if t.sum() > 3:
                ratios.append(np.mean(b.flux[i][t]) / np.mean(b.flux[i][o]))
        assert np.median(ratios) < 0.9, cls


def test_wrong_z_and_star_contaminants(ci_grid) -> None:
    b = generate(60, seed=2, grid=ci_grid, anomaly_fraction=1.0, classes=["wrong_z", "star"])
    wz = b.label == "wrong_z"
    assert np.all(np.abs(b.z[wz] - b.meta["z_true"][wz]) > 0.09)
    assert b.truth_mask[b.label == "star"].all()


def test_voigt_dla_is_saturated_at_line_centre() -> None:
    # Lorentzian wing: tau = N * 0.02654 * f * Gamma / (4 pi^2 dnu^2) ≈ 0.85 at 4 Å (rest)
    lam = np.array([1215.67 * 3.0, 1215.67 * 3.0 + 12.0, 1215.67 * 3.0 + 400.0])
    tau = inject.voigt_tau(lam, 2.0, 20.5)
    assert tau[0] > 1e3
    assert tau[1] == pytest.approx(0.85, rel=0.1)
    assert tau[2] < 0.01
