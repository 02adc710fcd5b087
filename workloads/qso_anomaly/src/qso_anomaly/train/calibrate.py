"""Calibrated flag decisions: conformal p-values against a held-out calibration set.

The calibration set is normal spectra held out from training (never seen by the network or the
latent density). For a new score s, the conformal p-value is
``p(s) = (1 + #{calibration scores ≥ s}) / (n + 1)`` (split conformal, Vovk et al. 2005; Bates et
al. 2023, "Testing for outliers with conformal p-values"); flagging ``p ≤ α`` has a false-positive
rate ≤ α for exchangeable normal spectra, whatever the score's distribution. The equivalent
decision is ``s > t`` with t the (n − m)-th smallest calibration score, m = ⌊α(n + 1)⌋ − 1. Its uncertainty is
reported as a bootstrap 95 % interval over resampled calibration sets, together with the
expected relative spread of the flagged count (binomial: √((1 − α)/(α·n)) for a fixed test set).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


def conformal_threshold(scores: NDArray[Any], alpha: float) -> float:
    """t such that ``s > t`` ⇔ ``p(s) ≤ α`` (inf when the set is too small for α)."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    n = s.size
    m = math.floor(alpha * (n + 1) + 1e-9) - 1
    return float("inf") if m < 0 or n == 0 else float(s[n - m - 1])


def p_values(calibration: NDArray[Any], scores: NDArray[Any]) -> NDArray[np.float64]:
    """Conformal p-values of ``scores`` (NaN stays NaN)."""
    cal = np.sort(np.asarray(calibration, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    ge = cal.size - np.searchsorted(cal, s, side="left")
    p = (1.0 + ge) / (cal.size + 1.0)
    return np.where(np.isfinite(s), p, np.nan)


@dataclass(frozen=True)
class Calibration:
    """Threshold of the flag decision with its uncertainty."""

    alpha: float
    n_calibration: int
    threshold: float
    threshold_ci_low: float
    threshold_ci_high: float
    flagged_count_rel_sd: float
    method: str = "split-conformal"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(scores: NDArray[Any], alpha: float = 0.01, *, n_boot: int = 500,
              seed: int = 0) -> Calibration:
    """Conformal threshold of calibration ``scores`` at level ``alpha`` with a bootstrap CI."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    thr = conformal_threshold(s, alpha)
    rng = np.random.default_rng(seed)
    boots = np.array([conformal_threshold(rng.choice(s, s.size), alpha) for _ in range(n_boot)]
                     ) if s.size else np.array([np.inf])
    lo, hi = np.quantile(boots, [0.025, 0.975]) if s.size else (np.inf, np.inf)
    rel = math.sqrt((1 - alpha) / (alpha * s.size)) if s.size else float("inf")
    return Calibration(alpha=alpha, n_calibration=int(s.size), threshold=thr,
                       threshold_ci_low=float(lo), threshold_ci_high=float(hi),
                       flagged_count_rel_sd=rel)
