"""Issue 12, rows 5–12: one data policy (batch, Ray scorer, pyfunc), DESI files in directly,
one inverse-variance rebinning, a deterministic synthetic survey."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.fits_io import (
    desi_arm_waves,
    read_desi_coadd,
    read_desi_files,
    write_desi_coadd,
    write_redrock,
)
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.policy import DataPolicy, apply_policy, n_rejected_rows
from qso_anomaly.data.rebin import rebin
from qso_anomaly.data.synth import generate, native_grid
from qso_anomaly.errors import DataError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(1800)]  # shared model fixture: ~25 s idle

NATIVE = WavelengthGrid.desi_edr()


def _arms(batch: SpectraBatch) -> dict:
    out = {}
    for arm, wave in desi_arm_waves().items():
        idx = NATIVE.index_of(wave)
        out[arm] = (wave, batch.flux[:, idx].copy(), batch.ivar[:, idx].copy(),
                    batch.mask[:, idx].astype(int))
    return out


@pytest.fixture(scope="module")
def native_batch() -> SpectraBatch:
    return generate(8, 5, NATIVE, anomaly_fraction=0.0)


def test_row5_redshifts_outside_the_trained_range_are_counted_not_scored(
        robust_model, normal_test_batch) -> None:
    from qso_anomaly.score.scorer import Scorer

    b = normal_test_batch.take(slice(0, 5))
    b = b.with_arrays(z=np.array([0.01, 4.8, 6.99, 1.5, 2.0], dtype=np.float32))
    res, reasons, counts = Scorer(robust_model).score_rows(b)
    assert reasons.tolist()[:3] == ["redshift_out_of_range"] * 3
    assert counts["redshift_out_of_range"] == 3
    assert np.isnan(res.score[:3]).all() and np.isfinite(res.score[3:]).all()
    assert robust_model.spec.z_min == 0.05 and robust_model.spec.z_max == 4.5


def test_row6_pyfunc_uses_the_same_policy_and_counts(tmp_path, robust_model,
                                                     normal_test_batch) -> None:
    import mlflow.pyfunc

    from qso_anomaly.registry import pyfunc as pyfunc_module

    model_dir = robust_model.save(tmp_path / "trained")
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=pyfunc_module.__file__,
                             artifacts={"trained_model": str(model_dir)})
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    b = normal_test_batch.take(slice(0, 4))
    flux, ivar, z = b.flux.copy(), b.ivar.copy(), b.z.copy()
    flux[0, 10] = np.nan                       # NaN flux with ivar > 0: masked, counted
    flux[1, 20] = np.inf
    ivar[1, 20] = 0.0                           # inf flux with ivar 0: masked, counted
    z[2] = -1.0                                 # bad redshift: rejected
    out = loaded.predict({"flux": flux, "ivar": ivar, "z": z})
    assert out["reject_reason"].tolist() == ["", "", "bad_redshift", ""]
    assert np.isfinite(out["score"][[0, 1, 3]]).all() and np.isnan(out["score"][2])
    batch_path = apply_policy(SpectraBatch(np.arange(4), z, flux, ivar, ~(ivar > 0)),
                              DataPolicy.for_spec(robust_model.spec))
    assert loaded.unwrap_python_model().last_counts == batch_path[2]
    # the batch path's decision: conformal p within the coverage stratum of the row
    from qso_anomaly.train.mondrian import coverage_strata

    want = coverage_strata(np.where(np.isfinite(ivar), ivar, 0.0), robust_model.grid.wave)
    assert out["stratum"].tolist() == want.tolist()
    p, _ = robust_model.flag_calibration().p_values(out["score"].to_numpy(), want, 0.01)
    np.testing.assert_array_equal(out["p_value"].to_numpy(), p)
    assert out["flagged"].tolist() == (np.nan_to_num(p, nan=2.0) <= 0.01).tolist()
    assert batch_path[2]["masked_pixels:nonfinite_flux"] == 2
    with pytest.raises(DataError, match="model grid"):
        loaded.predict({"flux": flux[:, :10], "ivar": ivar[:, :10], "z": z})


def test_row7_duplicate_targetids_and_conflicting_redshifts_are_counted(
        tmp_path, native_batch) -> None:
    b = native_batch
    tid = b.targetid.copy()
    tid[1] = tid[0]                            # one TARGETID twice in the fibermap
    coadd = write_desi_coadd(tmp_path / "coadd-x.fits", tid, _arms(b))
    rr_tid = np.concatenate([b.targetid, b.targetid[2:3]])
    rr_z = np.concatenate([b.z, [b.z[2] + 0.5]]).astype(float)  # twice, two different z
    rr = write_redrock(tmp_path / "redrock-x.fits", rr_tid, rr_z)
    got = read_desi_coadd(coadd, NATIVE, redrock_path=rr)
    assert np.isnan(got.z[2])                  # never a silent last-one-wins redshift
    _, reasons, counts = apply_policy(got)
    assert reasons[0] == reasons[1] == "duplicate_targetid"
    assert reasons[2] == "duplicate_redshift"
    assert counts["duplicate_targetid"] == 2 and counts["duplicate_redshift"] == 1
    assert n_rejected_rows(counts) == 3


def test_row8_zcatalog_hdu_is_read_and_unknown_layout_names_the_hdus(
        tmp_path, native_batch) -> None:
    b = native_batch
    coadd = write_desi_coadd(tmp_path / "coadd-y.fits", b.targetid, _arms(b))
    zcat = write_redrock(tmp_path / "zall-pix.fits", b.targetid, b.z.astype(float),
                         hdu_name="ZCATALOG")
    got = read_desi_coadd(coadd, NATIVE, redrock_path=zcat)
    np.testing.assert_allclose(got.z, b.z)
    bad = write_redrock(tmp_path / "other.fits", b.targetid, b.z.astype(float),
                        hdu_name="SOMETHING")
    with pytest.raises(DataError, match="HDUs found.*SOMETHING"):
        read_desi_coadd(coadd, NATIVE, redrock_path=bad)


def test_row9_zwarn_spectype_fiberstatus_follow_the_documented_policy(
        tmp_path, native_batch) -> None:
    b = native_batch
    fs = np.zeros(len(b), np.int32)
    fs[3] = 8
    write_desi_coadd(tmp_path / "coadd-z.fits", b.targetid, _arms(b), fiberstatus=fs)
    zwarn = np.zeros(len(b), np.int64)
    zwarn[1] = 4
    spectype = ["QSO"] * len(b)
    spectype[2] = "STAR"
    rr = write_redrock(tmp_path / "redrock-z.fits", b.targetid, b.z.astype(float), spectype,
                       zwarn=zwarn)
    got = read_desi_files(tmp_path, grid=NATIVE)  # a directory, matched by TARGETID
    assert len(got) == len(b) and rr.exists()
    _, reasons, counts = apply_policy(got)
    assert reasons[1:4].tolist() == ["zwarn", "spectype_not_qso", "fiberstatus"]
    assert counts["zwarn"] == counts["spectype_not_qso"] == counts["fiberstatus"] == 1
    _, reasons, counts = apply_policy(got, DataPolicy(catalogue_action="flag"))
    assert (reasons == "").all()
    assert counts["flagged:zwarn"] == counts["flagged:fiberstatus"] == 1
    assert n_rejected_rows(counts) == 0


def test_row10_nonfinite_flux_with_positive_ivar_is_counted(tmp_path, native_batch) -> None:
    b = native_batch
    arms = _arms(b)
    w, f, iv, m = arms["R"]
    f[0, 100] = np.nan
    f[1, 200] = np.inf
    iv[0, 100] = iv[1, 200] = 5.0
    arms["R"] = (w, f, iv, m)
    coadd = write_desi_coadd(tmp_path / "coadd-n.fits", b.targetid, arms)
    got = read_desi_coadd(coadd, NATIVE, z=b.z)
    cleaned, _, counts = apply_policy(got)
    assert counts["masked_pixels:nonfinite_flux"] == 2
    assert np.isfinite(cleaned.flux).all()


def test_row11_coadds_and_synthetic_spectra_use_inverse_variance_rebinning(
        tmp_path, native_batch, ci_grid) -> None:
    b = generate(40, 6, NATIVE, anomaly_fraction=0.0)
    coadd = write_desi_coadd(tmp_path / "coadd-r.fits", b.targetid, _arms(b))
    got = read_desi_coadd(coadd, ci_grid, z=b.z)

    def snr(batch: SpectraBatch) -> float:
        ok = batch.ivar > 0
        return float(np.median([np.median(np.abs(f[o]) * np.sqrt(i[o]))
                                for f, i, o in zip(batch.flux, batch.ivar, ok, strict=True)]))

    # 4 native pixels per model pixel: S/N up by about √4 (point sampling keeps it at 1x)
    assert snr(got) > 1.7 * snr(b)
    j = 500
    lo = ci_grid.wave[j] - ci_grid.step / 2
    sel = (NATIVE.wave >= lo - 1e-6) & (NATIVE.wave < lo + ci_grid.step - 1e-6)
    i = 0
    w = np.where(b.mask[i, sel], 0.0, b.ivar[i, sel].astype(np.float64))
    assert got.ivar[i, j] == pytest.approx(w.sum(), rel=1e-5)
    assert got.flux[i, j] == pytest.approx((w * b.flux[i, sel]).sum() / w.sum(), rel=1e-4)
    # the synthetic survey goes through the same rebinning
    nat = native_grid(ci_grid)
    fine = generate(10, 9, nat, anomaly_fraction=0.5)
    coarse = generate(10, 9, ci_grid, anomaly_fraction=0.5)
    f, iv, m, _ = rebin(nat.wave, fine.flux, fine.ivar, ci_grid)
    np.testing.assert_allclose(coarse.flux, f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(coarse.ivar, iv, rtol=1e-5)
    assert np.array_equal(coarse.mask, m)


def test_row12_synthetic_survey_is_identical_under_any_pythonhashseed() -> None:
    code = ("import hashlib;from qso_anomaly.data.synth import generate;"
            "from qso_anomaly.data.grid import WavelengthGrid as G;"
            "b=generate(200,7,G.desi_edr().downsample(8));"
            "print(hashlib.sha256(b.flux.tobytes()+b.z.tobytes()+b.ivar.tobytes()"
            "+'|'.join(b.label).encode()).hexdigest())")
    digests = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, timeout=300)
        digests.add(out.stdout.strip())
    b = generate(200, 7, WavelengthGrid.desi_edr().downsample(8))
    here = hashlib.sha256(b.flux.tobytes() + b.z.tobytes() + b.ivar.tobytes()
                          + "|".join(b.label).encode()).hexdigest()
    assert digests == {here}


def test_read_desi_files_accepts_a_file_a_list_and_a_directory(tmp_path, native_batch) -> None:
    b = native_batch
    d = tmp_path / "dr1"
    d.mkdir()
    for k in range(2):
        sub = b.take(slice(4 * k, 4 * k + 4))
        write_desi_coadd(d / f"coadd-main-dark-{k}.fits", sub.targetid, _arms(sub))
        write_redrock(d / f"redrock-main-dark-{k}.fits", sub.targetid, sub.z.astype(float))
    by_dir = read_desi_files(d, grid=NATIVE)
    files = sorted(Path(d).glob("coadd-*.fits"))
    by_list = read_desi_files(files, redshifts=sorted(d.glob("redrock-*.fits")), grid=NATIVE)
    one = read_desi_files(files[0], grid=NATIVE)
    assert len(by_dir) == len(by_list) == 8 and len(one) == 4
    np.testing.assert_allclose(by_dir.z, b.z)


def test_cli_scores_a_directory_of_desi_coadds_directly(tmp_path, robust_model, capsys) -> None:
    import json

    from qso_anomaly.cli import main

    b = generate(30, 41, NATIVE, anomaly_fraction=0.0)
    d = tmp_path / "healpix"
    d.mkdir()
    write_desi_coadd(d / "coadd-main-dark-9000.fits", b.targetid, _arms(b))
    zwarn = np.zeros(len(b), np.int64)
    zwarn[:2] = 4
    write_redrock(d / "redrock-main-dark-9000.fits", b.targetid, b.z.astype(float), zwarn=zwarn)
    model_dir = robust_model.save(tmp_path / "model")
    rc = main(["score", "--model", str(model_dir), "--data", str(d), "--out",
               str(tmp_path / "out")])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert res["rejected_on_read"]["zwarn"] == 2
    assert res["n_scored"] + sum(res["rejected"].values()) == 28


def test_clean_batches_take_the_short_path_with_the_same_arrays() -> None:
    """apply_policy skips its per-pixel checks when three reductions show no non-finite or
    negative value (issue 15); the result equals the full rule, array for array, for clean
    batches, sub-floor ivar, and every kind of bad value (which takes the full path)."""
    from qso_anomaly.data.masks import row_counts
    from qso_anomaly.data.policy import IVAR_FLOOR

    rng = np.random.default_rng(11)
    for trial in range(60):
        n, p = int(rng.integers(0, 12)), int(rng.integers(1, 90))
        flux = (rng.normal(size=(n, p)) * 10).astype(np.float32)
        ivar = rng.exponential(size=(n, p)).astype(np.float32)
        mask = rng.random((n, p)) < 0.05
        kind = trial % 6
        if n and kind == 1:
            flux[rng.random((n, p)) < 0.05] = np.nan
        if n and kind == 2:
            ivar[rng.random((n, p)) < 0.05] = np.inf
        if n and kind == 3:
            ivar[rng.random((n, p)) < 0.05] = -1.0
        if n and kind == 4:
            ivar[rng.random((n, p)) < 0.1] = 1e-13
            ivar[rng.random((n, p)) < 0.1] = 0.0
        if n and kind == 5:
            flux[0, 0] = 3e38  # the reductions overflow: full path, same answer
            flux[-1, -1] = 3e38
        batch = SpectraBatch(np.arange(n), rng.uniform(0.5, 3.0, n), flux, ivar, mask)
        cleaned, _, counts = apply_policy(batch)
        bad_f, bad_i = ~np.isfinite(flux), ~np.isfinite(ivar)
        neg = ~bad_i & (ivar < 0)
        m = mask | bad_f | bad_i | neg
        np.testing.assert_array_equal(cleaned.mask, m)
        np.testing.assert_array_equal(cleaned.flux, np.where(m, 0, flux).astype(np.float32))
        np.testing.assert_array_equal(cleaned.ivar,
                                      np.where(m | (ivar <= IVAR_FLOOR), 0, ivar).astype(np.float32))
        assert not np.signbit(cleaned.ivar).any()
        for key, sel in (("masked_pixels:nonfinite_flux", bad_f),
                         ("masked_pixels:nonfinite_ivar", bad_i),
                         ("masked_pixels:negative_ivar", neg)):
            assert counts.get(key, 0) == int(sel.sum()), key
        assert cleaned.mask is not batch.mask  # the input is never aliased
        good = cleaned.ivar > 0
        np.testing.assert_array_equal(row_counts(good), np.count_nonzero(good, axis=1))
