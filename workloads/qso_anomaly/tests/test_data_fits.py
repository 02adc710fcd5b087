import numpy as np
import pytest

from qso_anomaly.data.fits_io import (
    desi_arm_waves,
    read_desi_coadd,
    write_desi_coadd,
    write_redrock,
)
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.data.synth import generate
from qso_anomaly.errors import DataError


def _split_into_arms(batch, grid):
    arms = {}
    for arm, wave in desi_arm_waves().items():
        idx = grid.index_of(wave)
        arms[arm] = (wave, batch.flux[:, idx], batch.ivar[:, idx], batch.mask[:, idx].astype(int))
    return arms


def test_coadd_file_in_desi_layout_reads_back_onto_the_merged_grid(tmp_path) -> None:
    grid = WavelengthGrid.desi_edr()
    b = generate(6, seed=8, grid=grid)
    arms = _split_into_arms(b, grid)
    # make the r arm disagree in the b/r overlap so the ivar-weighted coadd is visible
    wave_r, fr, ir, mr = arms["R"]
    fr = fr.copy()
    ir = ir.copy()
    ir[:, :51] *= 3.0
    fr[:, :51] += 1.0
    arms["R"] = (wave_r, fr, ir, mr)
    coadd = write_desi_coadd(tmp_path / "coadd-main-dark-10000.fits", b.targetid, arms)
    redrock = write_redrock(tmp_path / "redrock-main-dark-10000.fits", b.targetid[::-1],
                            b.z[::-1].astype(float))
    out = read_desi_coadd(coadd, grid, redrock_path=redrock)
    assert out.flux.shape == (6, 7781)
    assert np.array_equal(out.targetid, b.targetid)
    assert np.allclose(out.z, b.z)
    solo = (grid.wave < 5760) | ((grid.wave > 5800) & (grid.wave < 7520)) | (grid.wave > 7620)
    ok = ~b.mask
    assert np.allclose(out.flux[:, solo][ok[:, solo]], b.flux[:, solo][ok[:, solo]], rtol=1e-5)
    assert np.array_equal(out.mask[:, solo], b.mask[:, solo])
    j = int(grid.index_of(np.array([5760.0]))[0])
    i = int(np.argmax(~b.mask[:, j]))
    w1, w2 = b.ivar[i, j], 3 * b.ivar[i, j]
    expect = (w1 * b.flux[i, j] + w2 * (b.flux[i, j] + 1.0)) / (w1 + w2)
    assert out.flux[i, j] == pytest.approx(expect, rel=1e-4)
    assert out.ivar[i, j] == pytest.approx(w1 + w2, rel=1e-4)


def test_coadd_without_redshifts_is_an_error(tmp_path) -> None:
    grid = WavelengthGrid.desi_edr()
    b = generate(2, seed=1, grid=grid)
    path = write_desi_coadd(tmp_path / "c.fits", b.targetid, _split_into_arms(b, grid))
    with pytest.raises(DataError, match="no redshifts"):
        read_desi_coadd(path, grid)
    assert len(read_desi_coadd(path, grid, z=b.z)) == 2


def test_arms_off_the_grid_are_resampled(tmp_path) -> None:
    grid = WavelengthGrid.desi_edr().downsample(4)
    b = generate(2, seed=1, grid=WavelengthGrid.desi_edr())
    path = write_desi_coadd(tmp_path / "c.fits", b.targetid,
                            _split_into_arms(b, WavelengthGrid.desi_edr()))
    out = read_desi_coadd(path, grid, z=b.z)
    assert out.flux.shape == (2, grid.npix)
    assert np.isfinite(out.flux).all() and (out.ivar >= 0).all()
