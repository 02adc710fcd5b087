"""Detection metrics for benchmark qso-inject-v1: AP, AUROC, precision@100, recall@1%.

Per class: that class's spectra against all normal spectra. Per S/N and redshift bin: every
anomaly against every normal spectrum inside the bin.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from qso_anomaly.data.classes import NORMAL

SNR_BINS: tuple[float, ...] = (0.0, 1.0, 2.33, 5.0, 1e9)
Z_BINS: tuple[float, ...] = (0.0, 1.0, 1.71, 2.5, 10.0)


def binary_metrics(scores: np.ndarray, positive: np.ndarray, k: int = 100) -> dict[str, Any]:
    """AP, AUROC, precision@k and recall@(1% of N) for one positive/negative split."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n, n_pos = len(scores), int(positive.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos}
    if n_pos == 0 or n_pos == n:
        out.update(ap=None, auroc=None, precision_at_100=None, recall_at_1pct=None,
                   chance_ap=None)
        return out
    s = np.where(np.isfinite(scores), scores, np.nanmax(scores[np.isfinite(scores)]) + 1.0)
    order = np.argsort(-s, kind="stable")
    top_k = positive[order[: min(k, n)]]
    k1 = max(1, round(0.01 * n))
    out.update(
        ap=float(average_precision_score(positive, s)),
        auroc=float(roc_auc_score(positive, s)),
        precision_at_100=float(top_k.mean()),
        recall_at_1pct=float(positive[order[:k1]].sum() / n_pos),
        chance_ap=n_pos / n,
    )
    return out


def _bin_label(lo: float, hi: float) -> str:
    return f"[{lo:g},{hi:g})" if hi < 1e8 else f">={lo:g}"


def detection_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    snr: np.ndarray | None = None,
    z: np.ndarray | None = None,
) -> dict[str, Any]:
    """{"overall": …, "per_class": {cls: …}, "per_snr": {bin: …}, "per_z": {bin: …},
    "per_class_snr": {cls: {bin: …}}} of :func:`binary_metrics` dicts."""
    labels = np.asarray(labels).astype(str)
    anomalous = labels != NORMAL
    normal = ~anomalous
    out: dict[str, Any] = {"overall": binary_metrics(scores, anomalous), "per_class": {}}
    classes = sorted(set(labels.tolist()) - {NORMAL})
    for cls in classes:
        sel = normal | (labels == cls)
        out["per_class"][cls] = binary_metrics(scores[sel], labels[sel] == cls)
    for key, values, edges in (("per_snr", snr, SNR_BINS), ("per_z", z, Z_BINS)):
        if values is None:
            continue
        v = np.asarray(values)
        out[key] = {}
        for lo, hi in itertools.pairwise(edges):
            sel = (v >= lo) & (v < hi)
            out[key][_bin_label(lo, hi)] = binary_metrics(scores[sel], anomalous[sel])
    if snr is not None:
        v = np.asarray(snr)
        out["per_class_snr"] = {}
        for cls in classes:
            row = {}
            for lo, hi in itertools.pairwise(SNR_BINS):
                sel = (normal | (labels == cls)) & (v >= lo) & (v < hi)
                row[_bin_label(lo, hi)] = binary_metrics(scores[sel], labels[sel] == cls)
            out["per_class_snr"][cls] = row
    return out


def bootstrap_ci(
    scores: np.ndarray, positive: np.ndarray, *, n_boot: int = 200, seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Stratified bootstrap CIs of AP and AUROC: positives and negatives are resampled with
    replacement separately (so the prevalence, and chance AP, stay fixed); percentile
    interval at ``level``. None when a side is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    pos, neg = np.where(y)[0], np.where(~y)[0]
    if pos.size == 0 or neg.size == 0:
        return {"ap": None, "auroc": None}
    finite = np.isfinite(s)
    s = np.where(finite, s, np.nanmax(s[finite]) + 1.0 if finite.any() else 0.0)
    rng = np.random.default_rng(seed)
    aps, aucs = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        yy = y[idx]
        aps[b] = average_precision_score(yy, s[idx])
        aucs[b] = roc_auc_score(yy, s[idx])
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    lo_ap, hi_ap = np.quantile(aps, q)
    lo_au, hi_au = np.quantile(aucs, q)
    return {"ap": (float(lo_ap), float(hi_ap)), "auroc": (float(lo_au), float(hi_au))}


def per_class_with_ci(scores: np.ndarray, labels: np.ndarray, *, n_boot: int = 200,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per class (vs all normal spectra): AP, AUROC, chance AP and their bootstrap 95 % CIs."""
    labels = np.asarray(labels).astype(str)
    normal = labels == NORMAL
    out: dict[str, dict[str, Any]] = {}
    for cls in sorted(set(labels.tolist()) - {NORMAL}):
        sel = normal | (labels == cls)
        y = labels[sel] == cls
        m = binary_metrics(scores[sel], y)
        ci = bootstrap_ci(scores[sel], y, n_boot=n_boot, seed=seed)
        out[cls] = {"n_pos": m["n_pos"], "chance_ap": m["chance_ap"], "ap": m["ap"],
                    "auroc": m["auroc"], "ap_ci": ci["ap"], "auroc_ci": ci["auroc"],
                    "above_chance": bool(ci["ap"] is not None and m["chance_ap"] is not None
                                         and ci["ap"][0] > m["chance_ap"]
                                         and ci["auroc"] is not None and ci["auroc"][0] > 0.5)}
    return out
