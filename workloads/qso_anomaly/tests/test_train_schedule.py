"""The optimiser schedule shared by the PyTorch training backends."""

import math

import pytest
import torch

from qso_anomaly.train.schedule import torch_optimizer


def test_torch_optimizer_is_adam_with_a_per_epoch_cosine_from_the_spec_rate() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    opt, sched = torch_optimizer([param], 2e-3, 4)
    assert isinstance(opt, torch.optim.Adam)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([2e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    _, sched0 = torch_optimizer([param], 1e-3, 0)
    assert sched0.T_max == 1
