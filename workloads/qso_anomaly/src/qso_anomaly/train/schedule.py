"""The optimiser and learning-rate schedule of every training backend (one definition).

Adam at ``spec.learning_rate`` with a per-batch schedule: a linear warm-up over the first
:data:`WARMUP_FRACTION` of the steps, then a half-cosine decay to zero at the last step
(Loshchilov & Hutter 2017, SGDR, without restarts; the warm-up of Goyal et al. 2017). The
plain loop and each Ray Train worker get their optimiser from :func:`torch_optimizer`; the
JAX trainer uses the same :func:`lr_factor` as an optax schedule, so the three backends step
the same learning rates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Share of the training steps spent on the linear learning-rate warm-up.
WARMUP_FRACTION = 0.05


def schedule_steps(epochs: int, steps_per_epoch: int) -> tuple[int, int]:
    """Total and warm-up steps of a run.

    Args:
        epochs: Training epochs (at least 1 is assumed).
        steps_per_epoch: Optimiser steps (batches) per epoch on this worker.

    Returns:
        ``(total, warmup)``: total optimiser steps (≥ 1) and warm-up steps
        (``round(WARMUP_FRACTION · total)``, at least 1).
    """
    total = max(1, int(epochs)) * max(1, int(steps_per_epoch))
    return total, max(1, round(WARMUP_FRACTION * total))


def lr_factor(step: Any, total: int, warmup: int, xp: Any = np) -> Any:
    """Learning rate at a step, as a multiple of the peak rate.

    ``(step + 1) / warmup`` during the warm-up, then ½·(1 + cos(π·p)) with
    p = (step − warmup) / (total − warmup): 1 at the end of the warm-up, → 0 at the last step.

    Args:
        step: 0-based optimiser step (an int, or a JAX array inside an optax schedule).
        total: Total optimiser steps of the run (from :func:`schedule_steps`).
        warmup: Warm-up steps (from :func:`schedule_steps`).
        xp: Array module providing ``minimum``, ``clip``, ``cos`` and ``pi`` (NumPy or
            ``jax.numpy``).

    Returns:
        The factor in (0, 1], of ``step``'s type.
    """
    warm = xp.minimum((step + 1) / warmup, 1.0)
    prog = xp.clip((step - warmup) / max(1, total - warmup), 0.0, 1.0)
    return warm * 0.5 * (1.0 + xp.cos(xp.pi * prog))


def torch_optimizer(params: Any, learning_rate: float, epochs: int, steps_per_epoch: int
                    ) -> tuple[Any, Any]:
    """Adam and its per-batch warm-up + cosine scheduler (call ``sched.step()`` after every
    ``opt.step()``).

    Args:
        params: The model parameters (``model.parameters()``).
        learning_rate: Peak learning rate (``spec.learning_rate``).
        epochs: Training epochs.
        steps_per_epoch: Batches per epoch on this worker (``len(loader)``).

    Returns:
        ``(optimizer, scheduler)``: ``torch.optim.Adam`` and a ``LambdaLR`` over
        :func:`lr_factor` (deterministic: no state beyond the step count).
    """
    import torch

    total, warmup = schedule_steps(epochs, steps_per_epoch)
    opt = torch.optim.Adam(params, lr=learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: float(lr_factor(step, total, warmup)))
    return opt, sched

