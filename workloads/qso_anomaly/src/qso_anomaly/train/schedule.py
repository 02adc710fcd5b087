"""The optimiser and learning-rate schedule of the PyTorch training backends (one definition).

Adam at ``spec.learning_rate`` with a cosine decay over the epochs (``CosineAnnealingLR``,
Loshchilov & Hutter 2017, without restarts), stepped once per epoch. The plain loop
(:func:`qso_anomaly.train.loop.train_epochs`) and each Ray Train worker get it from
:func:`torch_optimizer`. (The JAX trainer decays per step with optax's cosine schedule.)

Measured 2026-12-01 (docs/benchmarks.md, issue 12): a linear warm-up over the first 5 % of
the steps with a per-batch cosine neither prevented the divergence of 20-epoch runs (its cause
is the latent-consistency term) nor kept the 6-epoch benchmark's validation AP (0.224 against
0.248), so the schedule stays as it was.
"""

from __future__ import annotations

from typing import Any


def torch_optimizer(params: Any, learning_rate: float, epochs: int) -> tuple[Any, Any]:
    """Adam and its cosine learning-rate scheduler; call ``sched.step()`` once per epoch.

    Args:
        params: The model parameters (``model.parameters()``).
        learning_rate: Initial (peak) learning rate (``spec.learning_rate``).
        epochs: Training epochs (the cosine's half period; at least 1 is used).

    Returns:
        ``(optimizer, scheduler)``: ``torch.optim.Adam`` and ``CosineAnnealingLR`` with
        ``T_max = max(1, epochs)`` (deterministic: no state beyond the epoch count).
    """
    import torch

    opt = torch.optim.Adam(params, lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(epochs)))
    return opt, sched
