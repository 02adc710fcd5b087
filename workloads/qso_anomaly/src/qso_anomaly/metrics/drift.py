"""Score drift against the reference (validation) distribution: PSI and two-sample KS (§C6).

PSI bins are the reference's equal-mass quantiles, the same edges the ``anomaly_score``
histogram uses, so PSI can also be computed from bucket counts alone
(:func:`psi_from_counts`). Conventional PSI bands: < 0.1 none, 0.1–0.25 moderate, ≥ 0.25
significant. With small samples PSI is noisy even without drift: for B bins, n reference and m
current scores, PSI / (1/n + 1/m) is approximately χ²(B − 1) under no drift (the PSI is a
symmetrised KL divergence; Yurdakul 2018, "Statistical properties of population stability
index"). :func:`psi_band` therefore raises each band edge to at least the 99th percentile of
that null distribution, and the drift decision is a two-sample test at a stated significance
level (KS, α = 0.01 by default) or a PSI above that null percentile, so a run without drift
raises an alarm ≈ 1–2 % of the time whatever the reference size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2, ks_2samp

PSI_EPS = 1e-4


MIN_PER_BIN = 10


def effective_bins(n_reference: int, n_bins: int = 10) -> int:
    """Fewer bins for small references: at least ``MIN_PER_BIN`` reference scores per bin."""
    return int(max(2, min(n_bins, n_reference // MIN_PER_BIN)))


def reference_edges(reference: NDArray[Any], n_bins: int = 10) -> NDArray[np.float64]:
    """Interior bin edges at the reference's quantiles 1/n … (n-1)/n (duplicates removed).

    Small references get fewer bins (:func:`effective_bins`) so PSI is not dominated by noise.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        raise ValueError("reference distribution is empty (no finite scores)")
    n_bins = effective_bins(ref.size, n_bins)
    qs = np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.unique(qs)


def bin_counts(values: NDArray[Any], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts in the bins (-inf, e0], (e0, e1], …, (e_last, inf) — Prometheus ``le`` semantics."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    idx = np.searchsorted(edges, v, side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def psi_from_counts(reference_counts: NDArray[Any], current_counts: NDArray[Any],
                    eps: float = PSI_EPS) -> float:
    """Population stability index sum((c - r) ln(c / r)) over bin shares, with a floor ``eps``."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"bin count shapes differ: {r.shape} vs {c.shape}")
    if r.sum() <= 0 or c.sum() <= 0:
        return float("nan")
    rp = np.clip(r / r.sum(), eps, None)
    cp = np.clip(c / c.sum(), eps, None)
    return float(np.sum((cp - rp) * np.log(cp / rp)))


def psi(reference: NDArray[Any], current: NDArray[Any], n_bins: int = 10) -> float:
    """PSI of ``current`` scores against ``reference`` scores on reference-quantile bins."""
    edges = reference_edges(reference, n_bins)
    return psi_from_counts(bin_counts(reference, edges), bin_counts(current, edges))


def psi_null_quantile(n_reference: int, n_current: int, n_bins: int, q: float = 0.99) -> float:
    """The ``q`` quantile of PSI between two samples of one distribution (χ² approximation)."""
    if n_reference <= 0 or n_current <= 0 or n_bins < 2:
        return float("inf")
    return float(chi2.ppf(q, n_bins - 1) * (1.0 / n_reference + 1.0 / n_current))


def psi_band(value: float, n_reference: int | None = None, n_current: int | None = None,
             n_bins: int = 10) -> str:
    """PSI band: none, moderate or significant. With sample sizes, each conventional edge
    (0.1, 0.25) is raised to at least the 99th percentile of PSI under no drift."""
    if not np.isfinite(value):
        return "unknown"
    floor = (psi_null_quantile(n_reference, n_current, n_bins)
             if n_reference and n_current else 0.0)
    if value < max(0.1, floor):
        return "none"
    if value < max(0.25, 2.0 * floor):
        return "moderate"
    return "significant"


@dataclass(frozen=True)
class ScoreDrift:
    """Drift of one run's scores against the reference."""

    psi: float
    psi_band: str
    psi_null_q99: float
    ks_statistic: float
    ks_pvalue: float
    n_reference: int
    n_current: int
    n_bins: int
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_drift(reference: NDArray[Any], current: NDArray[Any], *, n_bins: int = 10,
                psi_threshold: float = 0.25, ks_alpha: float = 0.01) -> ScoreDrift:
    """PSI and KS of ``current`` vs ``reference``; ``drifted`` if KS p < α or PSI exceeds both
    ``psi_threshold`` and its 99th percentile under no drift for these sample sizes."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        raise ValueError(
            f"drift needs finite scores on both sides (reference {ref.size}, current {cur.size})")
    value = psi(ref, cur, n_bins)
    ks = ks_2samp(ref, cur)
    stat, pvalue = float(ks.statistic), float(ks.pvalue)
    bins = int(reference_edges(ref, n_bins).size + 1)
    null99 = psi_null_quantile(ref.size, cur.size, bins)
    return ScoreDrift(
        psi=value,
        psi_band=psi_band(value, ref.size, cur.size, bins),
        psi_null_q99=null99,
        ks_statistic=stat,
        ks_pvalue=pvalue,
        n_reference=int(ref.size),
        n_current=int(cur.size),
        n_bins=bins,
        drifted=bool((value >= max(psi_threshold, null99)) or pvalue < ks_alpha),
    )


def feature_ks(reference: NDArray[Any], current: NDArray[Any], *, alpha: float = 0.01
               ) -> dict[str, Any]:
    """Per-feature KS (columns of (N, F) arrays) with a Bonferroni-corrected decision."""
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    cur = np.atleast_2d(np.asarray(current, dtype=np.float64))
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"feature counts differ: {ref.shape[1]} vs {cur.shape[1]}")
    n_feat = ref.shape[1]
    stats, pvals = [], []
    for j in range(n_feat):
        res = ks_2samp(ref[:, j], cur[:, j])
        stats.append(float(res.statistic))
        pvals.append(float(res.pvalue))
    threshold = alpha / n_feat
    return {
        "statistic": stats,
        "pvalue": pvals,
        "alpha_bonferroni": threshold,
        "drifted_features": [j for j, p in enumerate(pvals) if p < threshold],
    }
