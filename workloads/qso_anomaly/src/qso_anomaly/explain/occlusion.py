"""Windowed occlusion: replace a window of the spectrum by the baseline and record the score drop.

Framework-agnostic: ``score_fn(flux, *extras)`` is any batched function ``(M, P) float32 -> (M,)``
returning NumPy-convertible scores (wrap a torch model in ``torch.no_grad()``, a JAX one in
``jax.jit``). ``extras`` are per-spectrum arrays (ivar, z, ...) with N rows; they are repeated
alongside the perturbed copies.
For N spectra and W windows it evaluates ``N * W`` perturbed spectra in chunks of ``batch_size``.

The attribution of a pixel is the mean score drop of the windows that cover it (Captum's
``Occlusion`` convention: every pixel of a window carries the window's full drop). A positive
value means "replacing this region with the baseline lowers the anomaly score": the region
makes the spectrum anomalous.

Occlusion as an attribution method: Zeiler & Fergus 2014 ("Visualizing and Understanding
Convolutional Networks"); the per-pixel averaging follows Captum's ``Occlusion``
(``captum/attr/_core/occlusion.py``). Flux is in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ and attributions in
score units. Argument errors raise ``ValueError`` (no qso_anomaly error is raised here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.explain.integrated_gradients import Attribution

ScoreFn = Callable[..., Any]
Extras = tuple[NDArray[Any], ...]


def window_starts(npix: int, window: int, stride: int) -> NDArray[np.int64]:
    """Start indices of windows of ``window`` px every ``stride`` px; the last one ends at npix.

    Args:
        npix: Pixels P of the spectrum.
        window: Window width in pixels (≥ 1).
        stride: Step between window starts in pixels (≥ 1).

    Returns:
        Start indices (W,), int64, so that the windows cover every pixel; ``[0]`` when
        ``window >= npix``.

    Raises:
        ValueError: When ``window`` or ``stride`` is below 1.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if window >= npix:
        return np.array([0], dtype=np.int64)
    starts = list(range(0, npix - window + 1, stride))
    if starts[-1] + window < npix:
        starts.append(npix - window)
    return np.asarray(starts, dtype=np.int64)


def evaluate_batched(score_fn: ScoreFn, flux: NDArray[np.float32], batch_size: int,
                     extras: Extras = ()) -> NDArray[np.float64]:
    """Apply ``score_fn(flux, *extras)`` in chunks of rows and return float64 scores (M,).

    Args:
        score_fn: Batched score function ``(B, P) float32 [+ extras] -> (B,)``.
        flux: Spectra (M, P) float32 in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        batch_size: Rows per call.
        extras: Per-row arrays with M rows (ivar (M, P), z (M,), ...), sliced alongside.

    Returns:
        Scores (M,), float64.
    """
    out = np.empty(flux.shape[0], dtype=np.float64)
    for start in range(0, flux.shape[0], batch_size):
        chunk = flux[start : start + batch_size]
        ex = tuple(e[start : start + batch_size] for e in extras)
        out[start : start + chunk.shape[0]] = np.asarray(score_fn(chunk, *ex), dtype=np.float64)
    return out


def repeat_extras(extras: Extras, times: int) -> Extras:
    """Stack ``times`` copies of every per-spectrum array (matching ``(G, N, P) -> (G*N, P)``).

    Args:
        extras: Per-spectrum arrays with N rows each.
        times: Number of copies G.

    Returns:
        The arrays with G·N rows (copy g occupies rows g·N … g·N + N − 1).
    """
    return tuple(np.concatenate([np.asarray(e)] * times, axis=0) for e in extras)


def occlusion(
    score_fn: ScoreFn,
    flux: NDArray[Any],
    baseline: NDArray[Any],
    *,
    window: int = 16,
    stride: int | None = None,
    valid: NDArray[np.bool_] | None = None,
    extras: Extras = (),
    batch_size: int = 256,
) -> Attribution:
    """Occlusion attributions (N, P) with the given baseline (usually the reconstruction).

    For each window, the window of every spectrum is replaced by the baseline and the score
    drop ``score(x) − score(x with window from baseline)`` is recorded; a pixel gets the mean
    drop of the windows covering it (Captum ``Occlusion`` convention). Evaluates N·(W + 2)
    spectra.

    Args:
        score_fn: Batched score function ``(B, P) float32 [+ extras] -> (B,)``.
        flux: Spectra (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        baseline: Baseline spectra (N, P), same unit (e.g. the reconstruction, design §9.2).
        window: Window width in pixels.
        stride: Step between windows in pixels (default ``window``: non-overlapping).
        valid: Valid pixels (N, P); attributions of invalid pixels are set to 0.
        extras: Per-spectrum arrays with N rows passed to ``score_fn`` (ivar, z, ...).
        batch_size: Spectra per ``score_fn`` call (bounds memory).

    Returns:
        Attribution with ``values`` (N, P) float32 in score units, ``delta_score`` (N,) =
        score(flux) − score(baseline), and ``convergence_delta`` (N,) = Σ window drops −
        delta_score for non-overlapping windows (NaN when windows overlap).

    Raises:
        ValueError: When ``flux`` and ``baseline`` are not both (N, P) of the same shape, or
            ``window``/``stride`` is below 1.
    """
    x = np.asarray(flux, dtype=np.float32)
    b = np.asarray(baseline, dtype=np.float32)
    if x.shape != b.shape or x.ndim != 2:
        raise ValueError(f"flux and baseline must both be (N, P); got {x.shape} and {b.shape}")
    n, npix = x.shape
    step = stride or window
    starts = window_starts(npix, window, step)
    base_scores = evaluate_batched(score_fn, x, batch_size, extras)
    full_occluded = evaluate_batched(score_fn, b, batch_size, extras)
    sums = np.zeros((n, npix), dtype=np.float64)
    counts = np.zeros(npix, dtype=np.float64)
    total_drop = np.zeros(n, dtype=np.float64)
    for s in starts:
        counts[s : s + window] += 1.0
    # Perturbed copies are built window-group by window-group to bound memory.
    group = max(1, batch_size // max(n, 1))
    for g in range(0, len(starts), group):
        sel = starts[g : g + group]
        batch = np.repeat(x[None, :, :], len(sel), axis=0)  # (G, N, P)
        for k, s in enumerate(sel):
            batch[k, :, s : s + window] = b[:, s : s + window]
        scores = evaluate_batched(score_fn, batch.reshape(-1, npix), batch_size,
                                  repeat_extras(extras, len(sel))).reshape(len(sel), n)
        drops = base_scores[None, :] - scores  # (G, N)
        total_drop += drops.sum(axis=0)
        for k, s in enumerate(sel):
            sums[:, s : s + window] += drops[k][:, None]
    values = (sums / np.maximum(counts, 1.0)[None, :]).astype(np.float32)
    if valid is not None:
        values = np.where(valid, values, np.float32(0.0))
    delta = (base_scores - full_occluded).astype(np.float32)
    # Occlusion is not complete: with non-overlapping windows, report how far the sum of the
    # window drops is from the total change (interactions between windows); NaN otherwise.
    if step >= window:
        convergence = (total_drop - delta).astype(np.float32)
    else:
        convergence = np.full(n, np.nan, dtype=np.float32)
    return Attribution(values=values, method=f"occlusion-w{window}-s{step}", delta_score=delta,
                       convergence_delta=convergence)
