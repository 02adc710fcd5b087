"""Robustness of the flag decision to instrument states (issue 12 goal: within 2x of the flag
rate of unmasked normal quasars).

Each variant applies one instrument state to every normal test spectrum; the flag is the
conformal decision p ≤ α against the model's held-out calibration scores of the spectrum's own
coverage stratum (Mondrian conformal, :mod:`qso_anomaly.train.mondrian`); a plain array of
calibration scores is the pooled decision. ``pooled_flag_rate`` is the pooled decision against
the clean held-out scores, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.masks import camera, contiguous_blocks, masked
from qso_anomaly.models.scoring import score_torch
from qso_anomaly.train.calibrate import p_values
from qso_anomaly.train.mondrian import (
    MondrianCalibration,
    coverage_strata,
    level_counts,
    stratum_name,
)

Variant = Callable[[SpectraBatch, np.random.Generator], SpectraBatch]


def _mask_where(batch: SpectraBatch, sel: np.ndarray) -> SpectraBatch:
    sel = np.broadcast_to(sel, batch.flux.shape)
    flux, ivar = masked(batch.flux, batch.ivar, sel)
    return batch.with_arrays(ivar=ivar, flux=flux, mask=batch.mask | sel)


def camera_off(arm: str) -> Variant:
    def f(batch: SpectraBatch, rng: np.random.Generator) -> SpectraBatch:
        return _mask_where(batch, camera(batch.meta["wave"], arm))
    return f


def contiguous_block(fraction: float) -> Variant:
    def f(batch: SpectraBatch, rng: np.random.Generator) -> SpectraBatch:
        n, p = batch.flux.shape
        return _mask_where(batch, contiguous_blocks(n, p, fraction, rng))
    return f


def low_ivar_spikes(n_spikes: int = 10, sigma: float = 30.0, factor: float = 1e-4) -> Variant:
    """``n_spikes`` pixels get +``sigma``·σ flux and ivar × ``factor`` (a down-weighted sky
    residual)."""
    def f(batch: SpectraBatch, rng: np.random.Generator) -> SpectraBatch:
        flux, ivar = batch.flux.copy(), batch.ivar.copy()
        for i in range(flux.shape[0]):
            good = np.where(ivar[i] > 0)[0]
            px = rng.choice(good, size=min(n_spikes, good.size), replace=False)
            flux[i, px] += sigma / np.sqrt(ivar[i, px])
            ivar[i, px] *= factor
        return batch.with_arrays(flux=flux, ivar=ivar)
    return f


VARIANTS: dict[str, Variant | None] = {
    "unmasked": None,
    "b camera masked": camera_off("b"),
    "r camera masked": camera_off("r"),
    "z camera masked": camera_off("z"),
    "20% contiguous block": contiguous_block(0.20),
    "35% contiguous block": contiguous_block(0.35),
    "10 low-ivar +30σ spikes": low_ivar_spikes(),
}


def robustness_table(model: Any, calibration: MondrianCalibration | np.ndarray,
                     normals: SpectraBatch, wave: np.ndarray, *, alpha: float = 0.01,
                     seed: int = 0, pooled: np.ndarray | None = None
                     ) -> dict[str, dict[str, Any]]:
    """{variant: {n, flag_rate, ratio_to_unmasked, median_score, within_2x, strata, levels
    [, pooled_flag_rate]}} for torch ``model``.

    Args:
        model: A torch ``QsoAutoencoder`` with its density.
        calibration: The model's flag calibration (``TrainedModel.flag_calibration()``), or an
            array of calibration scores (pooled decision).
        normals: Clean normal spectra on the grid ``wave`` (Å, ``(P,)``).
        alpha: Level of the decision p ≤ α.
        seed: Seed of the random masks.
        pooled: Clean held-out scores; when given, each row also reports the pooled decision's
            rate (``pooled_flag_rate``).
    """
    cal = (calibration if isinstance(calibration, MondrianCalibration)
           else MondrianCalibration.pooled(np.asarray(calibration)))
    base = normals.with_arrays(meta={**normals.meta, "wave": wave})
    out: dict[str, dict[str, Any]] = {}
    for name, variant in VARIANTS.items():
        b = base if variant is None else variant(base, np.random.default_rng(seed))
        s = score_torch(model, b).score
        st = coverage_strata(b.ivar, wave)
        p, level = cal.p_values(s, st, alpha)
        codes, counts = np.unique(st, return_counts=True)
        out[name] = {"n": len(b), "flag_rate": float(np.mean(p <= alpha)),
                     "median_score": float(np.median(s)),
                     "strata": {stratum_name(int(c)): int(k)
                                for c, k in zip(codes, counts, strict=True)},
                     "levels": level_counts(level)}
        if pooled is not None:
            out[name]["pooled_flag_rate"] = float(np.mean(p_values(pooled, s) <= alpha))
    ref = out["unmasked"]["flag_rate"]
    for row in out.values():
        row["ratio_to_unmasked"] = row["flag_rate"] / ref if ref > 0 else None
        row["within_2x"] = bool(row["flag_rate"] <= 2 * ref) if ref > 0 else \
            bool(row["flag_rate"] <= 2 * alpha)
    return out
