"""The optimiser schedule shared by the training backends."""

import numpy as np
import pytest
import torch

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

