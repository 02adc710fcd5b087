"""JAX (flax.linen) implementation of :class:`~qso_anomaly.models.spec.ModelSpec`.

Same architecture, parameter for parameter, as :mod:`qso_anomaly.models.torch_model`
(channels-last inside, identical maths). :func:`params_from_torch` / :func:`state_dict_from_params`
convert weights both ways; the parity test checks that both frameworks give the same scores.

Shapes: N spectra, P observed-frame pixels, L latent dimensions, R rest-frame decoder pixels,
C channels (channels-last inside the network). Flux in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar in
flux⁻², wavelengths in Å (vacuum), arrays float32. Inputs are expected to have passed the data
policy (:mod:`qso_anomaly.data.policy`); nothing here raises a qso_anomaly error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.models.scoring import ScoreResult
from qso_anomaly.models.spec import ModelSpec
from qso_anomaly.models.trough import window_pixels

SCALE_FLOOR = 1e-3
AMP_FLOOR = 1e-8
VALID_EPS = 1e-3
Params = dict[str, Any]


def _prelu(x: jnp.ndarray, a: jnp.ndarray) -> jnp.ndarray:
    return jnp.where(x >= 0, x, a * x)


class MLP(nn.Module):
    """Dense layers with PReLU (initial slope 0.25, as ``torch.nn.PReLU``) between them.

    Attributes:
        sizes: Layer widths, input first (``len(sizes) - 1`` dense layers).
    """

    sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Apply the MLP.

        Args:
            x: Inputs (N, sizes[0]).

        Returns:
            Outputs (N, sizes[-1]).
        """
        n = len(self.sizes) - 1
        for i in range(n):
            x = nn.Dense(self.sizes[i + 1], name=f"dense_{i}")(x)
            if i < n - 1:
                a = self.param(f"prelu_{i}", nn.initializers.constant(0.25), (1,))
                x = _prelu(x, a)
        return x


def encoder_inputs(x: jnp.ndarray, iv: jnp.ndarray) -> jnp.ndarray:
    """Encoder input channels, as :func:`qso_anomaly.models.torch_model.encoder_inputs`.

    Args:
        x: Normalised flux (N, P) from :func:`normalise`.
        iv: Its inverse variance (N, P); iv ≤ 0 marks invalid pixels (no gradient through it).

    Returns:
        (N, P, 3) channels-last array [x·w, w, valid].
    """
    iv = jax.lax.stop_gradient(iv)
    good = (iv > 0).astype(x.dtype)
    s = jnp.sqrt(jnp.where(iv > 0, iv, 1.0)) * good
    sref = (s * good).sum(-1) / jnp.maximum(good.sum(-1), 1.0)
    w = jnp.minimum(s / jnp.maximum(sref, 1e-12)[:, None], 1.0) * good
    return jnp.stack([x * w, w, good], axis=-1)


def fit_amplitude(r: jnp.ndarray, x: jnp.ndarray, iv: jnp.ndarray) -> jnp.ndarray:
    """Weighted least-squares amplitude, as :func:`qso_anomaly.models.torch_model.fit_amplitude`.

    Args:
        r: Model spectra (N, P).
        x: Normalised data flux (N, P).
        iv: Inverse variance of ``x`` (N, P).

    Returns:
        ``a·r`` (N, P) with a = Σ iv·x·r / max(Σ iv·r², ``AMP_FLOOR``).
    """
    a = (iv * x * r).sum(-1) / jnp.maximum((iv * r * r).sum(-1), AMP_FLOOR)
    return r * a[:, None]


# A convolution with at most this many input channels × taps is computed without XLA's
# convolution op (see Conv1d).
SMALL_CONV_TERMS = 32


class Conv1d(nn.Module):
    """1-D convolution, same padding, channels-last: ``flax.linen.Conv``'s parameters.

    Parameters ``kernel`` (k, C_in, C_out) and ``bias`` (C_out,), with ``nn.Conv``'s names,
    shapes and initialisers (LeCun normal, zeros), so weight trees, :func:`init_params` and
    :func:`params_from_torch` are unchanged. XLA:CPU's convolution (jaxlib 0.10, channels-last
    as here and as ``nn.Conv``) is slow on few input channels: 34-44 ms wall for the
    first block's 3 → 8 channels, 5 taps, 256 × 1,946 px, against 6.5 ms as broadcast
    multiply-adds. So a convolution with C_in·k ≤ :data:`SMALL_CONV_TERMS` is computed without
    it: with one input channel (the ivar convolution, 1 × 21 taps) as a (k, C_out) matrix
    product of the k shifted copies; otherwise (the first block, 3 × 5) as C_in·k
    multiply-adds of shifted input planes, which XLA fuses into one loop with the input
    channels before it and the normalisation statistics after it. Wider convolutions use
    ``lax.conv_general_dilated`` with ('NWC', 'WIO', 'NWC'), as ``nn.Conv`` does.

    Attributes:
        features: Output channels C_out.
        kernel: Odd kernel size k in pixels (padding k // 2 keeps the length).
    """

    features: int
    kernel: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Convolve.

        Args:
            x: Activations (N, P', C_in), channels-last.

        Returns:
            Activations (N, P', C_out): Σ_j Σ_c x[:, i + j - k//2, c]·kernel[j, c] + bias
            (zero padding), as ``torch.nn.Conv1d`` (cross-correlation).
        """
        k, cin, p = self.kernel, x.shape[-1], self.kernel // 2
        w = self.param("kernel", nn.initializers.lecun_normal(), (k, cin, self.features))
        b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        w, b = w.astype(x.dtype), b.astype(x.dtype)
        if k * cin > SMALL_CONV_TERMS:
            y = jax.lax.conv_general_dilated(x, w, (1,), [(p, p)],
                                             dimension_numbers=("NWC", "WIO", "NWC"))
            return y + b
        length = x.shape[1]
        if cin == 1:
            # one input channel: the k shifted copies side by side, times the (k, C_out) kernel
            xp = jnp.pad(x[..., 0], ((0, 0), (p, p)))
            taps = jnp.stack([xp[:, j:j + length] for j in range(k)], axis=-1)
            return taps @ w[:, 0, :] + b
        # one padded plane per input channel (no interleaved copy), C_in·k multiply-adds
        planes = [jnp.pad(x[..., c], ((0, 0), (p, p))) for c in range(cin)]
        y = b
        for j in range(k):
            for c in range(cin):
                y = y + planes[c][:, j:j + length, None] * w[j, c]
        return y


def instance_norm(x: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
    """Normalise each spectrum and channel over the pixel axis, as ``torch.nn.InstanceNorm1d``.

    (x − mean) / sqrt(var + eps) with the biased variance, var = mean(x²) − mean(x)² (floored
    at 0): both sums come from one pass over ``x``, which XLA fuses with the convolution
    before it. The two-pass form, mean((x − mean)²), makes XLA:CPU materialise x − mean and
    recompute the fused convolution for each consumer: 69 vs 47 CPU-ms per 256-spectrum batch
    of the whole CI-model scoring function (2-core CPU, docs/benchmarks.md). The one-pass
    variance loses about ε·(mean/std)² of relative precision (ε = 1.2e-7 in float32): 1e-4 at
    mean/std = 30; encoder activations are centred well below that (scores agree with PyTorch
    to 4e-5 on the synthetic survey; tests ``test_models_parity.py``).

    Args:
        x: Activations (N, P', C), channels-last.
        eps: Added to the variance (``InstanceNorm1d``'s default 1e-5).

    Returns:
        Normalised activations (N, P', C).
    """
    mean = x.mean(axis=1, keepdims=True)
    var = jnp.maximum((x * x).mean(axis=1, keepdims=True) - mean * mean, 0.0)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class ConvBlock(nn.Module):
    """Conv (same padding) → instance norm (ε = 1e-5, no affine) → PReLU, channels-last.

    Attributes:
        cout: Output channels.
        kernel: Odd kernel size in pixels.
    """

    cout: int
    kernel: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # (N, L, C)
        """Apply the block.

        Args:
            x: Activations (N, P', C_in).

        Returns:
            Activations (N, P', cout), normalised per spectrum and channel.
        """
        x = Conv1d(self.cout, self.kernel, name="conv")(x)
        x = instance_norm(x)
        a = self.param("prelu", nn.initializers.constant(0.25), (1,))
        return _prelu(x, a)


class Encoder(nn.Module):
    """Conv encoder with ivar-aware attention pooling, as the torch ``Encoder``.

    Attributes:
        channels: Conv output channels per block (``ModelSpec.channels``).
        kernels: Odd kernel sizes per block, in pixels.
        pool: Max-pool factor between blocks.
        encoder_mlp: Hidden sizes of the MLP to the latents.
        latent_dim: Latent dimension L.
    """

    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    pool: int
    encoder_mlp: tuple[int, ...]
    latent_dim: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, iv: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
        """Encode normalised spectra.

        Args:
            x: Normalised flux (N, P).
            iv: Its inverse variance (N, P).
            z: Redshifts (N,).

        Returns:
            Latents (N, L).
        """
        chans = list(self.channels)
        couts = [*chans[:-1], 2 * chans[-1]]
        h = encoder_inputs(x, iv)
        nb = len(couts)
        for i, (co, k) in enumerate(zip(couts, self.kernels, strict=True)):
            h = ConvBlock(co, k, name=f"block_{i}")(h)
            if i < nb - 1 and self.pool > 1:
                h = nn.max_pool(h, (self.pool,), strides=(self.pool,), padding="VALID")
        c = chans[-1]
        feat, att = h[..., :c], h[..., c:]
        n_down = self.pool ** (nb - 1)
        u = jnp.log1p(iv)[:, :, None]
        v = (iv > 0).astype(x.dtype)[:, :, None]
        if n_down > 1:
            u = nn.avg_pool(u, (n_down,), strides=(n_down,), padding="VALID")
            v = nn.avg_pool(v, (n_down,), strides=(n_down,), padding="VALID")
        k = self.kernels[-1]
        att = att + Conv1d(c, k, name="ivar_conv")(u[:, : att.shape[1]])
        att = att + jnp.log(v[:, : att.shape[1]] + VALID_EPS)
        w = jax.nn.softmax(att, axis=1)
        pooled = (feat * w).sum(axis=1)
        inp = jnp.concatenate([pooled, jnp.log1p(z)[:, None]], axis=1)
        return MLP((c + 1, *self.encoder_mlp, self.latent_dim), name="mlp")(inp)


class Autoencoder(nn.Module):
    """Encoder + rest-frame decoder MLP (the flax twin of ``QsoAutoencoder``'s network).

    Resampling to the observed frame and the amplitude fit are outside the module
    (:func:`to_observed`, :func:`fit_amplitude`). Build it with :func:`module_for`.

    Attributes:
        channels: Conv output channels per block.
        kernels: Odd kernel sizes per block, in pixels.
        pool: Max-pool factor between blocks.
        encoder_mlp: Hidden sizes of the encoder MLP.
        latent_dim: Latent dimension L.
        decoder_mlp: Hidden sizes of the decoder MLP.
        n_rest: Rest-frame decoder pixels R.
    """

    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    pool: int
    encoder_mlp: tuple[int, ...]
    latent_dim: int
    decoder_mlp: tuple[int, ...]
    n_rest: int

    def setup(self) -> None:
        """Create the encoder and decoder submodules (flax ``setup``)."""
        self.encoder = Encoder(self.channels, self.kernels, self.pool, self.encoder_mlp,
                               self.latent_dim)
        self.decoder = MLP((self.latent_dim, *self.decoder_mlp, self.n_rest))

    def __call__(self, x: jnp.ndarray, iv: jnp.ndarray, z: jnp.ndarray):
        """Encode and decode normalised spectra.

        Args:
            x: Normalised flux (N, P).
            iv: Its inverse variance (N, P).
            z: Redshifts (N,).

        Returns:
            ``(rest, latent)``: rest-frame spectra (N, R) in normalised units and latents
            (N, L).
        """
        latent = self.encoder(x, iv, z)
        return self.decoder(latent), latent


def module_for(spec: ModelSpec) -> Autoencoder:
    """The flax module of a spec.

    Args:
        spec: The architecture.

    Returns:
        An unbound :class:`Autoencoder` (use ``.init`` / ``.apply``).
    """
    return Autoencoder(tuple(spec.channels), tuple(spec.kernels), spec.pool,
                       tuple(spec.encoder_mlp), spec.latent_dim, tuple(spec.decoder_mlp),
                       spec.n_rest)


def normalise(flux: jnp.ndarray, ivar: jnp.ndarray):
    """Per-spectrum scaling, as :func:`qso_anomaly.models.torch_model.normalise`.

    Args:
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻².

    Returns:
        ``(x, ivar_x, scale)``: normalised flux (N, P), zero on invalid pixels; its inverse
        variance (N, P); the scale (N,) in flux units, floored at ``SCALE_FLOOR``.
    """
    good = (ivar > 0).astype(flux.dtype)
    scale = (jnp.abs(flux) * good).sum(-1) / jnp.maximum(good.sum(-1), 1.0)
    scale = jnp.maximum(scale, SCALE_FLOOR)
    return flux * good / scale[:, None], ivar * scale[:, None] ** 2, scale


def to_observed(rest: jnp.ndarray, z: jnp.ndarray, wave: jnp.ndarray, spec: ModelSpec):
    """Resample rest-frame spectra to the observed grid, as ``QsoAutoencoder.to_observed``.

    Args:
        rest: Rest-frame spectra (N, R) on the decoder grid of ``spec``.
        z: Redshifts (N,).
        wave: Observed-frame wavelengths (P,) in Å (vacuum).
        spec: The architecture (rest grid ``rest_start``, ``rest_step``, ``n_rest``).

    Returns:
        Linearly interpolated spectra (N, P); 0 where λ/(1 + z) is outside the rest grid.
    """
    lam = wave[None, :] / (1.0 + z[:, None])
    pos = (lam - spec.rest_start) / spec.rest_step
    inside = (pos >= 0) & (pos <= spec.n_rest - 1)
    pos = jnp.clip(pos, 0.0, spec.n_rest - 1.0)
    i0 = jnp.minimum(jnp.floor(pos), spec.n_rest - 2).astype(jnp.int32)
    w = pos - i0.astype(pos.dtype)
    v0 = jnp.take_along_axis(rest, i0, axis=1)
    v1 = jnp.take_along_axis(rest, i0 + 1, axis=1)
    return ((1 - w) * v0 + w * v1) * inside.astype(rest.dtype)


def _forward_parts(params: Params, spec: ModelSpec, wave: jnp.ndarray, flux, ivar, z):
    x, iv, scale = normalise(flux, ivar)
    rest, latent = module_for(spec).apply({"params": params["params"]}, x, iv, z)
    r = fit_amplitude(to_observed(rest, z, wave, spec), x, iv)
    return r * scale[:, None], latent


def gmm_nll_jax(density: dict[str, jnp.ndarray], latent: jnp.ndarray) -> jnp.ndarray:
    """−log p(latent) under a Gaussian mixture, as ``DensityModel.nll``.

    Args:
        density: ``weights`` (K,), ``means`` (K, L) and ``prec_chol`` (K, L, L) (the
            ``params["density"]`` subtree).
        latent: Latents (N, L).

    Returns:
        −log p (N,) in nats.
    """
    w, mu, pc = density["weights"], density["means"], density["prec_chol"]
    d = latent.shape[1]
    diff = latent[:, None, :] - mu[None]
    y = jnp.einsum("nkd,kde->nke", diff, pc)
    logdet = jnp.log(jnp.diagonal(pc, axis1=1, axis2=2)).sum(-1)
    logp = jnp.log(w) - 0.5 * d * np.log(2 * np.pi) + logdet - 0.5 * (y**2).sum(-1)
    return -jax.scipy.special.logsumexp(logp, axis=1)


def shape_z_jax(density: dict[str, jnp.ndarray], wave: jnp.ndarray, flux, ivar, z) -> jnp.ndarray:
    """Broad-band shape deviate of spectra (observed pixels only).

    As ``ShapeModel.zscore`` and :func:`qso_anomaly.models.torch_model.shape_z_torch`.

    Args:
        density: ``params["density"]`` with the ``shape_*`` arrays.
        wave: Observed grid (P,) in Å.
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻².
        z: Redshifts (N,).

    Returns:
        The Wilson–Hilferty deviate of the profiled Mahalanobis distance (N,).
    """
    from qso_anomaly.models.shape import FLUX_FLOOR, MIN_COVERAGE

    e = density["shape_win_edges"]
    w = wave[:, None]
    wm = ((w >= e[None, :-1]) & (w < e[None, 1:])).astype(flux.dtype)
    good = (ivar > 0).astype(flux.dtype)
    iv = ivar * good
    sw = iv @ wm
    sf = (iv * flux) @ wm
    obs = ((good @ wm) >= MIN_COVERAGE * wm.sum(0)[None]) & (sw > 0)
    m = jnp.where(obs, sf / jnp.where(obs, sw, 1.0), 1.0)
    mo = obs.astype(flux.dtype)
    lev = (jnp.abs(m) * mo).sum(-1) / jnp.maximum(mo.sum(-1), 1.0)
    mm = jnp.maximum(m, FLUX_FLOOR * jnp.maximum(lev, 1e-6)[:, None])
    y = jnp.log(mm)
    noise = jnp.where(obs, 1.0 / (jnp.where(obs, sw, 1.0) * mm**2), 0.0)
    b = jnp.searchsorted(density["shape_z_edges"], z)
    zr = density["shape_zrange"][b]
    dz = jnp.clip(z - zr[:, 0], -zr[:, 1], zr[:, 1])
    mu = density["shape_mu"][b] + density["shape_beta"][b] * dz[:, None]
    k = y.shape[1]
    eye = jnp.eye(k, dtype=flux.dtype)
    s = density["shape_cov"][b] + noise[:, :, None] * eye
    s = s * mo[:, :, None] * mo[:, None, :] + (1 - mo)[:, :, None] * eye
    nobs = mo.sum(-1)
    d = (y - mu) * mo
    d = (d - (d.sum(-1) / jnp.maximum(nobs, 1.0))[:, None]) * mo
    x = jnp.linalg.solve(s, jnp.stack([d, mo], -1))
    dpd = (d * x[..., 0]).sum(-1)
    opd = (mo * x[..., 0]).sum(-1)
    opo = (mo * x[..., 1]).sum(-1)
    d2 = jnp.maximum(dpd - opd**2 / jnp.maximum(opo, 1e-12), 0.0)
    dof = jnp.maximum(nobs - 1, 1.0)
    return (jnp.maximum(d2 / dof, 1e-12) ** (1 / 3) - (1 - 2 / (9 * dof))) / jnp.sqrt(2 / (9 * dof))


def trough_depth_jax(flux, ivar, recon, widths_px: tuple[int, ...], n_sigma: float) -> jnp.ndarray:
    """The deepest absorption trough below the reconstruction (observed pixels only).

    As :func:`qso_anomaly.models.trough.trough_depth` and
    :func:`qso_anomaly.models.torch_model.trough_depth_torch`.

    Args:
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻² (ivar ≤ 0: not observed).
        recon: Reconstruction (N, P), same units as ``flux``.
        widths_px: Window widths in pixels (static).
        n_sigma: k of the lower bound d̂ − k·σ_d.

    Returns:
        max over widths and positions of d̂ − k·σ_d, floored at
        :data:`~qso_anomaly.models.trough.NO_TROUGH` and capped at
        :data:`~qso_anomaly.models.trough.TROUGH_CAP`, shape (N,), dimensionless.
    """
    from qso_anomaly.models.shape import MIN_COVERAGE
    from qso_anomaly.models.trough import NO_TROUGH, TROUGH_CAP, window_sums

    good = (ivar > 0).astype(flux.dtype)
    iv = ivar * good
    parts = jnp.stack([iv * recon * (recon - flux), iv * recon * recon, good], 1)  # (N,3,P)
    best = jnp.full(flux.shape[:1], NO_TROUGH, dtype=flux.dtype)
    for w, s in window_sums(parts, widths_px).items():
        num, den, n = s[:, 0], s[:, 1], s[:, 2]
        ok = (n >= MIN_COVERAGE * w - 1e-3) & (den > 0)
        safe = jnp.where(ok, den, 1.0)
        bound = jnp.where(ok, num / safe - n_sigma * jax.lax.rsqrt(safe), NO_TROUGH)
        best = jnp.maximum(best, bound.max(-1))
    return jnp.minimum(best, TROUGH_CAP)


def _score_parts(params: Params, spec: ModelSpec, wave: jnp.ndarray, flux, ivar, z):
    recon, latent = _forward_parts(params, spec, wave, flux, ivar, z)
    good = (ivar > 0).astype(flux.dtype)
    chi2 = (ivar * (flux - recon) ** 2 * good).sum(-1) / jnp.maximum(good.sum(-1), 1.0)
    nll = gmm_nll_jax(params["density"], latent)
    c = params["density"]["calib"]
    score = spec.chi2_weight * (jnp.log(jnp.maximum(chi2, 1e-6)) - c[0]) / c[1]
    score = score + spec.density_weight * (nll - c[2]) / c[3]
    if "shape_cov" in params["density"]:
        sz = shape_z_jax(params["density"], wave, flux, ivar, z)
        score = score + spec.shape_weight * (sz - c[4]) / c[5]
    if spec.trough_weight and c.shape[0] >= 8:
        widths = window_pixels(np.asarray(wave), spec.trough_widths)
        t = trough_depth_jax(flux, ivar, recon, widths, spec.trough_sigma)
        score = score + spec.trough_weight * (t - c[6]) / c[7]
    return score, chi2, nll


_JIT_CACHE: dict[tuple[str, str, str], Callable[..., Any]] = {}


def _jitted(kind: str, spec: ModelSpec, grid: WavelengthGrid) -> Callable[..., Any]:
    key = (kind, json.dumps(spec.to_dict(), sort_keys=True), json.dumps(grid.to_dict()))
    fn = _JIT_CACHE.get(key)
    if fn is None:
        wave = jnp.asarray(grid.wave, dtype=jnp.float32)
        if kind == "recon":
            def f(p, fl, iv, z):
                return _forward_parts(p, spec, wave, fl, iv, z)[0]
        elif kind == "score":
            def f(p, fl, iv, z):
                return _score_parts(p, spec, wave, fl, iv, z)
        else:
            def f(p, fl, iv, z):
                return _forward_parts(p, spec, wave, fl, iv, z)[1]
        fn = jax.jit(f)
        _JIT_CACHE[key] = fn
    return fn


def apply_jax(params: Params, spec: ModelSpec, grid: WavelengthGrid, flux, ivar, z):
    """Reconstruct spectra with a jitted forward pass (compiled once per spec, grid, shape).

    Args:
        params: ``{"params": flax weights, "density": mixture arrays}`` from
            :func:`params_from_torch` or :func:`init_params`.
        spec: The architecture.
        grid: The observed-frame grid (P pixels, Å).
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, array-like.
        ivar: Inverse variance (N, P) in flux⁻², array-like.
        z: Redshifts (N,), array-like.

    Returns:
        Reconstruction (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (a JAX array).
    """
    return _jitted("recon", spec, grid)(params, jnp.asarray(flux), jnp.asarray(ivar),
                                        jnp.asarray(z))


def encode_jax(params: Params, spec: ModelSpec, grid: WavelengthGrid, flux, ivar, z):
    """Latents of spectra with a jitted encoder pass.

    Args:
        params: Model params (see :func:`apply_jax`).
        spec: The architecture.
        grid: The observed-frame grid (P pixels, Å).
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, array-like.
        ivar: Inverse variance (N, P) in flux⁻², array-like.
        z: Redshifts (N,), array-like.

    Returns:
        Latents (N, L) (a JAX array).
    """
    return _jitted("latent", spec, grid)(params, jnp.asarray(flux), jnp.asarray(ivar),
                                         jnp.asarray(z))


def anomaly_score_jax(params: Params, spec: ModelSpec, grid: WavelengthGrid, flux, ivar, z):
    """Differentiable anomaly score (not jitted): ``jax.grad`` w.r.t. flux works through it.

    Same definition as :func:`qso_anomaly.models.torch_model.score_parts_torch`.

    Args:
        params: Model params (see :func:`apply_jax`).
        spec: The architecture.
        grid: The observed-frame grid (P pixels, Å).
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (the attributed input).
        ivar: Inverse variance (N, P) in flux⁻².
        z: Redshifts (N,).

    Returns:
        Score (N,), dimensionless (higher = more anomalous).
    """
    wave = jnp.asarray(grid.wave, dtype=jnp.float32)
    return _score_parts(params, spec, wave, flux, ivar, z)[0]


def score_jax(
    params: Params, spec: ModelSpec, grid: WavelengthGrid, batch: SpectraBatch,
    chunk: int = 512,
) -> ScoreResult:
    """Score a clean batch with a jitted JAX pass, in chunks of ``chunk`` spectra.

    When the batch is longer than ``chunk``, the last chunk is padded (flux 0, ivar 1, z 1) to
    ``chunk`` rows so that XLA compiles one shape; padded rows are dropped from the result.
    The batch is not validated (run the data policy first).

    Args:
        params: Model params (see :func:`apply_jax`).
        spec: The architecture.
        grid: The observed-frame grid (P pixels, Å).
        batch: N spectra: flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹, ivar (N, P) in flux⁻²,
            z (N,).
        chunk: Spectra per jitted call.

    Returns:
        Scores, χ²/dof and −log p(latent) of the N spectra (NumPy), in input order.
    """
    fn = _jitted("score", spec, grid)
    parts = []
    for s in range(0, len(batch), chunk):
        sl = slice(s, s + chunk)
        n = len(batch.z[sl])
        # pad the last chunk to a fixed shape so jit compiles once
        pad = chunk - n if len(batch) > chunk else 0
        fl, iv, z = batch.flux[sl], batch.ivar[sl], batch.z[sl]
        if pad:
            fl = np.pad(fl, ((0, pad), (0, 0)))
            iv = np.pad(iv, ((0, pad), (0, 0)), constant_values=1.0)
            z = np.pad(z, (0, pad), constant_values=1.0)
        res = _dispatch(fn, params, fl, iv, z)()
        parts.append(ScoreResult(res.score[:n], res.chi2_dof[:n], res.density_nll[:n]))
    return ScoreResult.concat(parts)


def _dispatch(fn: Callable[..., Any], params: Params, flux: np.ndarray, ivar: np.ndarray,
              z: np.ndarray) -> Callable[[], ScoreResult]:
    # device_put, not jnp.asarray: jnp.asarray of a NumPy array dispatches an eager
    # convert_element_type computation per array (three per batch, measured 3-9 % of a
    # 256-spectrum CI-model batch on CPU); device_put only copies the buffer.
    sc, c2, nl = fn(params, *jax.device_put((flux, ivar, z)))
    return lambda: ScoreResult(np.asarray(sc), np.asarray(c2), np.asarray(nl))


def score_jax_async(
    params: Params, spec: ModelSpec, grid: WavelengthGrid, flux: np.ndarray, ivar: np.ndarray,
    z: np.ndarray,
) -> Callable[[], ScoreResult]:
    """Start one jitted scoring call and return without waiting for it.

    JAX dispatches asynchronously (docs.jax.dev, "Asynchronous dispatch"): the call returns
    once the computation is queued, and the caller can prepare the next batch while XLA's
    threads compute this one. The arrays are copied to the device before this returns, so the
    caller may reuse them.

    Args:
        params: Model params (see :func:`apply_jax`).
        spec: The architecture.
        grid: The observed-frame grid (P pixels, Å).
        flux: (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (every call with the same N reuses one
            compilation).
        ivar: (N, P) in flux⁻².
        z: (N,).

    Returns:
        A function that waits for the result and returns the N scores, χ²/dof and
        −log p(latent) as NumPy (:class:`ScoreResult`).
    """
    return _dispatch(_jitted("score", spec, grid), params, flux, ivar, z)


# ---------------------------------------------------------------- weight conversion
def _mapping(spec: ModelSpec) -> list[tuple[str, tuple[str, ...], str]]:
    """(torch state-dict key, flax param path, transform) for every parameter."""
    m: list[tuple[str, tuple[str, ...], str]] = []
    for i in range(len(spec.channels)):
        m += [
            (f"encoder.blocks.{i}.conv.weight", ("encoder", f"block_{i}", "conv", "kernel"),
             "conv"),
            (f"encoder.blocks.{i}.conv.bias", ("encoder", f"block_{i}", "conv", "bias"), "id"),
            (f"encoder.blocks.{i}.act.weight", ("encoder", f"block_{i}", "prelu"), "id"),
        ]
    m += [
        ("encoder.ivar_conv.weight", ("encoder", "ivar_conv", "kernel"), "conv"),
        ("encoder.ivar_conv.bias", ("encoder", "ivar_conv", "bias"), "id"),
    ]
    for prefix, path, n in (
        ("encoder.mlp", ("encoder", "mlp"), len(spec.encoder_mlp) + 1),
        ("decoder", ("decoder",), len(spec.decoder_mlp) + 1),
    ):
        for i in range(n):
            m += [
                (f"{prefix}.{2 * i}.weight", (*path, f"dense_{i}", "kernel"), "dense"),
                (f"{prefix}.{2 * i}.bias", (*path, f"dense_{i}", "bias"), "id"),
            ]
            if i < n - 1:
                m.append((f"{prefix}.{2 * i + 1}.weight", (*path, f"prelu_{i}"), "id"))
    return m


def _to_jax(value: np.ndarray, how: str) -> np.ndarray:
    if how == "conv":  # torch (out, in, k) -> flax (k, in, out)
        return np.transpose(value, (2, 1, 0))
    if how == "dense":  # torch (out, in) -> flax (in, out)
        return value.T
    return value


def _to_torch(value: np.ndarray, how: str) -> np.ndarray:
    if how == "conv":
        return np.transpose(value, (2, 1, 0))
    if how == "dense":
        return value.T
    return value


DENSITY_KEYS = ("weights", "means", "prec_chol", "calib")
#: The optional broad-band shape term's arrays (``density_shape_*`` buffers).
SHAPE_KEYS = ("win_edges", "z_edges", "zrange", "mu", "beta", "cov")


def params_from_torch(torch_model: Any) -> Params:
    """Convert a torch ``QsoAutoencoder`` (weights and latent density) to JAX params.

    Conv kernels go from torch (out, in, k) to flax (k, in, out), dense kernels from (out, in)
    to (in, out).

    Args:
        torch_model: A :class:`~qso_anomaly.models.torch_model.QsoAutoencoder`.

    Returns:
        ``{"params": flax weight tree, "density": {weights, means, prec_chol, calib}}``, all
        float32 JAX arrays.

    Raises:
        KeyError: When the state dict lacks a parameter the spec implies (weights of another
            architecture).
    """
    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    return params_from_state(sd, torch_model.spec)


def params_from_state(sd: dict[str, np.ndarray], spec: ModelSpec) -> Params:
    """Convert a torch state dict held as NumPy arrays to JAX params, without PyTorch.

    The same conversion as :func:`params_from_torch` (which calls it), for the arrays of a
    model's ``weights.npz``.

    Args:
        sd: State-dict entries by torch key, including the ``density_*`` buffers.
        spec: The architecture.

    Returns:
        ``{"params": flax weight tree, "density": {weights, means, prec_chol, calib}}``, all
        float32 JAX arrays.

    Raises:
        KeyError: When ``sd`` lacks a parameter the spec implies.
    """
    tree: dict[str, Any] = {}
    for tkey, path, how in _mapping(spec):
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = jnp.asarray(_to_jax(sd[tkey], how), dtype=jnp.float32)
    keys = DENSITY_KEYS + tuple(f"shape_{k}" for k in SHAPE_KEYS if f"density_shape_{k}" in sd)
    density = {k: jnp.asarray(sd[f"density_{k}"], dtype=jnp.float32) for k in keys}
    return {"params": tree, "density": density}


def state_dict_from_params(params: Params, spec: ModelSpec) -> dict[str, Any]:
    """Inverse of :func:`params_from_torch` for the network weights (a torch state dict).

    Args:
        params: JAX params with a ``"params"`` weight tree of ``spec``'s architecture.
        spec: The architecture.

    Returns:
        Torch state-dict entries (float32 CPU tensors) of the network weights; the ``wave``
        and ``density_*`` buffers are not included.

    Raises:
        KeyError: When the weight tree lacks a parameter the spec implies.
    """
    import torch

    out: dict[str, Any] = {}
    for tkey, path, how in _mapping(spec):
        node: Any = params["params"]
        for p in path:
            node = node[p]
        out[tkey] = torch.from_numpy(np.array(_to_torch(np.asarray(node), how), dtype=np.float32))
    return out


def init_params(spec: ModelSpec, grid: WavelengthGrid, seed: int = 0) -> Params:
    """Fresh flax initialisation (standard-normal latent density).

    Args:
        spec: The architecture.
        grid: The observed-frame grid (its pixel count P sets the input length).
        seed: ``jax.random.PRNGKey`` seed.

    Returns:
        ``{"params": flax weight tree, "density": standard-normal mixture arrays}``.
    """
    from qso_anomaly.models.density import DensityModel

    n = grid.npix
    variables = module_for(spec).init(
        jax.random.PRNGKey(seed), jnp.zeros((2, n)), jnp.ones((2, n)), jnp.ones((2,))
    )
    dens = DensityModel.standard_normal(spec.latent_dim).to_arrays()
    return {"params": variables["params"],
            "density": {k: jnp.asarray(v, dtype=jnp.float32) for k, v in dens.items()}}
