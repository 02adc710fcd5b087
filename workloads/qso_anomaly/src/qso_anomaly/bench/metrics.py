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
