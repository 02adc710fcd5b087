"""Absorption-trough term of the anomaly score (framework-neutral NumPy form).

A damped Lyα absorber or a broad absorption trough removes most of the flux over tens of
ångströms, but the χ²/dof of the whole spectrum dilutes it among ~2,000 pixels, the latent
density sees a common shape and the broad-band shape term's windows are far wider than a
trough. This term looks for the deepest flux deficit below the autoencoder's reconstruction
in sliding windows of a few widths.

For a window of w observed-frame pixels, model the flux as f = r·(1 − d) with r the
reconstruction and d the fractional deficit. Its inverse-variance-weighted least-squares
estimate and standard error are

    d̂ = Σ ivar·r·(r − f) / Σ ivar·r²,    σ_d = 1 / √(Σ ivar·r²),

summed over the window's observed pixels (ivar > 0). The term is the largest one-sided lower
confidence bound d̂ − k·σ_d (k = ``ModelSpec.trough_sigma``, 3 by default) over every window
position and width: "a deficit of at least this fraction of the flux is present at kσ".
Using the bound rather than the significance d̂/σ_d keeps a high-S/N normal quasar, whose
reconstruction is a few per cent off over many pixels, from looking like an absorber (its
deficits are significant but shallow), and using it rather than d̂ keeps noise in a faint
spectrum from doing so (its deficits are deep but not significant).

Observed pixels only: a window counts when at least
:data:`~qso_anomaly.models.shape.MIN_COVERAGE` of its pixels are observed, so a masked
camera or block is never read as absorption. A spectrum without any such window gets
:data:`NO_TROUGH`, and the bound is floored there too (no evidence of a trough); it is
capped at :data:`TROUGH_CAP`.

The widths are in observed-frame ångströms (``ModelSpec.trough_widths``: 25.6, 51.2 and
102.4 Å, i.e. 8, 16 and 32 pixels of the 4× downsampled CI grid): the damped core of a DLA
with log N_HI 20.3–21.7 has a rest-frame equivalent width of ~10–50 Å (W ≈ 7.3 Å ·
(N_HI / 10²⁰ cm⁻²)^½ on the damping wings; Wolfe, Gawiser & Prochaska 2005, ARA&A 43, 861),
i.e. ~30–250 Å observed at z 2.2–4, and a BAL trough spans ≥ 2,000 km/s (Weymann et al. 1991).

The PyTorch and JAX forms (:func:`qso_anomaly.models.torch_model.trough_depth_torch`,
:func:`qso_anomaly.models.jax_model.trough_depth_jax`) compute the same in float32;
:func:`trough_depth` is the float64 reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qso_anomaly.models.shape import MIN_COVERAGE

#: The term's value where no window is observed well enough (and its floor): a lower bound
#: of −100 % on the deficit, i.e. no evidence of absorption.
NO_TROUGH = -1.0
#: The term's ceiling. A bound above 1 means flux significantly below zero (an
#: over-subtracted sky line, for instance); far above it, d̂ only measures how close the
#: reconstruction comes to zero in that window (d̂ ≈ −f/r), which is numerically unstable.
TROUGH_CAP = 3.0


def window_pixels(wave: np.ndarray, widths: tuple[float, ...]) -> tuple[int, ...]:
    """Window widths in pixels of an observed grid.

    Args:
        wave: Observed-frame wavelengths (P,) in Å, uniformly spaced (the model grid).
        widths: Window widths in Å.

    Returns:
        One width per entry of ``widths``, in pixels, each at least 1 and at most P.

    Raises:
        ValueError: When the grid has fewer than two pixels.
    """
    w = np.asarray(wave, dtype=np.float64)
    if w.size < 2:
        raise ValueError(f"the grid has {w.size} pixel(s); the trough term needs at least 2")
    step = (w[-1] - w[0]) / (w.size - 1)
    return tuple(int(min(w.size, max(1, round(a / step)))) for a in widths)


def window_sums(x: Any, widths: tuple[int, ...]) -> dict[int, Any]:
    """Sums of ``x`` over every run of w consecutive pixels (last axis), for each w.

    Built by doubling (sums over 1, 2, 4, … pixels, each from two of the previous), then one
    slice per set bit of w: O(P·log w) additions instead of the O(P·w) of a sliding-window
    pooling, with pairwise-summation rounding. Works on NumPy, torch and JAX arrays alike
    (slicing and ``+`` only), which keeps the PyTorch and JAX forms of the term identical.

    Args:
        x: Array (..., P).
        widths: Window widths in pixels, each in [1, P].

    Returns:
        ``{w: sums}`` with sums of shape (..., P − w + 1): ``sums[..., i] = x[..., i:i + w].sum(-1)``.
    """
    p = x.shape[-1]
    top = max(widths).bit_length()
    powers = [x]  # powers[k]: sums over 2**k pixels, length P − 2**k + 1
    for k in range(1, top):
        h = 1 << (k - 1)
        prev = powers[-1]
        powers.append(prev[..., :-h] + prev[..., h:])
    out = {}
    for w in widths:
        n, off, acc = p - w + 1, 0, None
        for k in reversed(range(top)):
            if w >> k & 1:
                block = powers[k][..., off:off + n]
                acc = block if acc is None else acc + block
                off += 1 << k
        out[w] = acc
    return out


def trough_depth(flux: np.ndarray, ivar: np.ndarray, recon: np.ndarray, wave: np.ndarray,
                 widths: tuple[float, ...], n_sigma: float) -> np.ndarray:
    """The deepest absorption trough below the reconstruction, as a kσ lower bound.

    Args:
        flux: Flux (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: Inverse variance (N, P) in flux⁻²; pixels with ivar ≤ 0 are not observed.
        recon: The autoencoder's reconstruction (N, P), same units as ``flux``.
        wave: Observed-frame wavelengths (P,) in Å of the grid.
        widths: Window widths in Å (``ModelSpec.trough_widths``).
        n_sigma: k of the lower bound d̂ − k·σ_d (``ModelSpec.trough_sigma``).

    Returns:
        max over window widths and positions of d̂ − k·σ_d, floored at :data:`NO_TROUGH` and
        capped at :data:`TROUGH_CAP`, shape (N,), float64, dimensionless (a fraction of the
        reconstructed flux).
    """
    f = np.asarray(flux, np.float64)
    r = np.asarray(recon, np.float64)
    iv = np.asarray(ivar, np.float64)
    good = iv > 0
    iv = np.where(good, iv, 0.0)
    parts = np.stack([iv * r * (r - f), iv * r * r, good.astype(np.float64)])  # (3, N, P)
    csum = np.concatenate([np.zeros(parts.shape[:2] + (1,)), np.cumsum(parts, axis=2)], axis=2)
    best = np.full(f.shape[0], NO_TROUGH)
    for w in window_pixels(wave, widths):
        num, den, n = csum[:, :, w:] - csum[:, :, :-w]
        ok = (n >= MIN_COVERAGE * w - 1e-3) & (den > 0)  # n counts pixels: integers
        safe = np.where(ok, den, 1.0)
        bound = np.where(ok, num / safe - n_sigma / np.sqrt(safe), NO_TROUGH)
        best = np.maximum(best, bound.max(axis=1))
    return np.minimum(best, TROUGH_CAP)
