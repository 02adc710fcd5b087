"""Shared fixtures for the qso_anomaly tests (tiny data; one Ray session per module at most)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# JAX scorers cache compilations under ~/.cache by default (ScoringConfig.jax_cache_dir "auto");
# the tests keep theirs in a temporary directory (an already set JAX_COMPILATION_CACHE_DIR wins,
# and JAX reads it when it is first imported, which is after this file).
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _jax_cache = tempfile.mkdtemp(prefix="qso-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    atexit.register(shutil.rmtree, _jax_cache, True)

from qso_anomaly.data.grid import WavelengthGrid


@pytest.fixture(scope="session")
def ci_grid() -> WavelengthGrid:
    """The 4x downsampled EDR grid (1,946 px) used by CI-sized models."""
    return WavelengthGrid.desi_edr().downsample(4)


@pytest.fixture(scope="session")
def robust_model(ci_grid):  # type: ignore[no-untyped-def]
    """A tiny model trained once per session (1,200 normal quasars, 4 epochs, masking
    augmentation, 300 held out for calibration): about 20 s on 2 CPU cores."""
    from qso_test_support import TINY

    from qso_anomaly.data.synth import generate
    from qso_anomaly.train import fit

    train = generate(1200, 11, ci_grid, anomaly_fraction=0.0)
    return fit(TINY, ci_grid, train, epochs=4, seed=0)


@pytest.fixture(scope="session")
def normal_test_batch(ci_grid):  # type: ignore[no-untyped-def]
    """400 clean normal quasars (not used in training)."""
    from qso_anomaly.data.synth import generate
    from qso_anomaly.data.validate import clean_batch

    return clean_batch(generate(400, 12, ci_grid, anomaly_fraction=0.0))[0]
