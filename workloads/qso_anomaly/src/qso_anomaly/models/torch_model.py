"""PyTorch implementation of :class:`~qso_anomaly.models.spec.ModelSpec`."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.spec import ModelSpec

SCALE_FLOOR = 1e-3
AMP_FLOOR = 1e-8
VALID_EPS = 1e-3


def normalise(
    flux: torch.Tensor, ivar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-spectrum scale = mean |flux| over good pixels; returns (x, ivar_x, scale)."""
    good = (ivar > 0).to(flux.dtype)
    scale = (flux.abs() * good).sum(-1) / good.sum(-1).clamp_min(1.0)
    scale = scale.clamp_min(SCALE_FLOOR)
    x = flux * good / scale[:, None]
    iv = ivar * scale[:, None] ** 2
    return x, iv, scale


def encoder_inputs(x: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
    """(N, 3, P): [x·w, w, valid] with w = min(1, √iv / mean over valid pixels of √iv)."""
    iv = iv.detach()  # w is scale-free; no gradient through √ivar
    good = (iv > 0).to(x.dtype)
    s = torch.sqrt(torch.where(iv > 0, iv, torch.ones_like(iv))) * good
    sref = (s * good).sum(-1) / good.sum(-1).clamp_min(1.0)
    w = (s / sref.clamp_min(1e-12)[:, None]).clamp(max=1.0) * good
    return torch.stack([x * w, w, good], dim=1)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm = nn.InstanceNorm1d(cout)
        self.act = nn.PReLU(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.PReLU(1))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        chans = list(spec.channels)
        cins = [3, *chans[:-1]]
        couts = [*chans[:-1], 2 * chans[-1]]
        self.blocks = nn.ModuleList(
            ConvBlock(ci, co, k) for ci, co, k in zip(cins, couts, spec.kernels, strict=True)
        )
        self.pool = nn.MaxPool1d(spec.pool) if spec.pool > 1 else nn.Identity()
        k = spec.kernels[-1]
        self.ivar_conv = nn.Conv1d(1, chans[-1], k, padding=k // 2)
        self.mlp = _mlp([chans[-1] + 1, *spec.encoder_mlp, spec.latent_dim])

    def forward(self, x: torch.Tensor, iv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = encoder_inputs(x, iv)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                h = self.pool(h)
        c = self.spec.channels[-1]
        feat, att = h[:, :c], h[:, c:]
        n_down = self.spec.pool ** (len(self.blocks) - 1)
        u = torch.log1p(iv)[:, None, :]
        v = (iv > 0).to(x.dtype)[:, None, :]
        if n_down > 1:
            u = nn.functional.avg_pool1d(u, n_down)
            v = nn.functional.avg_pool1d(v, n_down)
        att = att + self.ivar_conv(u[..., : att.shape[-1]])
        att = att + torch.log(v[..., : att.shape[-1]] + VALID_EPS)
        w = torch.softmax(att, dim=-1)
        pooled = (feat * w).sum(-1)
        return self.mlp(torch.cat([pooled, torch.log1p(z)[:, None]], dim=1))


class QsoAutoencoder(nn.Module):
    """forward(flux, ivar, z) → reconstruction (N, P) in flux units."""

    def __init__(self, spec: ModelSpec, grid: WavelengthGrid) -> None:
        super().__init__()
        self.spec = spec
        self.grid = grid
        self.encoder = Encoder(spec)
        self.decoder = _mlp([spec.latent_dim, *spec.decoder_mlp, spec.n_rest])
        self.register_buffer("wave", torch.tensor(grid.wave, dtype=torch.float32))
        self.set_density(DensityModel.standard_normal(spec.latent_dim))

    def set_density(self, density: DensityModel) -> None:
        arr = density.to_arrays()
        for name, value in arr.items():
            self.register_buffer(f"density_{name}", torch.tensor(value, dtype=torch.float32))

    def buffer(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        assert isinstance(value, torch.Tensor)
        return value

    def density(self) -> DensityModel:
        return DensityModel.from_arrays(
            {k: getattr(self, f"density_{k}").detach().cpu().numpy().astype(np.float64)
             for k in ("weights", "means", "prec_chol", "calib")}
        )

    def encode(self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x, iv, _ = normalise(flux, ivar)
        return self.encoder(x, iv, z)

    def decode_rest(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def to_observed(self, rest: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        lam = self.buffer("wave")[None, :] / (1.0 + z[:, None])
        pos = (lam - spec.rest_start) / spec.rest_step
        inside = (pos >= 0) & (pos <= spec.n_rest - 1)
        pos = pos.clamp(0.0, spec.n_rest - 1.0)
        i0 = pos.floor().clamp(max=spec.n_rest - 2).long()
        w = pos - i0.to(pos.dtype)
        v0 = torch.gather(rest, 1, i0)
        v1 = torch.gather(rest, 1, i0 + 1)
        return ((1 - w) * v0 + w * v1) * inside.to(rest.dtype)

    def forward_parts(
        self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction in flux units, latent)."""
        x, iv, scale = normalise(flux, ivar)
        latent = self.encoder(x, iv, z)
        r = self.to_observed(self.decoder(latent), z)
        recon = fit_amplitude(r, x, iv) * scale[:, None]
        return recon, latent

    def forward(self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(flux, ivar, z)[0]


def fit_amplitude(r: torch.Tensor, x: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
    """``a·r`` with a = Σ iv·x·r / Σ iv·r² over the valid pixels (weighted least squares), so
    the reconstruction does not depend on how the flux scale was estimated from a partly
    masked spectrum."""
    a = (iv * x * r).sum(-1) / (iv * r * r).sum(-1).clamp_min(AMP_FLOOR)
    return r * a[:, None]


def build_model(spec: ModelSpec, grid: WavelengthGrid) -> QsoAutoencoder:
    return QsoAutoencoder(spec, grid)


def chi2_loss(recon: torch.Tensor, flux: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
    """Σ ½·ivar·(x − x̂)² / L averaged over the batch (design §8.2), in normalised units."""
    _, iv, scale = normalise(flux, ivar)
    r = (flux - recon) / scale[:, None]
    return (0.5 * iv * r**2).sum(-1).mean() / flux.shape[-1]


def consistency_loss(latent_aug: torch.Tensor, latent_clean: torch.Tensor) -> torch.Tensor:
    """Mean squared latent shift caused by the instrument state, in units of the batch's latent
    variance (so shrinking the latent scale cannot lower it); the clean latent is the target."""
    target = latent_clean.detach()
    var = target.var(dim=0, unbiased=False).mean().clamp_min(1e-6)
    return ((latent_aug - target) ** 2).mean() / var


def gmm_nll_torch(model: QsoAutoencoder, latent: torch.Tensor) -> torch.Tensor:
    w = model.buffer("density_weights")
    mu = model.buffer("density_means")
    pc = model.buffer("density_prec_chol")
    d = latent.shape[1]
    diff = latent[:, None, :] - mu[None]
    y = torch.einsum("nkd,kde->nke", diff, pc)
    logdet = torch.log(torch.diagonal(pc, dim1=1, dim2=2)).sum(-1)
    logp = torch.log(w) - 0.5 * d * math.log(2 * math.pi) + logdet - 0.5 * (y**2).sum(-1)
    return -torch.logsumexp(logp, dim=1)


def score_parts_torch(
    model: QsoAutoencoder, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(score, χ²/dof, −log p(latent)), all differentiable."""
    recon, latent = model.forward_parts(flux, ivar, z)
    good = (ivar > 0).to(flux.dtype)
    chi2 = (ivar * (flux - recon) ** 2 * good).sum(-1) / good.sum(-1).clamp_min(1.0)
    nll = gmm_nll_torch(model, latent)
    c = model.buffer("density_calib")
    spec = model.spec
    score = spec.chi2_weight * (torch.log(chi2.clamp_min(1e-6)) - c[0]) / c[1]
    score = score + spec.density_weight * (nll - c[2]) / c[3]
    return score, chi2, nll


def anomaly_score_torch(
    model: QsoAutoencoder, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Differentiable anomaly score (N,) — used by Integrated Gradients w.r.t. flux."""
    return score_parts_torch(model, flux, ivar, z)[0]
