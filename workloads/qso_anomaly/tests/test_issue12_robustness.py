"""Issue 12, rows 1–4 and 13: instrument states are not anomalies; calibrated, reproducible flags.

A tiny model (session fixture ``robust_model``) is trained with masking augmentation. Flags are
conformal p-values ≤ 0.05 against the held-out calibration set (α = 0.05 rather than the
pipeline's 0.01 so 400 test spectra give a usable rate). "Flagged no more often than unmasked
normals" is asserted with a binomial allowance: masked rate ≤ max(2 × normal rate,
normal rate + 0.04). Before this change (qso-ae-1) rows 1–3 flagged 42–100 % and row 4 moved
the score by +1.6.
"""

from __future__ import annotations

import numpy as np
import pytest

from qso_anomaly.data.fits_io import desi_arm_waves, read_desi_coadd, write_desi_coadd
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.synth import generate
from qso_anomaly.data.validate import clean_batch
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.train.calibrate import calibrate, conformal_threshold, p_values

pytestmark = [pytest.mark.unit, pytest.mark.timeout(1800)]  # shared model fixture: ~25 s idle

ALPHA = 0.05


def _flag_rate(tm, batch) -> tuple[float, np.ndarray]:
    s = score_torch(tm.torch_model(), batch).score
    return float(np.mean(p_values(tm.reference_scores, s) <= ALPHA)), s


def _allowed(base: float) -> float:
    return max(2.0 * base, base + 0.04)


@pytest.fixture(scope="module")
def base(robust_model, normal_test_batch):  # type: ignore[no-untyped-def]
    rate, scores = _flag_rate(robust_model, normal_test_batch)
    assert rate <= 2 * ALPHA + 0.03, f"normal flag rate {rate} far above α={ALPHA}"
    return rate, scores


def test_row1_whole_b_camera_masked_is_not_flagged(robust_model, normal_test_batch, base,
                                                   ci_grid) -> None:
    w = ci_grid.wave
    b_cam = (w >= 3600.0) & (w <= 5800.0)
    ivar = np.where(b_cam[None, :], 0.0, normal_test_batch.ivar).astype(np.float32)
    flux = np.where(b_cam[None, :], 0.0, normal_test_batch.flux).astype(np.float32)
    rate, _ = _flag_rate(robust_model, normal_test_batch.with_arrays(ivar=ivar, flux=flux))
    assert rate <= _allowed(base[0]), (rate, base[0])


def test_row2_coadd_without_z_camera_hdus_is_not_flagged(tmp_path, robust_model,
                                                         ci_grid) -> None:
    native = WavelengthGrid.desi_edr()
    b = generate(200, 21, native, anomaly_fraction=0.0)
    arms = {}
    for arm, wave in desi_arm_waves().items():
        idx = native.index_of(wave)
        arms[arm] = (wave, b.flux[:, idx], b.ivar[:, idx], b.mask[:, idx].astype(int))
    full = write_desi_coadd(tmp_path / "coadd-full.fits", b.targetid, arms)
    no_z = write_desi_coadd(tmp_path / "coadd-noz.fits", b.targetid,
                            {k: v for k, v in arms.items() if k != "Z"})
    rate_full, _ = _flag_rate(robust_model, clean_batch(read_desi_coadd(full, ci_grid, z=b.z))[0])
    got = clean_batch(read_desi_coadd(no_z, ci_grid, z=b.z))[0]
    assert got.mask[:, ci_grid.wave > 7625].all()  # the z-only range is masked, not zero flux
    rate_noz, _ = _flag_rate(robust_model, got)
    assert rate_noz <= _allowed(rate_full), (rate_noz, rate_full)


# 0.35 failed (10.5 % vs 4.5 % flagged) until every score term was scaled by its 99th-percentile
# tail over the held-out normals clean and masked: the mask-sensitive latent density term no
# longer dominates the pooled decision.
@pytest.mark.parametrize("fraction", [0.20, 0.35])
def test_row3_contiguous_masked_block_is_not_flagged(robust_model, normal_test_batch, base,
                                                     fraction) -> None:
    rng = np.random.default_rng(3)
    ivar = normal_test_batch.ivar.copy()
    n, p = ivar.shape
    length = int(fraction * p)
    for i in range(n):
        s = int(rng.integers(0, p - length))
        ivar[i, s:s + length] = 0.0
    flux = np.where(ivar > 0, normal_test_batch.flux, 0.0).astype(np.float32)
    rate, _ = _flag_rate(robust_model, normal_test_batch.with_arrays(ivar=ivar, flux=flux))
    assert rate <= _allowed(base[0]), (fraction, rate, base[0])


def test_row4_low_ivar_sky_spike_barely_changes_the_score(robust_model, normal_test_batch,
                                                          base, ci_grid) -> None:
    j = int(np.argmin(np.abs(ci_grid.wave - 9400.0)))
    ok = normal_test_batch.ivar[:, j] > 0
    sub = normal_test_batch.take(ok)
    flux, ivar = sub.flux.copy(), sub.ivar.copy()
    flux[:, j] += 30.0 / np.sqrt(ivar[:, j])
    ivar[:, j] /= 1e4
    rate, s = _flag_rate(robust_model, sub.with_arrays(flux=flux, ivar=ivar))
    delta = s - base[1][ok]
    assert float(np.median(np.abs(delta))) < 0.1, float(np.median(delta))  # was +1.6
    assert rate <= _allowed(base[0])


def test_row13_identical_fits_give_identical_flags_and_the_threshold_has_a_ci(
        robust_model, normal_test_batch, ci_grid) -> None:
    from qso_test_support import TINY

    from qso_anomaly.train import fit

    again = fit(TINY, ci_grid, generate(1200, 11, ci_grid, anomaly_fraction=0.0), epochs=4,
                seed=0)
    np.testing.assert_array_equal(again.reference_scores, robust_model.reference_scores)
    survey = clean_batch(generate(300, 31, ci_grid, anomaly_fraction=0.2))[0]
    t1 = conformal_threshold(robust_model.reference_scores, 0.01)
    t2 = conformal_threshold(again.reference_scores, 0.01)
    f1 = score_torch(robust_model.torch_model(), survey).score > t1
    f2 = score_torch(again.torch_model(), survey).score > t2
    np.testing.assert_array_equal(f1, f2)  # same flagged set, 0 % differ
    # the stratified (Mondrian) calibration set is seeded too: identical runs, identical sets
    np.testing.assert_array_equal(again.calibration.scores, robust_model.calibration.scores)
    np.testing.assert_array_equal(again.calibration.strata, robust_model.calibration.strata)
    assert again.metrics["calibration"]["strata"] == robust_model.metrics["calibration"]["strata"]
    cal = robust_model.metrics["calibration"]
    assert cal["n_calibration"] == len(robust_model.reference_scores) >= 250
    assert cal["threshold_ci_low"] <= cal["threshold"] <= cal["threshold_ci_high"]


def test_conformal_false_positive_rate_is_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        cal = rng.normal(size=300)
        test = rng.normal(size=1000)
        rates.append(np.mean(p_values(cal, test) <= 0.05))
    assert np.mean(rates) <= 0.05 + 0.005
    c = calibrate(rng.normal(size=1000), alpha=0.01, n_boot=200)
    assert c.threshold_ci_low < c.threshold < c.threshold_ci_high
    assert c.flagged_count_rel_sd == pytest.approx(np.sqrt(0.99 / 10.0))
