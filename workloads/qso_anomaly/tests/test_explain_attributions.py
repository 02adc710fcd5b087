"""Integrated Gradients (Captum and JAX) and occlusion on score functions with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qso_anomaly.explain import (
    integrated_gradients_jax,
    integrated_gradients_torch,
    occlusion,
    quadrature,
    valid_pixels,
)

pytestmark = pytest.mark.unit

N, P = 5, 64


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "x": rng.normal(size=(N, P)).astype(np.float32),
        "b": rng.normal(size=(N, P)).astype(np.float32),
        "w": rng.normal(size=P).astype(np.float32),
        "c": rng.uniform(0.5, 2.0, size=(N, P)).astype(np.float32),
    }


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_quadrature_matches_captum_rule(method: str) -> None:
    from captum.attr._utils.approximation_methods import approximation_parameters

    steps_fn, alphas_fn = approximation_parameters(method)
    alphas, weights = quadrature(method, 7)
    np.testing.assert_allclose(alphas, alphas_fn(7), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(weights, steps_fn(7), rtol=1e-6, atol=1e-7)


def test_quadrature_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown quadrature"):
        quadrature("simpson", 8)


def test_ig_of_linear_score_is_weight_times_difference(arrays: dict[str, np.ndarray]) -> None:
    x, b, w = arrays["x"], arrays["b"], arrays["w"]
    wt = torch.as_tensor(w)
    expected = w[None, :] * (x - b)
    res_t = integrated_gradients_torch(lambda f: f @ wt, x, b, n_steps=8)
    np.testing.assert_allclose(res_t.values, expected, rtol=1e-4, atol=1e-5)

    import jax.numpy as jnp

    wj = jnp.asarray(w)
    res_j = integrated_gradients_jax(lambda f: f @ wj, x, b, n_steps=8)
    np.testing.assert_allclose(res_j.values, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res_j.convergence_delta, 0.0, atol=1e-3)


def test_ig_of_chi2_with_reconstruction_baseline_is_pixel_chi2(
    arrays: dict[str, np.ndarray],
) -> None:
    """f(x) = sum c (x - r)^2 with baseline r: IG gives exactly c (x - r)^2 per pixel."""
    x, r, c = arrays["x"], arrays["b"], arrays["c"]
    expected = c * (x - r) ** 2

    def chi2(f: torch.Tensor, recon: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
        return (ivar * (f - recon) ** 2).sum(dim=1)

    res = integrated_gradients_torch(chi2, x, r, extras=(r, c), n_steps=4,
                                     internal_batch_size=7)
    np.testing.assert_allclose(res.values, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.values.sum(axis=1), res.delta_score, rtol=1e-4)


    res_j = integrated_gradients_jax(lambda f, rr, cc: (cc * (f - rr) ** 2).sum(axis=1), x, r,
                                     extras=(r, c), n_steps=4)
    np.testing.assert_allclose(res_j.values, expected, rtol=1e-4, atol=1e-5)
    assert res_j.method.startswith("ig-jax")


def test_ig_jax_matches_captum_on_the_same_nonlinear_weights(
    arrays: dict[str, np.ndarray],
) -> None:
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    w1 = rng.normal(size=(P, 16)).astype(np.float32) / 8
    w2 = rng.normal(size=(16, P)).astype(np.float32) / 4
    x, b = arrays["x"], arrays["b"]

    def score_t(f: torch.Tensor) -> torch.Tensor:
        recon = torch.tanh(f @ torch.as_tensor(w1)) @ torch.as_tensor(w2)
        return ((f - recon) ** 2).mean(dim=1)

    def score_j(f: jnp.ndarray) -> jnp.ndarray:
        recon = jnp.tanh(f @ jnp.asarray(w1)) @ jnp.asarray(w2)
        return ((f - recon) ** 2).mean(axis=1)

    res_t = integrated_gradients_torch(score_t, x, b, n_steps=24)
    res_j = integrated_gradients_jax(score_j, x, b, n_steps=24, steps_per_chunk=7)
    np.testing.assert_allclose(res_j.values, res_t.values, rtol=1e-3, atol=1e-5)
    assert np.abs(res_t.convergence_delta).max() < 1e-3


def test_masked_pixels_get_zero_attribution(arrays: dict[str, np.ndarray]) -> None:
    x, b, w = arrays["x"], arrays["b"], arrays["w"]
    mask = np.zeros((N, P), dtype=bool)
    mask[:, 10:20] = True
    ivar = np.ones((N, P), dtype=np.float32)
    ivar[:, 30] = 0.0
    valid = valid_pixels(mask, ivar, (N, P))
    res = integrated_gradients_torch(lambda f: f @ torch.as_tensor(w), x, b, valid=valid,
                                     n_steps=4)
    assert np.all(res.values[:, 10:20] == 0.0)
    assert np.all(res.values[:, 30] == 0.0)
    assert np.all(res.values[:, 40] != 0.0)


def test_occlusion_of_linear_score_gives_window_contribution(
    arrays: dict[str, np.ndarray],
) -> None:
    x, b, w = arrays["x"], arrays["b"], arrays["w"]
    res = occlusion(lambda f: f @ w, x, b, window=8)
    contrib = w[None, :] * (x - b)
    window_sums = contrib.reshape(N, P // 8, 8).sum(axis=2)
    np.testing.assert_allclose(res.values, np.repeat(window_sums, 8, axis=1), rtol=1e-4,
                               atol=1e-5)
    # Linear score: no interaction between windows.
    np.testing.assert_allclose(res.convergence_delta, 0.0, atol=1e-3)


def test_occlusion_matches_captum_occlusion_with_overlapping_windows(
    arrays: dict[str, np.ndarray],
) -> None:
    from captum.attr import Occlusion

    x, b = arrays["x"], arrays["b"]

    def score(f: torch.Tensor) -> torch.Tensor:
        return (torch.sin(f) * f).sum(dim=1)

    ours = occlusion(lambda f: score(torch.as_tensor(f)).numpy(), x, b, window=8, stride=4,
                     batch_size=7)
    assert ours.values.shape == (N, P)
    theirs = Occlusion(score).attribute(torch.as_tensor(x), sliding_window_shapes=(8,),
                                        strides=4, baselines=torch.as_tensor(b))
    np.testing.assert_allclose(ours.values, theirs.numpy(), rtol=1e-4, atol=1e-4)
    assert np.isnan(ours.convergence_delta).all()


def test_occlusion_passes_per_spectrum_extras_alongside_copies(
    arrays: dict[str, np.ndarray],
) -> None:
    """A chi2 score against per-spectrum weights: window drop = sum of c (x - r)^2 in the window."""
    x, r, c = arrays["x"], arrays["b"], arrays["c"]

    def chi2(f: np.ndarray, recon: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        return (ivar * (f - recon) ** 2).sum(axis=1)

    res = occlusion(chi2, x, r, window=16, extras=(r, c), batch_size=3)
    per_window = (c * (x - r) ** 2).reshape(N, P // 16, 16).sum(axis=2)
    np.testing.assert_allclose(res.values, np.repeat(per_window, 16, axis=1), rtol=1e-4)
