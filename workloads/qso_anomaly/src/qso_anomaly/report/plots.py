"""Report figures (matplotlib, Agg backend), returned as PNG bytes for embedding in HTML."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from qso_anomaly.registry.evaluation import pr_curve

DPI = 90


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the True runs of a 1-D mask."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    d = np.diff(m.astype(int))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def spectrum_panel(wave: NDArray[Any], flux: NDArray[Any], recon: NDArray[Any],
                   attribution: NDArray[Any], *, ivar: NDArray[Any] | None = None,
                   truth: NDArray[np.bool_] | None = None, title: str = "") -> bytes:
    """Spectrum + reconstruction, injected mask shaded, attribution heat-strip underneath."""
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(9.0, 3.0), sharex=True,
                                    gridspec_kw={"height_ratios": [5, 1], "hspace": 0.05})
    good = np.ones_like(flux, dtype=bool) if ivar is None else np.asarray(ivar) > 0
    f = np.where(good, flux, np.nan)
    ax.plot(wave, f, lw=0.5, color="0.35", label="flux")
    ax.plot(wave, recon, lw=1.0, color="tab:blue", label="reconstruction")
    if truth is not None and np.any(truth):
        for k, (a, b) in enumerate(_runs(truth)):
            ax.axvspan(wave[a], wave[min(b, len(wave) - 1)], color="tab:orange", alpha=0.25,
                       lw=0, label="injected" if k == 0 else None)
    lo, hi = np.nanpercentile(f, [1, 99]) if np.isfinite(f).any() else (0.0, 1.0)
    pad = 0.2 * (hi - lo + 1e-6)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel("flux")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=3)
    attr = np.asarray(attribution, dtype=np.float64)
    vmax = float(np.nanpercentile(np.abs(attr), 99)) or 1.0
    strip.imshow(attr[None, :], aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                 extent=(float(wave[0]), float(wave[-1]), 0.0, 1.0), interpolation="nearest")
    strip.set_yticks([])
    strip.set_ylabel("IG", fontsize=7)
    strip.set_xlabel("observed wavelength [Å]")
    return to_png(fig)


def pr_curves(scores: NDArray[Any], labels: NDArray[Any]) -> bytes:
    """Precision–recall of every anomaly class against normals, and any-anomaly overall."""
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels).astype(str)
    normal = lab == "normal"
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    classes = sorted(set(lab.tolist()) - {"normal"})
    cmap = plt.get_cmap("tab20")
    for i, cls in enumerate(classes):
        sel = (lab == cls) | normal
        p, r = pr_curve(s[sel], lab[sel] == cls)
        ax.plot(r, p, lw=1.0, color=cmap(i % 20), label=cls)
    p, r = pr_curve(s, ~normal)
    ax.plot(r, p, lw=2.0, color="k", label="any anomaly")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.set_title("Precision–recall per class (vs normal)")
    return to_png(fig)


def slice_performance(evaluation: Mapping[str, Any]) -> bytes:
    """AUROC with 95% bootstrap CIs per S/N bin and per redshift bin."""
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2), sharey=True)
    for ax, key, name in ((axes[0], "per_snr_bin", "S/N per pixel"),
                          (axes[1], "per_z_bin", "redshift")):
        bins = evaluation.get(key, {})
        labels = list(bins)
        vals = [bins[b]["auroc"] if bins[b]["auroc"] is not None else np.nan for b in labels]
        lows = [bins[b]["auroc_ci"][0] if bins[b].get("auroc_ci") else np.nan for b in labels]
        highs = [bins[b]["auroc_ci"][1] if bins[b].get("auroc_ci") else np.nan for b in labels]
        x = np.arange(len(labels))
        v = np.asarray(vals, dtype=float)
        err = np.vstack([v - np.asarray(lows, dtype=float), np.asarray(highs, dtype=float) - v])
        ax.bar(x, v, color="tab:blue", alpha=0.7)
        ax.errorbar(x, v, yerr=np.nan_to_num(err), fmt="none", color="k", capsize=3)
        ax.axhline(0.5, color="0.5", ls="--", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, fontsize=7)
        ax.set_xlabel(name)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("AUROC (95% CI)")
    fig.suptitle("Detection performance by S/N and redshift bin", fontsize=10)
    return to_png(fig)


def score_distribution(scores: NDArray[Any], reference: NDArray[Any] | None,
                       drift: Mapping[str, Any] | None = None,
                       threshold: float | None = None) -> bytes:
    """Histogram of this run's scores over the reference distribution."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    fig, ax = plt.subplots(figsize=(7.0, 3.5))
    pool = s if reference is None else np.concatenate([s, np.asarray(reference, float)])
    pool = pool[np.isfinite(pool)]
    lo, hi = (np.percentile(pool, [0.5, 99.5]) if pool.size else (0.0, 1.0))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 50).tolist()
    if reference is not None and np.asarray(reference).size:
        ax.hist(np.clip(reference, lo, hi), bins=bins, density=True, alpha=0.5,
                color="0.5", label="reference (validation normals)")
    ax.hist(np.clip(s, lo, hi), bins=bins, density=True, histtype="step", lw=1.5,
            color="tab:red", label="this run")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1.0, label="flag threshold")
    text = ""
    if drift:
        text = (f"PSI {drift.get('psi', float('nan')):.3f} ({drift.get('psi_band', '')}), "
                f"KS {drift.get('ks_statistic', float('nan')):.3f} "
                f"(p={drift.get('ks_pvalue', float('nan')):.2g})")
    ax.set_title("Score distribution vs reference" + (f" — {text}" if text else ""), fontsize=9)
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return to_png(fig)


def deletion_curves(curves: Mapping[str, Any]) -> bytes:
    """Mean windowed deletion curve vs the random-order reference (``report["curves"]``)."""
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    fractions = np.asarray(curves["fractions"], dtype=float)
    ax.plot(fractions, np.asarray(curves["deletion_mean"], dtype=float), color="tab:red",
            label="IG order")
    ax.plot(fractions, np.asarray(curves["deletion_random_mean"], dtype=float), color="0.5",
            ls="--", label="random order")
    ax.set_xlabel("fraction of windows replaced by the reconstruction")
    ax.set_ylabel("normalised score")
    ax.legend(fontsize=7)
    ax.set_title("Deletion curves (lower area = more faithful)", fontsize=9)
    return to_png(fig)
