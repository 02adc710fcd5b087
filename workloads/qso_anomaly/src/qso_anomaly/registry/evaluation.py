"""Detection metrics with bootstrap confidence intervals, per class, S/N bin and redshift bin.

These numbers feed the release gates and the model card (Quantitative analyses). Each class is
scored one-vs-normal; S/N and redshift slices score "any anomaly" vs normal inside the slice.
Confidence intervals are percentile bootstraps over spectra (resampling normals and anomalies
separately, so every replicate has both).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

NORMAL = "normal"
# The same bins as qso_anomaly.bench.metrics (S/N median 2.3/pixel; z quartile-like cuts).
SNR_EDGES: tuple[float, ...] = (0.0, 1.0, 2.33, 5.0, np.inf)
Z_EDGES: tuple[float, ...] = (0.0, 1.0, 1.71, 2.5, np.inf)


def auroc(scores: NDArray[Any], positive: NDArray[np.bool_]) -> float:
    """AUROC (Mann–Whitney, ties averaged); NaN without both classes."""
    pos = np.asarray(positive, dtype=bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(scores: NDArray[Any], positive: NDArray[np.bool_]) -> float:
    pos = np.asarray(positive, dtype=bool)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = pos[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / n_pos)


def precision_recall_at_k(scores: NDArray[Any], positive: NDArray[np.bool_], k: int
                          ) -> tuple[float, float]:
    pos = np.asarray(positive, dtype=bool)
    k = max(1, min(k, pos.size))
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    hits = int(pos[top].sum())
    n_pos = int(pos.sum())
    return hits / k, (hits / n_pos if n_pos else float("nan"))


def _bootstrap(scores: NDArray[np.float64], positive: NDArray[np.bool_], n_boot: int,
               rng: np.random.Generator) -> dict[str, list[float] | None]:
    pos_idx = np.flatnonzero(positive)
    neg_idx = np.flatnonzero(~positive)
    if n_boot <= 0 or pos_idx.size == 0 or neg_idx.size == 0:
        return {"auroc_ci": None, "average_precision_ci": None}
    aucs = np.empty(n_boot)
    aps = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos_idx, pos_idx.size), rng.choice(neg_idx, neg_idx.size)])
        s, p = scores[idx], positive[idx]
        aucs[b] = auroc(s, p)
        aps[b] = average_precision(s, p)
    return {
        "auroc_ci": [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))],
        "average_precision_ci": [float(np.percentile(aps, 2.5)), float(np.percentile(aps, 97.5))],
    }


def _slice_metrics(scores: NDArray[np.float64], positive: NDArray[np.bool_], n_boot: int,
                   rng: np.random.Generator, k: int) -> dict[str, Any]:
    prec, rec = precision_recall_at_k(scores, positive, k)
    out: dict[str, Any] = {
        "n": int(positive.size),
        "n_positive": int(positive.sum()),
        "auroc": auroc(scores, positive),
        "average_precision": average_precision(scores, positive),
        "prevalence": float(positive.mean()) if positive.size else float("nan"),
        f"precision_at_{k}": prec,
        f"recall_at_{k}": rec,
    }
    out["ap_lift"] = (out["average_precision"] / out["prevalence"]
                      if out["prevalence"] and np.isfinite(out["prevalence"]) else float("nan"))
    out.update(_bootstrap(scores, positive, n_boot, rng))
    ci = out["auroc_ci"]
    out["auroc_ci_low"] = ci[0] if ci else float("nan")
    return out


def _bin_label(lo: float, hi: float) -> str:
    return f"[{lo:g},{hi:g})" if np.isfinite(hi) else f">={lo:g}"


def evaluate_detection(
    scores: NDArray[Any],
    labels: NDArray[Any],
    *,
    snr: NDArray[Any] | None = None,
    z: NDArray[Any] | None = None,
    classes: Sequence[str] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    snr_edges: Sequence[float] = SNR_EDGES,
    z_edges: Sequence[float] = Z_EDGES,
) -> dict[str, Any]:
    """Overall, per-class, per-S/N-bin and per-z-bin AUROC/AP with 95% bootstrap CIs.

    ``k`` for precision/recall@k is 1% of N (at least 1), the visual-inspection budget.
    Also returns the summary numbers the gates use: ``min_class_auroc`` and the largest AUROC gaps
    between S/N bins and between z bins (MEASURE 2.11 reading of "fairness").
    """
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels).astype(str)
    finite = np.isfinite(s)
    s, lab = s[finite], lab[finite]
    snr_a = None if snr is None else np.asarray(snr, dtype=np.float64)[finite]
    z_a = None if z is None else np.asarray(z, dtype=np.float64)[finite]
    rng = np.random.default_rng(seed)
    anomalous = lab != NORMAL
    k = max(1, round(0.01 * s.size))
    result: dict[str, Any] = {"n": int(s.size), "k": k,
                              "overall": _slice_metrics(s, anomalous, n_boot, rng, k)}
    present = sorted(set(lab.tolist()) - {NORMAL})
    names = [c for c in (classes or present) if c in present]
    per_class: dict[str, Any] = {}
    for cls in names:
        sel = (lab == cls) | ~anomalous
        per_class[cls] = _slice_metrics(s[sel], lab[sel] == cls, n_boot, rng, k)
    result["per_class"] = per_class
    for name, values, edges in (("per_snr_bin", snr_a, snr_edges), ("per_z_bin", z_a, z_edges)):
        bins: dict[str, Any] = {}
        if values is not None:
            for lo, hi in itertools.pairwise(edges):
                sel = (values >= lo) & (values < hi)
                if sel.sum() == 0:
                    continue
                bins[_bin_label(lo, hi)] = _slice_metrics(s[sel], anomalous[sel], n_boot, rng, k)
        result[name] = bins
    class_aucs = [m["auroc"] for m in per_class.values() if np.isfinite(m["auroc"])]
    result["min_class_auroc"] = float(min(class_aucs)) if class_aucs else float("nan")
    result["mean_class_average_precision"] = float(np.nanmean(
        [m["average_precision"] for m in per_class.values()])) if per_class else float("nan")
    for name in ("per_snr_bin", "per_z_bin"):
        aucs = [m["auroc"] for m in result[name].values()
                if np.isfinite(m["auroc"]) and m["n_positive"] >= 5
                and m["n"] - m["n_positive"] >= 5]
        result[f"max_auroc_gap_{name[4:]}"] = float(max(aucs) - min(aucs)) if len(aucs) > 1 else 0.0
    return result


def pr_curve(scores: NDArray[Any], positive: NDArray[np.bool_]
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Precision and recall at every cut of the ranked scores (for plots)."""
    pos = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.cumsum(pos[order])
    precision = hits / np.arange(1, pos.size + 1)
    recall = hits / max(int(pos.sum()), 1)
    return precision, recall
