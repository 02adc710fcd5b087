import numpy as np
import pytest

from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.errors import DataError


def test_desi_grids_have_the_documented_pixel_counts() -> None:
    edr = WavelengthGrid.desi_edr()
    assert edr.npix == 7781
    assert edr.wave[0] == 3600.0
    assert edr.wave[-1] == pytest.approx(9824.0)
    assert np.allclose(np.diff(edr.wave), 0.8)
    assert WavelengthGrid.desi_dr1().npix == 7750


def test_downsample_keeps_every_kth_pixel() -> None:
    edr = WavelengthGrid.desi_edr()
    ds = edr.downsample(4)
    assert ds.npix == 1946
    assert np.allclose(ds.wave, edr.wave[::4])
    assert edr.downsample(1) == edr


def test_index_of_finds_grid_pixels_and_rejects_others() -> None:
    g = WavelengthGrid.desi_edr()
    idx = g.index_of(np.array([3600.0, 3600.8, 3601.2, 9824.0, 9900.0]))
    assert idx.tolist() == [0, 1, -1, 7780, -1]


def test_grid_round_trips_through_dict_and_rejects_nonsense() -> None:
    g = WavelengthGrid(3600.0, 9799.2, 0.8)
    assert WavelengthGrid.from_dict(g.to_dict()) == g
    with pytest.raises(DataError):
        WavelengthGrid(5000.0, 4000.0, 0.8)
