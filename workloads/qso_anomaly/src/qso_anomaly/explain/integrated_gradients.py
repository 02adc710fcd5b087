"""Integrated Gradients for anomaly scores, with the reconstruction as the baseline.

Two implementations over the same quadrature rule so that they can be checked against each other:

* :func:`integrated_gradients_torch` calls Captum's ``IntegratedGradients`` on a differentiable
  PyTorch score function ``f(flux) -> (N,)``;
* :func:`integrated_gradients_jax` does ``jax.vmap`` over the path coefficients of
  ``jax.grad(sum f)`` and combines the gradients with the same weights.

The baseline is the model's reconstruction of each spectrum (reference §9.2: a zero baseline is
physically meaningless for flux). Masked pixels (``mask`` True = bad, or ``ivar == 0``) get zero
attribution.

Integrated Gradients: Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"
(ICML): attr_p = (x_p − b_p) · ∫₀¹ ∂f(b + α(x − b))/∂x_p dα, whose sum over pixels equals
f(x) − f(b) (completeness). Quadrature rules as Captum's ``approximation_methods``. Flux is in
1e-17 erg s⁻¹ cm⁻² Å⁻¹, attributions in score units per pixel; shapes use N spectra, P pixels,
S path steps. Argument errors raise ``ValueError`` (no qso_anomaly error is raised here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
QUADRATURE_METHODS = ("gausslegendre", "riemann_trapezoid")


@dataclass(frozen=True)
class Attribution:
    """Per-pixel attributions of an anomaly score for N spectra.

    ``values[i, p]`` is the share of ``score(x_i) - score(baseline_i)`` attributed to pixel p
    (completeness, for IG: rows sum to ``delta_score`` up to ``convergence_delta``; occlusion
    gives every pixel of a window the window's whole drop, so its rows do not sum to it).

    Attributes:
        values: Attributions (N, P) float32, in score units; 0 on invalid pixels.
        method: Method tag, e.g. ``ig-captum-gausslegendre`` or ``occlusion-w16-s16``.
        delta_score: score(x) − score(baseline), (N,) float32.
        convergence_delta: (N,) float32. IG: Σ values (before invalid pixels are zeroed) −
            delta_score, the quadrature error. Occlusion: Σ window drops − delta_score with
            non-overlapping windows (interactions between windows), NaN when they overlap.
    """

    values: FloatArray  # (N, P)
    method: str
    delta_score: FloatArray  # (N,) score(x) - score(baseline)
    convergence_delta: FloatArray  # (N,) sum(values) - delta_score; 0 for exact methods

    @property
    def n_spectra(self) -> int:
        """Number of explained spectra N."""
        return int(self.values.shape[0])


def quadrature(method: str, n_steps: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return ``(alphas, weights)`` of the path integral, identical to Captum's rules.

    ``gausslegendre`` uses the Gauss–Legendre nodes rescaled to [0, 1]; ``riemann_trapezoid`` uses
    ``n_steps`` equally spaced nodes with half weights at both ends (Captum's variant).

    Args:
        method: ``gausslegendre`` or ``riemann_trapezoid``.
        n_steps: Number of nodes S (≥ 2).

    Returns:
        ``(alphas, weights)``, each (S,) float64; alphas in [0, 1].

    Raises:
        ValueError: When ``n_steps < 2`` or the method is unknown.
    """
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n_steps)
        weights = np.full(n_steps, 1.0 / n_steps)
        weights[0] /= 2.0
        weights[-1] /= 2.0
        return alphas, weights
    raise ValueError(f"unknown quadrature method {method!r}; use one of {QUADRATURE_METHODS}")


def valid_pixels(mask: NDArray[np.bool_] | None, ivar: NDArray[Any] | None, shape: tuple[int, ...]
                 ) -> NDArray[np.bool_]:
    """Pixels that carry information: not masked and ``ivar > 0``.

    Args:
        mask: Bad-pixel mask (N, P), True = bad, or ``None``.
        ivar: Inverse variance (N, P) in flux⁻², or ``None``.
        shape: Shape of the result, (N, P).

    Returns:
        Boolean array of ``shape``, True where the pixel is valid.
    """
    valid = np.ones(shape, dtype=bool)
    if mask is not None:
        valid &= ~np.asarray(mask, dtype=bool)
    if ivar is not None:
        valid &= np.asarray(ivar) > 0
    return valid


def integrated_gradients_torch(
    score_fn: Callable[..., Any],
    flux: NDArray[Any],
    baseline: NDArray[Any],
    *,
    valid: NDArray[np.bool_] | None = None,
    extras: tuple[NDArray[Any], ...] = (),
    n_steps: int = 32,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> Attribution:
    """Integrated Gradients of a PyTorch score function via Captum.

    ``score_fn(flux, *extras)`` maps a float32 tensor (M, P) plus per-spectrum tensors (ivar, z,
    ...) to scores (M,) and must be differentiable with respect to ``flux``. Captum evaluates
    ``n_steps * N`` interpolated spectra and repeats ``extras`` to match, so never close over
    per-spectrum arrays. ``internal_batch_size`` bounds memory (chunks of that many rows).

    Args:
        score_fn: Differentiable ``(M, P) tensor [+ extras] -> (M,)`` score function.
        flux: Spectra (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        baseline: Baselines (N, P), same unit (the reconstruction, design §9.2).
        valid: Valid pixels (N, P); attributions of invalid pixels are set to 0.
        extras: Per-spectrum arrays with N rows (ivar (N, P), z (N,), ...).
        n_steps: Path steps S (≥ 2).
        method: ``gausslegendre`` or ``riemann_trapezoid``.
        internal_batch_size: Rows per Captum forward/backward pass (``None``: all N·S).

    Returns:
        Attribution (``values`` (N, P) float32 in score units, ``delta_score`` (N,),
        ``convergence_delta`` (N,) from Captum).

    Raises:
        ValueError: When ``n_steps < 2`` or the method is unknown.
    """
    import torch
    from captum.attr import IntegratedGradients

    quadrature(method, n_steps)  # validate arguments with a clear message
    x = torch.as_tensor(np.asarray(flux, dtype=np.float32))
    b = torch.as_tensor(np.asarray(baseline, dtype=np.float32))
    ex = tuple(torch.as_tensor(np.asarray(e)) for e in extras)
    ig = IntegratedGradients(score_fn)
    attr, delta = ig.attribute(
        x,
        baselines=b,
        additional_forward_args=ex if ex else None,
        n_steps=n_steps,
        method=method,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    with torch.no_grad():
        delta_score = (score_fn(x, *ex) - score_fn(b, *ex)).detach().cpu().numpy()
    delta_score = delta_score.astype(np.float32)
    values = attr.detach().cpu().numpy().astype(np.float32)
    if valid is not None:
        values = np.where(valid, values, np.float32(0.0))
    return Attribution(
        values=values,
        method=f"ig-captum-{method}",
        delta_score=delta_score,
        convergence_delta=delta.detach().cpu().numpy().astype(np.float32),
    )


def integrated_gradients_jax(
    score_fn: Callable[[Any], Any],
    flux: NDArray[Any],
    baseline: NDArray[Any],
    *,
    valid: NDArray[np.bool_] | None = None,
    extras: tuple[NDArray[Any], ...] = (),
    n_steps: int = 32,
    method: str = "gausslegendre",
    steps_per_chunk: int | None = None,
) -> Attribution:
    """Integrated Gradients of a JAX score function: ``vmap`` of ``grad`` over path points.

    ``score_fn(flux, *extras)`` maps a (N, P) array to (N,) scores; per-spectrum scores must not
    depend on other rows (true for per-spectrum models), so ``grad(sum(score))`` gives every
    row's own gradient.
    ``steps_per_chunk`` bounds memory (default: all steps in one ``vmap``).

    Args:
        score_fn: JAX-differentiable ``(N, P) [+ extras] -> (N,)`` score function.
        flux: Spectra (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        baseline: Baselines (N, P), same unit (the reconstruction, design §9.2).
        valid: Valid pixels (N, P); attributions of invalid pixels are set to 0.
        extras: Per-spectrum arrays with N rows (ivar (N, P), z (N,), ...), passed whole.
        n_steps: Path steps S (≥ 2).
        method: ``gausslegendre`` or ``riemann_trapezoid`` (same nodes and weights as the
            Captum path, so the two implementations can be compared).
        steps_per_chunk: Path steps per jitted ``vmap`` call; memory grows as S_chunk·N·P.

    Returns:
        Attribution (``values`` (N, P) float32 in score units, ``delta_score`` (N,),
        ``convergence_delta`` (N,) = Σ values − delta_score over all pixels).

    Raises:
        ValueError: When ``n_steps < 2`` or the method is unknown.
    """
    import jax
    import jax.numpy as jnp

    alphas, weights = quadrature(method, n_steps)
    x = jnp.asarray(np.asarray(flux, dtype=np.float32))
    b = jnp.asarray(np.asarray(baseline, dtype=np.float32))
    diff = x - b
    ex = tuple(jnp.asarray(np.asarray(e)) for e in extras)

    def total(inputs: Any) -> Any:
        return jnp.sum(score_fn(inputs, *ex))

    grad_fn = jax.grad(total)

    def weighted_grads(alpha_chunk: Any, weight_chunk: Any) -> Any:
        grads = jax.vmap(lambda a: grad_fn(b + a * diff))(alpha_chunk)  # (S, N, P)
        return jnp.tensordot(weight_chunk, grads, axes=1)

    chunk = steps_per_chunk or n_steps
    acc = jnp.zeros_like(x)
    jitted = jax.jit(weighted_grads)
    for start in range(0, n_steps, chunk):
        a = jnp.asarray(alphas[start : start + chunk], dtype=jnp.float32)
        w = jnp.asarray(weights[start : start + chunk], dtype=jnp.float32)
        acc = acc + jitted(a, w)
    values_full = np.asarray(diff * acc, dtype=np.float32)
    delta_score = np.asarray(score_fn(x, *ex) - score_fn(b, *ex), dtype=np.float32)
    convergence = values_full.sum(axis=1) - delta_score
    values = values_full if valid is None else np.where(valid, values_full, np.float32(0.0))
    return Attribution(
        values=values,
        method=f"ig-jax-{method}",
        delta_score=delta_score,
        convergence_delta=convergence.astype(np.float32),
    )
