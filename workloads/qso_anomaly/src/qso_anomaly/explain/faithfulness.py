"""Faithfulness and localisation metrics for spectral attributions (reference §9.3).

* localisation against the injection mask M: pixel AUROC and average precision, relevance-mass
  accuracy, relevance-rank accuracy, pointing game;
* windowed deletion / insertion curves (RISE) with a random-order reference;
* the model-parameter randomisation sanity check (Adebayo et al. 2018): attributions of a model
  with re-drawn weights must differ from the trained model's.

Only valid pixels (not masked, ``ivar > 0``) take part in any metric.

Sources: relevance-mass and relevance-rank accuracy as defined by Arras, Osman & Samek 2022
("CLEVR-XAI", Information Fusion 81); the pointing game of Zhang et al. 2018 ("Top-down Neural
Attention by Excitation Backprop", IJCV); deletion/insertion of Petsiuk, Das & Saenko 2018
("RISE", BMVC), here over pixel windows (design §9.3); the randomisation test of Adebayo et
al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS), with Spearman rank correlation as its
similarity measure. Shapes: N spectra, P pixels; attributions are in score units per pixel.
Nothing here raises a qso_anomaly error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

from qso_anomaly.explain.occlusion import Extras, evaluate_batched, window_starts

# one ranking implementation for detection and localisation (Mann–Whitney AUROC, step AP)
from qso_anomaly.registry.evaluation import auroc as pixel_auroc
from qso_anomaly.registry.evaluation import average_precision

ScoreFn = Callable[..., Any]


@dataclass(frozen=True)
class Localisation:
    """Localisation metrics of one spectrum's attribution against its injection mask.

    A field is NaN when it is undefined: every field without a valid pixel, every field but
    ``mask_fraction`` (then 0) without an injected pixel, ``auroc`` when every valid pixel is
    injected.

    Attributes:
        auroc: Pixel AUROC of the attribution vs the mask (Mann–Whitney, ties averaged;
            0.5 = chance).
        average_precision: Step average precision of the attribution vs the mask.
        relevance_mass: Share of positive attribution inside the mask, in [0, 1].
        relevance_rank: Share of the top-|M| pixels (by attribution) inside the mask.
        pointing_game: 1.0 when the highest-attribution pixel is in the mask, else 0.0.
        mask_fraction: Share of valid pixels inside the mask, in [0, 1].
    """

    auroc: float
    average_precision: float
    relevance_mass: float
    relevance_rank: float
    pointing_game: float
    mask_fraction: float


def localisation(attr: NDArray[Any], truth: NDArray[np.bool_], valid: NDArray[np.bool_] | None
                 = None, *, use_abs: bool = False) -> Localisation:
    """Localisation metrics for one spectrum (1-D arrays over pixels).

    With ``use_abs=False`` the signed attribution is used: pixels that push the anomaly score up
    should be the injected ones.

    Args:
        attr: Attributions (P,).
        truth: Injection mask (P,), True = pixel changed by the injected anomaly.
        valid: Valid pixels (P,); others are left out (default: all).
        use_abs: Rank pixels by |attribution| instead of the signed value.

    Returns:
        The metrics over the valid pixels (NaN where undefined, see :class:`Localisation`).
    """
    a = np.asarray(attr, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    v = np.ones_like(t) if valid is None else np.asarray(valid, dtype=bool)
    a, t = a[v], t[v]
    if use_abs:
        a = np.abs(a)
    nan = float("nan")
    if t.size == 0:
        return Localisation(nan, nan, nan, nan, nan, nan)
    n_pos = int(t.sum())
    positive = np.clip(a, 0.0, None)
    mass_total = positive.sum()
    mass = float(positive[t].sum() / mass_total) if mass_total > 0 and n_pos else nan
    if n_pos:
        top = np.argsort(-a, kind="stable")[:n_pos]
        rank = float(t[top].mean())
        pointing = float(t[int(np.argmax(a))])
    else:
        rank = pointing = nan
    return Localisation(
        auroc=pixel_auroc(a, t),
        average_precision=average_precision(a, t) if n_pos else nan,
        relevance_mass=mass,
        relevance_rank=rank,
        pointing_game=pointing,
        mask_fraction=float(n_pos / t.size),
    )


def smooth_rows(attr: NDArray[Any], valid: NDArray[np.bool_] | None, width: int
                ) -> NDArray[np.float64]:
    """Boxcar-smooth each row over ``width`` px (invalid pixels count as 0); 1 = unchanged.

    Args:
        attr: Attributions (N, P).
        valid: Valid pixels (N, P), or ``None``.
        width: Boxcar width in pixels (``scipy.ndimage.uniform_filter1d``, ``nearest`` edges).

    Returns:
        Smoothed attributions (N, P), float64.
    """
    a = np.asarray(attr, dtype=np.float64)
    if valid is not None:
        a = np.where(valid, a, 0.0)
    if width <= 1:
        return a
    from scipy.ndimage import uniform_filter1d

    return np.asarray(uniform_filter1d(a, width, axis=1, mode="nearest"), dtype=np.float64)


def localisation_batch(attr: NDArray[Any], truth: NDArray[np.bool_],
                       valid: NDArray[np.bool_] | None = None, *, use_abs: bool = False,
                       smooth_px: int = 1) -> list[Localisation]:
    """:func:`localisation` for every row of (N, P) arrays.

    ``smooth_px > 1`` boxcar-smooths the (absolute, with ``use_abs``) attribution first: at
    low S/N single-pixel attributions are noisy, while injected features span many pixels.

    Args:
        attr: Attributions (N, P).
        truth: Injection masks (N, P).
        valid: Valid pixels (N, P), or ``None`` for all.
        use_abs: Rank pixels by |attribution|.
        smooth_px: Boxcar width in pixels (1 = no smoothing).

    Returns:
        One :class:`Localisation` per row, in order.
    """
    if smooth_px > 1:
        base = np.abs(np.asarray(attr, dtype=np.float64)) if use_abs else attr
        attr = smooth_rows(base, valid, smooth_px)
    return [
        localisation(attr[i], truth[i], None if valid is None else valid[i], use_abs=use_abs)
        for i in range(attr.shape[0])
    ]


def summarise_localisation(rows: list[Localisation], labels: NDArray[Any],
                           *, localised_max_fraction: float = 0.5) -> dict[str, dict[str, Any]]:
    """Per-class mean/median of the localisation metrics; NaN rows (no mask) are left out.

    A class counts as *localised* when its median mask fraction is above 0 and below
    ``localised_max_fraction`` (troughs, spikes, line windows — not whole-continuum changes).

    Args:
        rows: Metrics of N spectra (from :func:`localisation_batch`).
        labels: Class label per spectrum (N,).
        localised_max_fraction: Largest median mask fraction of a localised class.

    Returns:
        By class: ``n``, ``n_with_mask``, ``<metric>_mean`` and ``<metric>_median`` for every
        :class:`Localisation` field (``None`` when no finite value) and ``localised`` (bool).
    """
    out: dict[str, dict[str, Any]] = {}
    labels = np.asarray(labels).astype(str)
    for cls in sorted(set(labels.tolist())):
        idx = [i for i in range(len(rows)) if labels[i] == cls]
        recs = [asdict(rows[i]) for i in idx]
        summary: dict[str, Any] = {"n": len(idx)}
        for key in ("auroc", "average_precision", "relevance_mass", "relevance_rank",
                    "pointing_game", "mask_fraction"):
            vals = np.array([r[key] for r in recs], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            summary[f"{key}_mean"] = float(vals.mean()) if vals.size else None
            summary[f"{key}_median"] = float(np.median(vals)) if vals.size else None
            if key == "auroc":
                summary["n_with_mask"] = int(vals.size)
        frac = summary["mask_fraction_median"]
        summary["localised"] = bool(frac is not None and 0.0 < frac < localised_max_fraction)
        out[cls] = summary
    return out


# --------------------------------------------------------------------------- deletion / insertion


@dataclass(frozen=True)
class PerturbationCurves:
    """Windowed deletion and insertion curves, normalised per spectrum and clipped to [0, 1].

    Each point is the share of the spectrum's score excess over its baseline that remains,
    ``(s − s_baseline) / (s_spectrum − s_baseline)``, clipped to [0, 1] (a perturbed spectrum
    can score beyond either end; the clip keeps the stated meaning). Every AUC is therefore in
    [0, 1] (trapezoid over fractions 0…1; Petsiuk et al. 2018, RISE).
    ``deletion[i, k]``: after replacing the top ``fractions[k]`` of windows (by attribution) with
    the baseline — a faithful attribution makes it fall fast (low AUC, 0 is best). ``insertion``:
    starting from the baseline and pasting windows of the spectrum back in the same order —
    should rise fast (high AUC, 1 is best). ``*_random``: the same with a random window order
    (the reference to beat); ``deletion_gain`` = random − ordered deletion AUC in [−1, 1].

    Attributes:
        fractions: Share of windows replaced at each point, (K,) from 0 to 1.
        deletion: Deletion curves (N, K), attribution order.
        insertion: Insertion curves (N, K), attribution order.
        deletion_random: Deletion curves (N, K), random window order.
        insertion_random: Insertion curves (N, K), random window order.
        usable: Spectra whose score is clearly above their baseline's (N,); only these enter
            :meth:`summary`.
    """

    fractions: NDArray[np.float64]
    deletion: NDArray[np.float64]
    insertion: NDArray[np.float64]
    deletion_random: NDArray[np.float64]
    insertion_random: NDArray[np.float64]
    usable: NDArray[np.bool_]  # spectra that score clearly above their baseline

    @staticmethod
    def _auc(curves: NDArray[np.float64], fractions: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(np.trapezoid(curves, fractions, axis=1), dtype=np.float64)

    def aucs(self) -> dict[str, NDArray[np.float64]]:
        """Area under every curve (trapezoid rule over ``fractions``).

        Returns:
            ``deletion_auc``, ``insertion_auc``, ``deletion_auc_random`` and
            ``insertion_auc_random``, each (N,) in [0, 1].
        """
        return {
            "deletion_auc": self._auc(self.deletion, self.fractions),
            "insertion_auc": self._auc(self.insertion, self.fractions),
            "deletion_auc_random": self._auc(self.deletion_random, self.fractions),
            "insertion_auc_random": self._auc(self.insertion_random, self.fractions),
        }

    def summary(self) -> dict[str, float | int]:
        """Means over the usable spectra.

        Returns:
            ``n`` (usable spectra), ``<auc>_mean`` for the four AUCs and
            ``deletion_gain_mean``; NaN means when no spectrum is usable.
        """
        out: dict[str, float | int] = {"n": int(self.usable.sum())}
        aucs = self.aucs()
        for key, vals in aucs.items():
            v = vals[self.usable]
            out[f"{key}_mean"] = float(v.mean()) if v.size else float("nan")
        gain = (aucs["deletion_auc_random"] - aucs["deletion_auc"])[self.usable]
        out["deletion_gain_mean"] = float(gain.mean()) if gain.size else float("nan")
        return out


def _window_order(attr: NDArray[np.float64], valid: NDArray[np.bool_], starts: NDArray[np.int64],
                  window: int) -> NDArray[np.int64]:
    """Window indices by decreasing summed (valid-pixel) attribution."""
    masked = np.where(valid, attr, 0.0)
    sums = np.array([masked[s : s + window].sum() for s in starts])
    return np.argsort(-sums, kind="stable")


def perturbation_curves(
    score_fn: ScoreFn,
    flux: NDArray[Any],
    baseline: NDArray[Any],
    attr: NDArray[Any],
    *,
    valid: NDArray[np.bool_] | None = None,
    extras: Extras = (),
    window: int = 16,
    n_steps: int = 16,
    seed: int = 0,
    batch_size: int = 256,
    min_delta: float = 1e-6,
) -> PerturbationCurves:
    """Deletion and insertion curves with non-overlapping windows of ``window`` px.

    Windows are ranked by their summed attribution over valid pixels; at each of the
    ``n_steps + 1`` points the top share of windows is replaced by the baseline (deletion) or
    pasted from the spectrum into the baseline (insertion), after Petsiuk et al. 2018 (RISE).
    The same is done with a random window order (seeded). A spectrum is usable when
    score(x) − score(baseline) > ``min_delta``·max(1, |score(x)|). Evaluates
    2·N + 4·N·(n_steps + 1) spectra.

    Args:
        score_fn: Batched score function ``(B, P) float32 [+ extras] -> (B,)``.
        flux: Spectra (N, P) in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        baseline: Baselines (N, P), same unit (the reconstruction).
        attr: Attributions (N, P) that set the window order.
        valid: Valid pixels (N, P), or ``None`` for all.
        extras: Per-spectrum arrays with N rows passed to ``score_fn`` (ivar, z, ...).
        window: Window width in pixels (8–32 px keeps the perturbed spectra on-manifold).
        n_steps: Curve steps K − 1.
        seed: Seed of the random window order.
        batch_size: Spectra per ``score_fn`` call.
        min_delta: Relative score excess below which a spectrum is not usable.

    Returns:
        The curves, each normalised per spectrum and clipped to [0, 1].

    Raises:
        ValueError: When ``window`` is below 1.
    """
    x = np.asarray(flux, dtype=np.float32)
    b = np.asarray(baseline, dtype=np.float32)
    a = np.asarray(attr, dtype=np.float64)
    n, npix = x.shape
    v = np.ones_like(x, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    starts = window_starts(npix, window, window)
    n_win = len(starts)
    fractions = np.linspace(0.0, 1.0, n_steps + 1)
    counts = np.round(fractions * n_win).astype(int)
    rng = np.random.default_rng(seed)
    s_x = evaluate_batched(score_fn, x, batch_size, extras)
    s_b = evaluate_batched(score_fn, b, batch_size, extras)
    denom = s_x - s_b
    # Curves are only meaningful when the spectrum scores above its baseline.
    usable = denom > min_delta * np.maximum(1.0, np.abs(s_x))
    safe = np.where(usable, denom, 1.0)

    def run(orders: list[NDArray[np.int64]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        k = len(counts)
        del_scores = np.empty((n, k))
        ins_scores = np.empty((n, k))
        chunk = max(1, batch_size // k)
        for start in range(0, n, chunk):
            idx = range(start, min(n, start + chunk))
            ex_rows = tuple(np.repeat(np.asarray(e)[start : start + len(idx)], k, axis=0)
                            for e in extras)
            dele = np.empty((len(idx), k, npix), dtype=np.float32)
            ins = np.empty_like(dele)
            for j, i in enumerate(idx):
                win_pix = np.zeros((k, npix), dtype=bool)
                for kk, m in enumerate(counts):
                    for w in orders[i][:m]:
                        win_pix[kk, starts[w] : starts[w] + window] = True
                dele[j] = np.where(win_pix, b[i][None, :], x[i][None, :])
                ins[j] = np.where(win_pix, x[i][None, :], b[i][None, :])
            del_scores[start : start + len(idx)] = evaluate_batched(
                score_fn, dele.reshape(-1, npix), batch_size, ex_rows).reshape(len(idx), k)
            ins_scores[start : start + len(idx)] = evaluate_batched(
                score_fn, ins.reshape(-1, npix), batch_size, ex_rows).reshape(len(idx), k)
        norm_del = np.clip((del_scores - s_b[:, None]) / safe[:, None], 0.0, 1.0)
        norm_ins = np.clip((ins_scores - s_b[:, None]) / safe[:, None], 0.0, 1.0)
        return norm_del, norm_ins

    ordered = [_window_order(a[i], v[i], starts, window) for i in range(n)]
    random_orders = [rng.permutation(n_win) for _ in range(n)]
    deletion, insertion = run(ordered)
    deletion_r, insertion_r = run(random_orders)
    return PerturbationCurves(fractions, deletion, insertion, deletion_r, insertion_r, usable)


# --------------------------------------------------------------------------- randomisation check


def rank_correlation_rows(a: NDArray[Any], b: NDArray[Any], valid: NDArray[np.bool_] | None = None
                          ) -> NDArray[np.float64]:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b`` (valid pixels).

    Args:
        a: Attributions (N, P).
        b: Attributions (N, P).
        valid: Valid pixels (N, P), or ``None`` for all.

    Returns:
        Correlations (N,) in [−1, 1], float64; NaN for a row where either map is constant.
    """
    out = np.empty(a.shape[0], dtype=np.float64)
    for i in range(a.shape[0]):
        sel = slice(None) if valid is None else np.asarray(valid[i], dtype=bool)
        ra = rankdata(np.asarray(a[i], dtype=np.float64)[sel])
        rb = rankdata(np.asarray(b[i], dtype=np.float64)[sel])
        if ra.std() == 0 or rb.std() == 0:
            out[i] = np.nan
        else:
            out[i] = float(np.corrcoef(ra, rb)[0, 1])
    return out


def top_k_overlap(a: NDArray[Any], b: NDArray[Any], k: int) -> NDArray[np.float64]:
    """Share of the top-k pixels (by |attribution|) that the two attribution maps have in common.

    Args:
        a: Attributions (N, P).
        b: Attributions (N, P).
        k: Number of top pixels (≥ 1).

    Returns:
        Overlaps (N,) in [0, 1].
    """
    ta = np.argsort(-np.abs(a), axis=1)[:, :k]
    tb = np.argsort(-np.abs(b), axis=1)[:, :k]
    return np.array([len(set(ta[i]) & set(tb[i])) / k for i in range(a.shape[0])])


@dataclass(frozen=True)
class RandomisationCheck:
    """Model-parameter randomisation test (Adebayo et al. 2018).

    ``passed`` is True when the explanation method *is* sensitive to the weights: the attributions
    of the randomised model are dissimilar (mean |Spearman| of |attribution| below
    ``max_similarity``); a method that returns the same map for random weights fails.
    ``separated`` (None without injection masks) is True when the trained model localises the
    injected features better than the randomised one by at least ``min_localisation_gap``
    (pixel AUROC, range [0, 1], 0.5 = chance): a model whose localisation a random network
    matches is not explaining what it learned (reported in the release evidence as
    ``xai.randomisation.separated``; not yet a release gate).

    Attributes:
        spearman_abs_mean: Mean |Spearman| of |attribution| (trained vs randomised).
        spearman_signed_mean: Mean Spearman of the signed attributions.
        top_k_overlap_mean: Mean top-k overlap by |attribution|.
        localisation_auroc_trained: Mean localisation AUROC of the trained model, or None.
        localisation_auroc_randomised: Mean localisation AUROC of the randomised model, or
            None.
        max_similarity: Threshold on ``spearman_abs_mean`` for ``passed``.
        passed: The explanation changes with the weights (similarity below the threshold).
        localisation_gap: Trained − randomised localisation AUROC, or None.
        min_localisation_gap: Threshold on ``localisation_gap`` for ``separated``.
        separated: The trained model localises clearly better, or None without masks.
    """

    spearman_abs_mean: float
    spearman_signed_mean: float
    top_k_overlap_mean: float
    localisation_auroc_trained: float | None
    localisation_auroc_randomised: float | None
    max_similarity: float
    passed: bool
    localisation_gap: float | None = None
    min_localisation_gap: float = 0.05
    separated: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data (every field by name)."""
        return asdict(self)


def randomisation_check(
    trained: NDArray[Any],
    randomised: NDArray[Any],
    *,
    valid: NDArray[np.bool_] | None = None,
    truth: NDArray[np.bool_] | None = None,
    max_similarity: float = 0.5,
    top_fraction: float = 0.05,
    use_abs: bool = False,
    smooth_px: int = 1,
    min_localisation_gap: float = 0.05,
) -> RandomisationCheck:
    """Compare attributions of the trained model with those of a weight-randomised copy.

    ``use_abs`` / ``smooth_px`` define the localisation AUROC reported for both models (the
    same definition as :func:`localisation_batch`). Adebayo et al. 2018's model-parameter
    randomisation test, with all weights randomised at once.

    Args:
        trained: Attributions of the trained model (N, P).
        randomised: Attributions of the weight-randomised model (N, P), same spectra.
        valid: Valid pixels (N, P), or ``None`` for all.
        truth: Injection masks (N, P), or ``None`` (no localisation comparison).
        max_similarity: ``passed`` needs mean |Spearman| of |attribution| below this.
        top_fraction: Share of pixels in the top-k overlap (k ≥ 1).
        use_abs: Localisation ranks |attribution|.
        smooth_px: Localisation boxcar width in pixels.
        min_localisation_gap: ``separated`` needs a trained − randomised AUROC gap of at
            least this.

    Returns:
        The check (similarities, localisation AUROCs and the two verdicts).
    """
    t = np.asarray(trained, dtype=np.float64)
    r = np.asarray(randomised, dtype=np.float64)
    if valid is not None:
        t = np.where(valid, t, 0.0)
        r = np.where(valid, r, 0.0)
    sp_abs = rank_correlation_rows(np.abs(t), np.abs(r), valid)
    sp_signed = rank_correlation_rows(t, r, valid)
    k = max(1, round(top_fraction * t.shape[1]))
    overlap = top_k_overlap(t, r, k)
    auc_t = auc_r = None
    if truth is not None:
        loc_t = [x.auroc for x in localisation_batch(t, truth, valid, use_abs=use_abs,
                                                     smooth_px=smooth_px)]
        loc_r = [x.auroc for x in localisation_batch(r, truth, valid, use_abs=use_abs,
                                                     smooth_px=smooth_px)]
        ft = np.array(loc_t, dtype=np.float64)
        fr = np.array(loc_r, dtype=np.float64)
        if np.isfinite(ft).any():
            auc_t = float(np.nanmean(ft))
            auc_r = float(np.nanmean(fr))
    sim = float(np.nanmean(np.abs(sp_abs))) if np.isfinite(sp_abs).any() else 1.0
    gap = None if auc_t is None or auc_r is None else float(auc_t - auc_r)
    return RandomisationCheck(
        spearman_abs_mean=sim,
        spearman_signed_mean=float(np.nanmean(sp_signed)) if np.isfinite(sp_signed).any()
        else 1.0,
        top_k_overlap_mean=float(overlap.mean()),
        localisation_auroc_trained=auc_t,
        localisation_auroc_randomised=auc_r,
        max_similarity=max_similarity,
        passed=bool(sim < max_similarity),
        localisation_gap=gap,
        min_localisation_gap=min_localisation_gap,
        separated=None if gap is None else bool(gap >= min_localisation_gap),
    )


def randomise_torch_module(module: Any, seed: int = 0) -> Any:
    """A deep copy of a torch module with every parameter re-drawn from N(0, std(original)).

    Parameters that are constant (std 0, e.g. norm weights of 1) are drawn with std 1 around
    their original value so that they change too.

    Args:
        module: A ``torch.nn.Module`` (not modified).
        seed: Seed of the ``torch.Generator`` that draws the new weights.

    Returns:
        The randomised copy (buffers such as the latent density are kept).
    """
    import copy

    import torch

    clone = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if std > 0:
                p.copy_(noise * std)
            else:
                p.copy_(p + noise)
    return clone


def randomise_jax_params(params: Any, seed: int = 0) -> Any:
    """The same randomisation for a JAX/NumPy parameter pytree.

    Args:
        params: Parameter pytree (not modified); non-float leaves are kept as they are.
        seed: Seed of the NumPy generator.

    Returns:
        A pytree of the same structure with re-drawn float leaves (NumPy arrays), including
        any latent-density leaves it contains.
    """
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    new = []
    for leaf in leaves:
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating):
            new.append(leaf)
            continue
        std = float(arr.std()) if arr.size > 1 else 0.0
        noise = rng.standard_normal(arr.shape).astype(arr.dtype)
        new.append(noise * std if std > 0 else arr + noise)
    return jax.tree_util.tree_unflatten(treedef, new)
