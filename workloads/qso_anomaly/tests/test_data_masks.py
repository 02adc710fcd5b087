"""The instrument-state masks shared by the Mondrian calibration copies and the robustness
benchmark (qso_anomaly.data.masks)."""

from __future__ import annotations

import numpy as np
import pytest

from qso_anomaly.data.grid import DESI_ARMS, WavelengthGrid
from qso_anomaly.data.masks import band, camera, contiguous_blocks, masked

pytestmark = pytest.mark.unit


def test_a_camera_covers_exactly_its_arm_range() -> None:
    wave = WavelengthGrid.desi_edr().downsample(4).wave
    for arm, (lo, hi) in DESI_ARMS.items():
        sel = camera(wave, arm)
        assert sel.any() and np.all(wave[sel] >= lo) and np.all(wave[sel] <= hi)
        assert not np.any(band(wave, lo, hi) & ~sel)
    with pytest.raises(KeyError):
        camera(wave, "nir")


def test_blocks_are_one_contiguous_run_of_the_stated_length_per_row() -> None:
    sel = contiguous_blocks(40, 500, 0.2, np.random.default_rng(3))
    assert sel.shape == (40, 500)
    assert np.all(sel.sum(axis=1) == 100)
    assert np.all(np.abs(np.diff(sel.astype(np.int8), axis=1)).sum(axis=1) <= 2)
    again = contiguous_blocks(40, 500, 0.2, np.random.default_rng(3))
    assert np.array_equal(sel, again)


def test_masked_pixels_are_unobserved_and_the_rest_untouched() -> None:
    rng = np.random.default_rng(0)
    flux, ivar = rng.normal(size=(3, 10)), rng.uniform(1, 2, size=(3, 10))
    sel = np.zeros(10, bool)
    sel[2:5] = True
    f, i = masked(flux, ivar, sel)
    assert f.dtype == np.float32 and i.dtype == np.float32
    assert np.all(f[:, sel] == 0) and np.all(i[:, sel] == 0)
    np.testing.assert_array_equal(i[:, ~sel], ivar[:, ~sel].astype(np.float32))
