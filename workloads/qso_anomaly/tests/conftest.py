"""Shared fixtures for the qso_anomaly tests (tiny data; one Ray session per module at most)."""

from __future__ import annotations

import pytest

from qso_anomaly.data.grid import WavelengthGrid


@pytest.fixture(scope="session")
def ci_grid() -> WavelengthGrid:
    """The 4x downsampled EDR grid (1,946 px) used by CI-sized models."""
    return WavelengthGrid.desi_edr().downsample(4)
