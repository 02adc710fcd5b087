"""The shared optimiser schedule and the scale-blind latent-consistency term."""

import numpy as np
import pytest
import torch

from qso_anomaly.models.torch_model import consistency_loss
from qso_anomaly.train.schedule import lr_factor, schedule_steps, torch_optimizer


def test_schedule_warms_up_linearly_then_decays_by_a_cosine_to_zero() -> None:
    total, warmup = schedule_steps(20, 46)
    assert (total, warmup) == (920, 46)
    assert schedule_steps(1, 1) == (1, 1)
    f = np.array([lr_factor(s, total, warmup) for s in range(total)])
    np.testing.assert_allclose(f[:warmup], np.arange(1, warmup + 1) / warmup)
    assert f[warmup] == pytest.approx(1.0)
    assert np.all(np.diff(f[warmup:]) <= 0) and 0 < f[-1] < 1e-4
    assert f[warmup + (total - warmup) // 2] == pytest.approx(0.5, abs=2e-3)


def test_torch_and_jax_backends_step_the_same_learning_rates() -> None:
    jnp = pytest.importorskip("jax.numpy")
    param = torch.nn.Parameter(torch.zeros(2))
    opt, sched = torch_optimizer([param], 2e-3, 3, 7)
    total, warmup = schedule_steps(3, 7)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(
            2e-3 * float(lr_factor(jnp.asarray(step), total, warmup, jnp)), rel=1e-5)
        opt.step()
        sched.step()


def test_consistency_loss_is_blind_to_the_latent_scale() -> None:
    # augmented latents a little closer to the centre than the clean ones (as in training):
    # the old form (target variance detached) pushed the scale up on every step
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(64, 8, generator=g)
    aug = 0.95 * clean + 0.1 * torch.randn(64, 8, generator=g)
    scale = torch.tensor(1.0, requires_grad=True)
    loss = consistency_loss(scale * aug, scale * clean)
    loss.backward()
    assert scale.grad is not None and abs(float(scale.grad)) < 1e-5
    assert float(consistency_loss(1e3 * aug, 1e3 * clean)) == pytest.approx(float(loss.detach()), rel=1e-4)
    assert float(consistency_loss(clean, clean)) == pytest.approx(0.0, abs=1e-10)
