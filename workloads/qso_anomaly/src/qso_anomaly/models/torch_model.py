"""PyTorch implementation of :class:`~qso_anomaly.models.spec.ModelSpec`.

Shapes: N spectra (B in training batches), P observed-frame pixels, L latent dimensions, R
rest-frame decoder pixels (``ModelSpec.n_rest``). Flux is in the survey's unit, 1e-17 erg s⁻¹
cm⁻² Å⁻¹; ivar in flux⁻²; wavelengths in Å (vacuum); tensors are float32 on the model's device.
Inputs are expected to have passed the data policy (:mod:`qso_anomaly.data.policy`: finite
flux, ivar ≥ 0, z inside the trained range); nothing here raises a qso_anomaly error, and
mismatched shapes surface as PyTorch's ``RuntimeError``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.models.density import DensityModel
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.models.trough import window_pixels

SCALE_FLOOR = 1e-3
AMP_FLOOR = 1e-8
VALID_EPS = 1e-3


def normalise(
    flux: torch.Tensor, ivar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale each spectrum to order unity: scale = mean |flux| over its valid pixels.

    Args:
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻²; pixels with ivar ≤ 0 are invalid.

    Returns:
        ``(x, ivar_x, scale)``: normalised flux x = flux/scale (N, P), zero on invalid pixels,
        dimensionless; its inverse variance ivar·scale² (N, P); and the scale (N,) in flux
        units, floored at ``SCALE_FLOOR`` (1e-3) so an all-zero spectrum stays finite.
    """
    good = (ivar > 0).to(flux.dtype)
    scale = (flux.abs() * good).sum(-1) / good.sum(-1).clamp_min(1.0)
    scale = scale.clamp_min(SCALE_FLOOR)
    x = flux * good / scale[:, None]
    iv = ivar * scale[:, None] ** 2
    return x, iv, scale


def encoder_inputs(x: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
    """The three encoder input channels of the ``qso-ae-2`` spec (see ``ModelSpec``).

    w = min(1, √iv / mean over valid pixels of √iv) is the relative noise weight: a low-ivar
    pixel carries almost nothing, and w does not depend on the flux scale. No gradient flows
    through w.

    Args:
        x: Normalised flux (N, P) from :func:`normalise`.
        iv: Its inverse variance (N, P); pixels with iv ≤ 0 are invalid.

    Returns:
        (N, 3, P) channels-first tensor [x·w, w, valid], zero on invalid pixels.
    """
    iv = iv.detach()  # w is scale-free; no gradient through √ivar
    good = (iv > 0).to(x.dtype)
    s = torch.sqrt(torch.where(iv > 0, iv, torch.ones_like(iv))) * good
    sref = (s * good).sum(-1) / good.sum(-1).clamp_min(1.0)
    w = (s / sref.clamp_min(1e-12)[:, None]).clamp(max=1.0) * good
    return torch.stack([x * w, w, good], dim=1)


class ConvBlock(nn.Module):
    """Conv1d (same padding) → InstanceNorm1d → PReLU, one encoder block.

    Args:
        cin: Input channels.
        cout: Output channels.
        kernel: Odd kernel size in pixels (padding ``kernel // 2`` keeps the length).
    """

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm = nn.InstanceNorm1d(cout)
        self.act = nn.PReLU(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Activations (N, cin, P').

        Returns:
            Activations (N, cout, P'), normalised per spectrum and channel.
        """
        return self.act(self.norm(self.conv(x)))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.PReLU(1))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Conv encoder with ivar-aware attention pooling (design §8.2, spender-like).

    The last conv block emits 2·C channels split into features h and attention logits a; a
    parallel conv on log(1 + iv) and the log of the valid-pixel fraction of each pooled window
    are added to a, so masked stretches get (almost) no weight; softmax(a)-weighted features
    and log(1 + z) go through an MLP to the latents. Follows spender's attention pooling
    (Melchior et al. 2023, pmelchior/spender ``model.py``).

    Args:
        spec: The architecture (channels, kernels, pool, encoder MLP, latent dimension).
    """

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
        """Encode normalised spectra.

        Args:
            x: Normalised flux (N, P) from :func:`normalise`.
            iv: Its inverse variance (N, P).
            z: Redshifts (N,).

        Returns:
            Latents (N, L).
        """
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
    """The spender-like autoencoder: ``forward(flux, ivar, z)`` → reconstruction (N, P).

    Encoder on the observed frame, decoder MLP to R rest-frame pixels on [rest_start,
    rest_stop] Å, linear resampling to the observed grid at λ/(1 + z), and an amplitude fitted
    to the valid pixels (:func:`fit_amplitude`). The latent density (Gaussian mixture and score
    calibration) is kept as ``density_*`` buffers so that it travels with the state dict.

    Args:
        spec: The architecture.
        grid: The observed-frame wavelength grid (P pixels, Å, vacuum); its wavelengths become
            the ``wave`` buffer.
    """

    def __init__(self, spec: ModelSpec, grid: WavelengthGrid) -> None:
        super().__init__()
        self.spec = spec
        self.grid = grid
        self.encoder = Encoder(spec)
        self.decoder = _mlp([spec.latent_dim, *spec.decoder_mlp, spec.n_rest])
        self.register_buffer("wave", torch.tensor(grid.wave, dtype=torch.float32))
        #: The trough term's window widths in pixels of this grid.
        self.trough_pixels = (window_pixels(grid.wave, spec.trough_widths)
                              if spec.trough_weight else ())
        self.set_density(DensityModel.standard_normal(spec.latent_dim))

    def set_density(self, density: DensityModel) -> None:
        """Store a latent density as float32 buffers (replacing the current ones).

        Args:
            density: Gaussian mixture and calibration; its latent dimension must be
                ``spec.latent_dim``.
        """
        arr = density.to_arrays()
        for name in [b for b in self._buffers if b.startswith("density_")]:
            if name[len("density_"):] not in arr:
                del self._buffers[name]  # e.g. the shape term of a previous density
        for name, value in arr.items():
            self.register_buffer(f"density_{name}", torch.tensor(value, dtype=torch.float32))

    def buffer(self, name: str) -> torch.Tensor:
        """A registered buffer by name (``wave``, ``density_weights``, ...), typed as a tensor.

        Args:
            name: Buffer name.

        Returns:
            The buffer tensor.

        Raises:
            AttributeError: When no attribute of that name exists.
        """
        value = getattr(self, name)
        assert isinstance(value, torch.Tensor)
        return value

    def density(self) -> DensityModel:
        """The latent density stored in the buffers.

        Returns:
            A float64 copy (on the CPU) of the Gaussian mixture and its calibration.
        """
        return DensityModel.from_arrays(
            {k[len("density_"):]: v.detach().cpu().numpy().astype(np.float64)
             for k, v in self._buffers.items() if k.startswith("density_") and v is not None}
        )

    def encode(self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Latents of raw spectra (normalised first).

        Args:
            flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
            ivar: Inverse variance (N, P) in flux⁻².
            z: Redshifts (N,).

        Returns:
            Latents (N, L).
        """
        x, iv, _ = normalise(flux, ivar)
        return self.encoder(x, iv, z)

    def decode_rest(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode latents to rest-frame spectra.

        Args:
            latent: Latents (N, L).

        Returns:
            Rest-frame spectra (N, R) on the decoder grid, in normalised (arbitrary) units.
        """
        return self.decoder(latent)

    def to_observed(self, rest: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Resample rest-frame spectra onto the observed grid at λ_obs / (1 + z).

        Linear interpolation on the rest grid; observed pixels whose rest wavelength falls
        outside [rest_start, rest_stop] are 0.

        Args:
            rest: Rest-frame spectra (N, R).
            z: Redshifts (N,).

        Returns:
            Observed-frame spectra (N, P) in the units of ``rest``.
        """
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
        """Reconstruction and latent of raw spectra.

        Args:
            flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
            ivar: Inverse variance (N, P) in flux⁻²; ivar ≤ 0 marks invalid pixels.
            z: Redshifts (N,).

        Returns:
            ``(recon, latent)``: reconstruction (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ and latents
            (N, L).
        """
        x, iv, scale = normalise(flux, ivar)
        latent = self.encoder(x, iv, z)
        r = self.to_observed(self.decoder(latent), z)
        recon = fit_amplitude(r, x, iv) * scale[:, None]
        return recon, latent

    def forward(self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct raw spectra.

        Args:
            flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
            ivar: Inverse variance (N, P) in flux⁻².
            z: Redshifts (N,).

        Returns:
            Reconstruction (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        """
        return self.forward_parts(flux, ivar, z)[0]


def fit_amplitude(r: torch.Tensor, x: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
    """Scale a model spectrum to the data by weighted least squares.

    ``a·r`` with a = Σ iv·x·r / Σ iv·r² (pixels with iv = 0 do not count; the denominator is
    floored at ``AMP_FLOOR``), so the reconstruction does not depend on how the flux scale was
    estimated from a partly masked spectrum.

    Args:
        r: Model spectra (N, P) on the observed grid.
        x: Normalised data flux (N, P).
        iv: Inverse variance of ``x`` (N, P).

    Returns:
        The scaled model spectra (N, P), in the units of ``x``.
    """
    a = (iv * x * r).sum(-1) / (iv * r * r).sum(-1).clamp_min(AMP_FLOOR)
    return r * a[:, None]


def build_model(spec: ModelSpec, grid: WavelengthGrid) -> QsoAutoencoder:
    """A freshly initialised autoencoder with a standard-normal latent density.

    Args:
        spec: The architecture.
        grid: The observed-frame wavelength grid (Å, vacuum).

    Returns:
        The model (CPU, training mode).
    """
    return QsoAutoencoder(spec, grid)


def chi2_loss(recon: torch.Tensor, flux: torch.Tensor, ivar: torch.Tensor) -> torch.Tensor:
    """Training loss Σ ½·ivar·(x − x̂)² / P, averaged over the batch (design §8.2).

    Computed on the normalised scale of :func:`normalise`, so every spectrum weighs the same
    whatever its brightness; P is the number of grid pixels (masked ones included).

    Args:
        recon: Reconstruction (B, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        flux: Flux (B, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (B, P) in flux⁻².

    Returns:
        The loss, a 0-d tensor (dimensionless, differentiable).
    """
    _, iv, scale = normalise(flux, ivar)
    r = (flux - recon) / scale[:, None]
    return (0.5 * iv * r**2).sum(-1).mean() / flux.shape[-1]


def consistency_loss(latent_aug: torch.Tensor, latent_clean: torch.Tensor) -> torch.Tensor:
    """Mean squared latent shift caused by a random instrument state (augmentation).

    Measured in units of the batch's latent variance (so shrinking the latent scale cannot
    lower it, floored at 1e-6); the clean latent is the target (no gradient through it).

    Args:
        latent_aug: Latents of the augmented spectra (B, L).
        latent_clean: Latents of the same spectra without augmentation (B, L).

    Returns:
        The loss, a 0-d tensor (dimensionless).
    """
    target = latent_clean.detach()
    var = target.var(dim=0, unbiased=False).mean().clamp_min(1e-6)
    return ((latent_aug - target) ** 2).mean() / var


def gmm_nll_torch(model: QsoAutoencoder, latent: torch.Tensor) -> torch.Tensor:
    """−log p(latent) under the model's Gaussian mixture (the torch form of ``DensityModel.nll``).

    Args:
        model: The autoencoder whose ``density_*`` buffers hold the mixture.
        latent: Latents (N, L).

    Returns:
        −log p (N,) in nats, differentiable with respect to ``latent``.
    """
    w = model.buffer("density_weights")
    mu = model.buffer("density_means")
    pc = model.buffer("density_prec_chol")
    d = latent.shape[1]
    diff = latent[:, None, :] - mu[None]
    y = torch.einsum("nkd,kde->nke", diff, pc)
    logdet = torch.log(torch.diagonal(pc, dim1=1, dim2=2)).sum(-1)
    logp = torch.log(w) - 0.5 * d * math.log(2 * math.pi) + logdet - 0.5 * (y**2).sum(-1)
    return -torch.logsumexp(logp, dim=1)


def has_shape_term(model: QsoAutoencoder) -> bool:
    """Whether the model's density carries the broad-band shape term (``density_shape_*``)."""
    return "density_shape_cov" in model._buffers


def shape_z_torch(
    model: QsoAutoencoder, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Broad-band shape deviate of spectra, the torch form of ``ShapeModel.zscore``.

    From the observed pixels only (ivar > 0): ivar-weighted mean flux per wide window, windows
    with under ``MIN_COVERAGE`` of their pixels observed are marginalised out, the level is
    profiled out (see :mod:`qso_anomaly.models.shape`).

    Args:
        model: An autoencoder whose density has a shape term (:func:`has_shape_term`).
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻².
        z: Redshifts (N,).

    Returns:
        The Wilson–Hilferty deviate of the profiled Mahalanobis distance (N,), dimensionless.
    """
    from qso_anomaly.models.shape import FLUX_FLOOR, MIN_COVERAGE

    e = model.buffer("density_shape_win_edges")
    wave = model.buffer("wave")[:, None]
    wm = ((wave >= e[None, :-1]) & (wave < e[None, 1:])).to(flux.dtype)  # (P, K)
    good = (ivar > 0).to(flux.dtype)
    iv = ivar * good
    sw = iv @ wm
    sf = (iv * flux) @ wm
    obs = ((good @ wm) >= MIN_COVERAGE * wm.sum(0)[None]) & (sw > 0)
    m = torch.where(obs, sf / torch.where(obs, sw, torch.ones_like(sw)), torch.ones_like(sf))
    mo = obs.to(flux.dtype)
    lev = (m.abs() * mo).sum(-1) / mo.sum(-1).clamp_min(1.0)
    mm = torch.maximum(m, FLUX_FLOOR * lev.clamp_min(1e-6)[:, None])
    y = torch.log(mm)
    noise = torch.where(obs, 1.0 / (torch.where(obs, sw, torch.ones_like(sw)) * mm**2),
                        torch.zeros_like(mm))
    b = torch.searchsorted(model.buffer("density_shape_z_edges").contiguous(), z.contiguous())
    zr = model.buffer("density_shape_zrange")[b]
    dz = torch.maximum(torch.minimum(z - zr[:, 0], zr[:, 1]), -zr[:, 1])
    mu = model.buffer("density_shape_mu")[b] + model.buffer("density_shape_beta")[b] * dz[:, None]
    k = y.shape[1]
    eye = torch.eye(k, dtype=flux.dtype)
    s = model.buffer("density_shape_cov")[b] + noise[:, :, None] * eye
    s = s * mo[:, :, None] * mo[:, None, :] + (1 - mo)[:, :, None] * eye
    nobs = mo.sum(-1)
    d = (y - mu) * mo
    d = (d - (d.sum(-1) / nobs.clamp_min(1.0))[:, None]) * mo
    x = torch.linalg.solve(s, torch.stack([d, mo], -1))
    dpd = (d * x[..., 0]).sum(-1)
    opd = (mo * x[..., 0]).sum(-1)
    opo = (mo * x[..., 1]).sum(-1)
    d2 = (dpd - opd**2 / opo.clamp_min(1e-12)).clamp_min(0.0)
    dof = (nobs - 1).clamp_min(1.0)
    return ((d2 / dof).clamp_min(1e-12) ** (1 / 3) - (1 - 2 / (9 * dof))) / torch.sqrt(2 / (9 * dof))


def has_trough_term(model: QsoAutoencoder) -> bool:
    """Whether the model's calibration carries the absorption-trough term (``calib`` (8,))."""
    return bool(model.spec.trough_weight) and model.buffer("density_calib").numel() >= 8


def trough_depth_torch(flux: torch.Tensor, ivar: torch.Tensor, recon: torch.Tensor,
                       widths_px: tuple[int, ...], n_sigma: float) -> torch.Tensor:
    """The deepest absorption trough below the reconstruction (torch form).

    As :func:`qso_anomaly.models.trough.trough_depth`; differentiable almost everywhere.

    Args:
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻² (ivar ≤ 0: not observed).
        recon: Reconstruction (N, P), same units as ``flux``.
        widths_px: Window widths in pixels (:func:`~qso_anomaly.models.trough.window_pixels`).
        n_sigma: k of the lower bound d̂ − k·σ_d.

    Returns:
        max over widths and positions of d̂ − k·σ_d, floored at
        :data:`~qso_anomaly.models.trough.NO_TROUGH` and capped at
        :data:`~qso_anomaly.models.trough.TROUGH_CAP`, shape (N,), dimensionless.
    """
    from qso_anomaly.models.shape import MIN_COVERAGE
    from qso_anomaly.models.trough import NO_TROUGH, TROUGH_CAP, window_sums

    good = (ivar > 0).to(flux.dtype)
    iv = ivar * good
    parts = torch.stack([iv * recon * (recon - flux), iv * recon * recon, good], 1)  # (N,3,P)
    best = torch.full(flux.shape[:1], NO_TROUGH, dtype=flux.dtype, device=flux.device)
    for w, s in window_sums(parts, widths_px).items():
        num, den, n = s[:, 0], s[:, 1], s[:, 2]
        ok = (n >= MIN_COVERAGE * w - 1e-3) & (den > 0)
        safe = torch.where(ok, den, torch.ones_like(den))
        bound = torch.where(ok, num / safe - n_sigma * torch.rsqrt(safe),
                            torch.full_like(den, NO_TROUGH))
        best = torch.maximum(best, bound.amax(-1))
    return best.clamp_max(TROUGH_CAP)


def score_parts_torch(
    model: QsoAutoencoder, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The anomaly score and its two terms, all differentiable.

    χ²/dof = Σ ivar·(flux − recon)² / n_valid over the pixels with ivar > 0; score =
    ``chi2_weight``·(log max(χ²/dof, 1e-6) − chi2_loc)/chi2_scale + ``density_weight``·(−log p
    − nll_loc)/nll_scale [+ ``shape_weight``·(shape_z − shape_loc)/shape_scale when the density
    has the broad-band shape term, :func:`shape_z_torch`] [+ ``trough_weight``·(trough −
    trough_loc)/trough_scale when the calibration has the absorption-trough term,
    :func:`trough_depth_torch`] with the calibration in the ``density_calib`` buffer.
    Design §8.2
    names the two terms; −log p(latent) is the outlier score of Liang et al. 2023 (spender with
    a normalising flow; a Gaussian mixture here), and the terms are combined as a weighted sum
    of robustly standardised values rather than the design's rank average.

    Args:
        model: The autoencoder (eval mode for scoring).
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻².
        z: Redshifts (N,).

    Returns:
        ``(score, chi2_dof, nll)``, each (N,): dimensionless score (higher = more anomalous),
        dimensionless χ²/dof, and −log p(latent) in nats.
    """
    recon, latent = model.forward_parts(flux, ivar, z)
    good = (ivar > 0).to(flux.dtype)
    chi2 = (ivar * (flux - recon) ** 2 * good).sum(-1) / good.sum(-1).clamp_min(1.0)
    nll = gmm_nll_torch(model, latent)
    c = model.buffer("density_calib")
    spec = model.spec
    score = spec.chi2_weight * (torch.log(chi2.clamp_min(1e-6)) - c[0]) / c[1]
    score = score + spec.density_weight * (nll - c[2]) / c[3]
    if has_shape_term(model):
        score = score + spec.shape_weight * (shape_z_torch(model, flux, ivar, z) - c[4]) / c[5]
    if has_trough_term(model):
        t = trough_depth_torch(flux, ivar, recon, model.trough_pixels, spec.trough_sigma)
        score = score + spec.trough_weight * (t - c[6]) / c[7]
    return score, chi2, nll


def anomaly_score_torch(
    model: QsoAutoencoder, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Differentiable anomaly score, the function Integrated Gradients differentiates.

    Args:
        model: The autoencoder.
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (the attributed input).
        ivar: Inverse variance (N, P) in flux⁻².
        z: Redshifts (N,).

    Returns:
        Score (N,), as in :func:`score_parts_torch`.
    """
    return score_parts_torch(model, flux, ivar, z)[0]
