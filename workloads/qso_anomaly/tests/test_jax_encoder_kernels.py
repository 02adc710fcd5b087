"""The JAX encoder's hand-written kernels (Conv1d paths, one-pass instance norm) against
references: ``lax.conv_general_dilated`` / ``torch.nn.functional.conv1d`` and a float64
two-pass instance norm. The kernels exist for CPU speed (docs/benchmarks.md, throughput); these
tests pin that they compute the same thing, including the precision bound the instance norm's
docstring states.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qso_anomaly.models.jax_model import SMALL_CONV_TERMS, Conv1d, instance_norm

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("cin", "cout", "k"), [(3, 8, 5), (1, 32, 21), (8, 16, 11)])
def test_conv1d_paths_match_torch_conv1d(cin: int, cout: int, k: int) -> None:
    rng = np.random.default_rng(cin * 100 + k)
    x = rng.standard_normal((4, 97, cin)).astype(np.float32)
    mod = Conv1d(cout, k)
    params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))
    assert params["params"]["kernel"].shape == (k, cin, cout)
    assert params["params"]["bias"].shape == (cout,)
    params = {"params": {"kernel": jnp.asarray(rng.standard_normal((k, cin, cout)),
                                               jnp.float32),
                         "bias": jnp.asarray(rng.standard_normal(cout), jnp.float32)}}
    got = np.asarray(mod.apply(params, jnp.asarray(x)))
    w = torch.from_numpy(np.transpose(np.asarray(params["params"]["kernel"]), (2, 1, 0)).copy())
    ref = torch.nn.functional.conv1d(torch.from_numpy(x.transpose(0, 2, 1).copy()), w,
                                     torch.from_numpy(np.array(params["params"]["bias"])),
                                     padding=k // 2).numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())
    # each shape exercises the path it is meant to (two small ones, one XLA convolution)
    assert (cin * k <= SMALL_CONV_TERMS) == (cin in (1, 3))


@pytest.mark.parametrize("offset", [0.0, 3.0, 30.0])
def test_one_pass_instance_norm_is_within_its_stated_precision(offset: float) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 1946, 8)) + offset).astype(np.float32)  # mean/std = offset
    got = np.asarray(instance_norm(jnp.asarray(x)))
    x64 = x.astype(np.float64)
    m = x64.mean(axis=1, keepdims=True)
    ref = (x64 - m) / np.sqrt(((x64 - m) ** 2).mean(axis=1, keepdims=True) + 1e-5)
    # docstring: relative precision of the variance ~ eps * (mean/std)^2 (1e-4 at 30)
    np.testing.assert_allclose(got, ref, atol=2e-5 + 4e-7 * offset**2 * np.abs(ref).max())
    torch_ref = torch.nn.functional.instance_norm(
        torch.from_numpy(x.transpose(0, 2, 1).copy())).numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(got, torch_ref, atol=2e-5 + 4e-7 * offset**2 * 5)


def test_instance_norm_of_a_constant_channel_is_zero_not_nan() -> None:
    x = jnp.full((2, 50, 3), 7.25, jnp.float32)
    out = np.asarray(instance_norm(x))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, 0.0, atol=1e-6)
