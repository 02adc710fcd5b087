"""The same weights give the same scores in PyTorch and JAX.

Tolerance: |Δscore| ≤ 1e-3 (scores are O(1–100)), relative Δχ²/dof ≤ 1e-4, |Δnll| ≤ 1e-3,
reconstructions to 1e-3 of their largest value (float32 convolutions sum in another order),
and the score gradients w.r.t. flux agree to 1e-3 relative (float32 both sides).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from qso_test_support import untrained_model_with_density

from qso_anomaly.models.jax_model import (
    anomaly_score_jax,
    apply_jax,
    init_params,
    params_from_torch,
    score_jax,
    state_dict_from_params,
)
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.models.torch_model import anomaly_score_torch


@pytest.fixture(scope="module")
def setup(ci_grid):
    return untrained_model_with_density(ci_grid)


def test_scores_match_between_frameworks(setup, ci_grid) -> None:
    spec, model, batch = setup
    rt = score_torch(model, batch)
    rj = score_jax(params_from_torch(model), spec, ci_grid, batch)
    assert np.std(rt.score) > 0.1  # a non-degenerate comparison
    np.testing.assert_allclose(rj.score, rt.score, atol=1e-3)
    np.testing.assert_allclose(rj.chi2_dof, rt.chi2_dof, rtol=1e-4)
    np.testing.assert_allclose(rj.density_nll, rt.density_nll, atol=1e-3)


def test_reconstructions_and_gradients_match(setup, ci_grid) -> None:
    spec, model, batch = setup
    b = batch.take(slice(0, 8))
    params = params_from_torch(model)
    rec_t = model(torch.from_numpy(b.flux), torch.from_numpy(b.ivar), torch.from_numpy(b.z))
    rec_j = np.asarray(apply_jax(params, spec, ci_grid, b.flux, b.ivar, b.z))
    np.testing.assert_allclose(rec_j, rec_t.detach().numpy(), atol=1e-3 * np.abs(rec_j).max())

    flux = torch.from_numpy(b.flux).requires_grad_()
    ivar, z = torch.from_numpy(b.ivar), torch.from_numpy(b.z)
    anomaly_score_torch(model, flux, ivar, z).sum().backward()
    g_j = jax.grad(
        lambda f: anomaly_score_jax(params, spec, ci_grid, f, jnp.asarray(b.ivar),
                                    jnp.asarray(b.z)).sum()
    )(jnp.asarray(b.flux))
    g_t = flux.grad.numpy()
    np.testing.assert_allclose(np.asarray(g_j), g_t, atol=1e-3 * np.abs(g_t).max())


def test_weight_conversion_round_trips_and_matches_flax_layout(setup, ci_grid) -> None:
    spec, model, _ = setup
    params = params_from_torch(model)
    fresh = init_params(spec, ci_grid)
    assert (jax.tree_util.tree_structure(fresh["params"])
            == jax.tree_util.tree_structure(params["params"]))
    shapes_ok = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, fresh["params"],
                                       params["params"])
    assert all(jax.tree_util.tree_leaves(shapes_ok))
    back = state_dict_from_params(params, spec)
    sd = model.state_dict()
    assert all(torch.equal(back[k], sd[k]) for k in back)
