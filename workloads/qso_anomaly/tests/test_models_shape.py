"""The broad-band shape term of the score (``qso_anomaly.models.shape``): observed pixels only,
level-free, deterministic, the same in NumPy, PyTorch and JAX, and stored with the density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from qso_test_support import untrained_model_with_density

from qso_anomaly.data.masks import camera
from qso_anomaly.data.synth import generate
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.jax_model import (
    anomaly_score_jax,
    params_from_torch,
    score_jax,
    shape_z_jax,
)
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.models.shape import ShapeModel, features, window_edges
from qso_anomaly.models.torch_model import (
    anomaly_score_torch,
    build_model,
    has_shape_term,
    shape_z_torch,
)


@pytest.fixture(scope="module")
def fitted(ci_grid):
    train = generate(1200, 21, ci_grid, anomaly_fraction=0.0)
    test = generate(200, 22, ci_grid, anomaly_fraction=0.0)
    return ShapeModel.fit(train.flux, train.ivar, train.z, ci_grid.wave), test


def test_fit_is_deterministic_and_normals_are_standard(fitted, ci_grid) -> None:
    sm, test = fitted
    train = generate(1200, 21, ci_grid, anomaly_fraction=0.0)
    again = ShapeModel.fit(train.flux, train.ivar, train.z, ci_grid.wave)
    for a, b in zip(sm.to_arrays().values(), again.to_arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    z = sm.zscore(test.flux, test.ivar, test.z, ci_grid.wave)
    assert np.all(np.isfinite(z))
    assert abs(np.median(z)) < 1.0 and 0.3 < np.subtract(*np.quantile(z, [0.75, 0.25])) < 4


def test_a_tilted_continuum_stands_out_and_the_level_does_not(fitted, ci_grid) -> None:
    sm, test = fitted
    z0 = sm.zscore(test.flux, test.ivar, test.z, ci_grid.wave)
    z_scaled = sm.zscore(7.0 * test.flux, test.ivar / 49.0, test.z, ci_grid.wave)
    np.testing.assert_allclose(z_scaled, z0, atol=1e-6)
    tilt = (ci_grid.wave / 6000.0) ** -2.0
    z_tilt = sm.zscore(test.flux * tilt, test.ivar / tilt**2, test.z, ci_grid.wave)
    assert np.median(z_tilt - z0) > 2.0


def test_only_observed_pixels_count(fitted, ci_grid) -> None:
    sm, test = fitted
    b = test.take(slice(0, 50))
    off = camera(ci_grid.wave, "z")
    ivar = b.ivar.copy()
    ivar[:, off] = 0.0
    flux = b.flux.copy()
    z1 = sm.zscore(flux, ivar, b.z, ci_grid.wave)
    flux[:, off] = 1e4  # anything at an unobserved pixel
    z2 = sm.zscore(flux, ivar, b.z, ci_grid.wave)
    np.testing.assert_array_equal(z1, z2)
    _, obs, _ = features(flux, ivar, ci_grid.wave, sm.win_edges)
    assert obs.sum(1).max() < len(sm.win_edges) - 1  # the masked window is marginalised out
    assert np.all(np.isfinite(z1))


def test_window_edges_cover_the_grid(ci_grid) -> None:
    e = window_edges(ci_grid.wave, 4)
    assert e[0] <= ci_grid.wave[0] and e[-1] > ci_grid.wave[-1] and len(e) == 5


def test_density_arrays_round_trip_with_and_without_shape(fitted) -> None:
    sm, _ = fitted
    d = DensityModel.standard_normal(3)
    assert "shape_cov" not in d.to_arrays() and d.to_arrays()["calib"].shape == (4,)
    assert DensityModel.from_arrays(d.to_arrays()).shape is None
    d.shape, d.shape_loc, d.shape_scale = sm, 0.3, 1.7
    back = DensityModel.from_arrays(d.to_arrays())
    assert back.shape is not None and (back.shape_loc, back.shape_scale) == (0.3, 1.7)
    np.testing.assert_array_equal(back.shape.cov, sm.cov)


@pytest.fixture(scope="module")
def model_with_shape(fitted, ci_grid):
    sm, _ = fitted
    return untrained_model_with_density(ci_grid, shape=sm, shape_calib=(0.2, 1.3))


def test_shape_term_matches_across_numpy_torch_and_jax(model_with_shape, ci_grid) -> None:
    spec, model, batch = model_with_shape
    assert has_shape_term(model)
    ref = model.density().shape.zscore(batch.flux, batch.ivar, batch.z, ci_grid.wave)
    args = [torch.from_numpy(a) for a in (batch.flux, batch.ivar, batch.z)]
    with torch.no_grad():
        zt = shape_z_torch(model, *args).numpy()
    params = params_from_torch(model)
    zj = np.asarray(shape_z_jax(params["density"], jnp.asarray(ci_grid.wave, jnp.float32),
                                jnp.asarray(batch.flux), jnp.asarray(batch.ivar),
                                jnp.asarray(batch.z)))
    np.testing.assert_allclose(zt, ref, rtol=1e-3, atol=2e-3)  # float32 vs float64
    np.testing.assert_allclose(zj, zt, atol=1e-3)
    rt = score_torch(model, batch)
    rj = score_jax(params, spec, ci_grid, batch)
    np.testing.assert_allclose(rj.score, rt.score, atol=1e-3)


def test_score_gradients_with_shape_match(model_with_shape, ci_grid) -> None:
    spec, model, batch = model_with_shape
    b = batch.take(slice(0, 8))
    params = params_from_torch(model)
    flux = torch.from_numpy(b.flux).requires_grad_()
    anomaly_score_torch(model, flux, torch.from_numpy(b.ivar), torch.from_numpy(b.z)).sum().backward()
    g_j = jax.grad(lambda f: anomaly_score_jax(params, spec, ci_grid, f, jnp.asarray(b.ivar),
                                               jnp.asarray(b.z)).sum())(jnp.asarray(b.flux))
    g_t = flux.grad.numpy()
    assert np.all(np.isfinite(g_t))
    np.testing.assert_allclose(np.asarray(g_j), g_t, atol=1e-3 * np.abs(g_t).max())


def test_set_density_without_shape_drops_the_term(model_with_shape, ci_grid) -> None:
    spec, _, batch = model_with_shape
    torch.manual_seed(3)
    model = build_model(spec, ci_grid)
    dens = DensityModel.standard_normal(spec.latent_dim)
    dens.shape = ShapeModel.fit(batch.flux, batch.ivar, batch.z, ci_grid.wave, n_zbins=1)
    model.set_density(dens)
    assert has_shape_term(model)
    with_shape = score_torch(model, batch).score
    model.set_density(DensityModel.standard_normal(spec.latent_dim))
    assert not has_shape_term(model)
    assert "shape_cov" not in params_from_torch(model)["density"]
    assert not np.allclose(score_torch(model, batch).score, with_shape)


def test_calibration_scales_by_the_tail_and_takes_the_spread_set() -> None:
    rng = np.random.default_rng(0)
    chi2, nll, sz = np.exp(rng.normal(0, 1, 5000)), rng.normal(0, 2, 5000), rng.normal(0, 1, 5000)
    d = DensityModel.standard_normal(2)
    d.calibrate(chi2, nll, sz)
    assert d.chi2_scale == pytest.approx(2.326, rel=0.05)  # q99 − median of N(0, 1)
    assert d.nll_scale == pytest.approx(2 * 2.326, rel=0.05)
    wide = (np.exp(rng.normal(0, 3, 5000)), rng.normal(5, 2, 5000), rng.normal(0, 2, 5000))
    d.calibrate(chi2, nll, sz, spread=wide)
    assert abs(d.chi2_loc) < 0.1 and abs(d.nll_loc) < 0.2  # locations: the first arguments
    assert d.chi2_scale == pytest.approx(3 * 2.326, rel=0.05)
    assert d.shape_scale == pytest.approx(2 * 2.326, rel=0.05)
