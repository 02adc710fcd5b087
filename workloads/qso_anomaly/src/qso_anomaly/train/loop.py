"""The plain PyTorch training loop (also the body of each Ray Train worker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.models.torch_model import QsoAutoencoder, chi2_loss, consistency_loss
from qso_anomaly.train.augment import augment_masks
from qso_anomaly.train.schedule import torch_optimizer


def tensors(batch: SpectraBatch) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(batch.flux), torch.from_numpy(batch.ivar), torch.from_numpy(batch.z)
    )


def augmented(model: torch.nn.Module, flux: torch.Tensor, ivar: torch.Tensor,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The masking augmentation of :mod:`qso_anomaly.train.augment` on a torch batch."""
    net: Any = getattr(model, "module", model)  # DDP-wrapped under Ray Train
    frac = float(getattr(net.spec, "augment_fraction", 0.0))
    if frac <= 0:
        return flux, ivar
    wave = np.asarray(net.grid.wave, dtype=np.float64)
    fa, ia = augment_masks(flux.detach().cpu().numpy(), ivar.detach().cpu().numpy(), wave, rng,
                           frac)
    return torch.from_numpy(fa).to(flux.device), torch.from_numpy(ia).to(ivar.device)


def run_epoch(model: torch.nn.Module, loader: Any, opt: torch.optim.Optimizer, *,
              device: torch.device | None = None,
              rng: np.random.Generator | None = None) -> float:
    """One pass of Adam on the ivar-weighted χ² loss (gradients clipped at 10); the mean loss.

    The model sees masking-augmented inputs; the loss is against the original flux and ivar.
    ``rng`` drives the augmentation (default: seeded from torch's generator, so
    ``torch.manual_seed`` makes the epoch reproducible). ``device=None`` leaves the batches
    where the loader puts them (Ray Train's prepared loader moves them itself)."""
    model.train()
    if rng is None:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
    total, count = 0.0, 0
    for flux, ivar, z in loader:
        if device is not None:
            flux, ivar, z = flux.to(device), ivar.to(device), z.to(device)
        opt.zero_grad()
        fa, ia = augmented(model, flux, ivar, rng)
        net: Any = getattr(model, "module", model)
        recon, lat_aug = net.forward_parts(fa, ia, z)
        loss = chi2_loss(recon, flux, ivar)
        weight = float(getattr(net.spec, "consistency_weight", 0.0))
        if weight > 0 and fa is not flux:
            loss = loss + weight * consistency_loss(lat_aug, net.encode(flux, ivar, z))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        total += float(loss.detach()) * len(flux)
        count += len(flux)
    return total / max(count, 1)


def train_epochs(
    model: torch.nn.Module,
    loader: DataLoader,
    epochs: int,
    lr: float,
    *,
    device: torch.device | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Adam with the cosine schedule of :mod:`qso_anomaly.train.schedule` (initial rate
    ``lr``) on the ivar-weighted χ² loss; returns the mean loss per epoch."""
    device = device or torch.device("cpu")
    opt, sched = torch_optimizer(model.parameters(), lr, epochs)
    history = []
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
    for epoch in range(epochs):
        history.append(run_epoch(model, loader, opt, device=device, rng=rng))
        sched.step()
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


EpochEval = Callable[[QsoAutoencoder, int], dict[str, Any]]


def train_local(
    model: QsoAutoencoder, batch: SpectraBatch, epochs: int, seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    epoch_eval: EpochEval | None = None,
) -> dict[str, Any]:
    """Plain loop. ``epoch_eval(model, epoch)`` runs after every epoch; its time is excluded
    from ``train_seconds`` and its results land in ``epoch_eval`` with the cumulative training
    time so far (used by the time-to-target-AP benchmark)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(tensors(batch), batch_size=model.spec.batch_size, shuffle=True,
                        generator=gen, drop_last=len(batch) > model.spec.batch_size)
    evals: list[dict[str, Any]] = []
    clock = {"train": 0.0, "start": time.perf_counter()}

    def hook(epoch: int, loss: float) -> None:
        clock["train"] += time.perf_counter() - clock["start"]
        if on_epoch is not None:
            on_epoch(epoch, loss)
        if epoch_eval is not None:
            res = epoch_eval(model, epoch)
            model.train()
            evals.append({"epoch": epoch, "train_seconds": clock["train"], "loss": loss, **res})
        clock["start"] = time.perf_counter()

    hist = train_epochs(model, loader, epochs, model.spec.learning_rate, on_epoch=hook)
    out: dict[str, Any] = {"loss_history": [float(h) for h in hist],
                           "train_seconds": clock["train"], "backend": "local"}
    if evals:
        out["epoch_eval"] = evals
    return out


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
