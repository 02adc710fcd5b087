"""Group-conditional (Mondrian) conformal calibration by observed coverage (design issue 12).

The anomaly score (log χ²/dof + latent density terms) shifts with how much of a spectrum was
observed, so one pooled calibration set of mostly unmasked normals flags masked normals far
more often than α. Mondrian conformal prediction (Vovk, Gammerman & Shafer 2005, "Algorithmic
Learning in a Random World", §4.5; Vovk 2012, "Conditional validity of inductive conformal
predictors", PMLR 25; Bates et al. 2023, "Testing for outliers with conformal p-values", Ann.
Stat. 51) calibrates each group ("category") on its own: the p-value of a spectrum is computed
against the calibration scores of its own group, which gives ``P(p ≤ α | group) ≤ α`` for
normals exchangeable with the group's calibration set. The group must be a function of what was
observed only, never of the flux or the score: here the *coverage stratum*.

Coverage stratum (:func:`coverage_strata`), from ivar on the model's observed-frame grid:

* camera set: which DESI cameras (b, r, z, wavelength ranges :data:`~qso_anomaly.data.grid.
  DESI_ARMS`) have at least :data:`CAMERA_MIN_FRACTION` (50 %) of their grid pixels with
  ivar > 0 (bits b = 1, r = 2, z = 4; a camera the grid does not reach counts as absent);
* valid-pixel fraction of the whole grid, binned at :data:`FRACTION_EDGES`: ``≥ 0.95``,
  ``0.85–0.95``, ``0.70–0.85``, ``< 0.70`` (bins 0–3). Clean DESI coadds sit in the first bin; a
  camera off (30–37 % of the grid) lands in the last; contiguous blocks of 10–40 % spread over
  the middle ones.

``code = 4 · camera_bits + fraction_bin`` (0–31); :func:`stratum_name` reads it, e.g.
``"br/<0.70"``.

:class:`MondrianCalibration` keeps the calibration scores with their strata. A p-value uses the
spectrum's own stratum when that holds at least ``n_min(α) = ⌈1/α⌉ − 1`` scores (the smallest
set whose smallest p-value, 1/(n+1), reaches α), else the coarser group of the same camera set
(all fraction bins), else the pooled set; the level used is returned per spectrum
(:data:`LEVELS`). A model saved before strata existed loads as pooled-only, which is the
previous split-conformal decision.

Calibration scores come from held-out normal spectra scored clean and under deterministic
masking copies (:func:`masking_copies`). Copies of one spectrum in the same stratum are not
exchangeable with each other, so the guarantee is approximate where a stratum is filled by
several copies of the same spectra; the robustness benchmark measures the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qso_anomaly.data.grid import DESI_ARMS
from qso_anomaly.train.calibrate import conformal_threshold, p_values

#: Share of a camera's grid pixels with ivar > 0 above which the camera counts as observed.
CAMERA_MIN_FRACTION = 0.5
#: Lower edges of the valid-pixel fraction bins 2, 1, 0 (bin 3 is below the first edge).
FRACTION_EDGES: tuple[float, float, float] = (0.70, 0.85, 0.95)
FRACTION_LABELS: tuple[str, ...] = ("≥0.95", "0.85–0.95", "0.70–0.85", "<0.70")
CAMERA_BITS: dict[str, int] = {"b": 1, "r": 2, "z": 4}
N_FRACTION_BINS = 4
N_STRATA = 8 * N_FRACTION_BINS
#: The stratum of a fully observed spectrum (cameras b, r, z; fraction ≥ 0.95).
UNMASKED = 7 * N_FRACTION_BINS
#: Levels of :meth:`MondrianCalibration.p_values`: own stratum, camera set, pooled.
LEVELS: tuple[str, ...] = ("stratum", "cameras", "pooled")
#: Stratum code of a row that was not scored / has no stratum (decided against the pooled set).
NO_STRATUM = -1


def coverage_strata(ivar: NDArray[Any], wave: NDArray[Any]) -> NDArray[np.int16]:
    """Coverage stratum code per spectrum from what was observed (ivar) only.

    Args:
        ivar: Inverse variances, shape ``(N, P)`` in flux⁻²; a pixel counts as observed when
            its ivar is finite and > 0 (masked pixels must already have ivar 0).
        wave: Observed-frame wavelengths of the model grid, shape ``(P,)`` in Å.

    Returns:
        Codes ``4 · camera_bits + fraction_bin``, shape ``(N,)`` int16 (see the module doc).

    Raises:
        ValueError: ``ivar`` is not 2-D with ``P`` columns.
    """
    iv = np.asarray(ivar)
    w = np.asarray(wave, dtype=np.float64)
    if iv.ndim != 2 or iv.shape[1] != w.size:
        raise ValueError(f"ivar has shape {iv.shape}, expected (N, {w.size}) on the grid")
    good = np.isfinite(iv) & (iv > 0)
    n = iv.shape[0]
    if w.size == 0:
        return np.zeros(n, np.int16)
    bits = np.zeros(n, np.int16)
    for arm, (lo, hi) in DESI_ARMS.items():
        sel = (w >= lo) & (w <= hi)
        if sel.any():
            on = good[:, sel].mean(axis=1) >= CAMERA_MIN_FRACTION
            bits |= np.where(on, CAMERA_BITS[arm], 0).astype(np.int16)
    frac = good.mean(axis=1)
    fbin = (N_FRACTION_BINS - 1) - np.searchsorted(np.asarray(FRACTION_EDGES), frac,
                                                   side="right")
    return (bits * N_FRACTION_BINS + fbin).astype(np.int16)


def camera_group(codes: NDArray[Any]) -> NDArray[np.int16]:
    """Camera-set bits (0–7) of stratum codes (the coarser Mondrian group)."""
    return (np.asarray(codes) // N_FRACTION_BINS).astype(np.int16)


def cameras_name(bits: int) -> str:
    """``"brz"``, ``"br"``, … or ``"none"`` for camera bits 0–7."""
    return "".join(a for a, b in CAMERA_BITS.items() if bits & b) or "none"


def stratum_name(code: int) -> str:
    """Readable name of a stratum code, e.g. ``"brz/≥0.95"``; ``"-"`` for :data:`NO_STRATUM`."""
    c = int(code)
    if c < 0:
        return "-"
    return f"{cameras_name(c // N_FRACTION_BINS)}/{FRACTION_LABELS[c % N_FRACTION_BINS]}"


def n_min(alpha: float) -> int:
    """Smallest calibration set that can reach p ≤ α: ⌈1/α⌉ − 1 (99 at α = 0.01)."""
    return max(1, math.ceil(1.0 / alpha - 1e-9) - 1)


@dataclass
class MondrianCalibration:
    """Calibration scores with their coverage strata.

    Attributes:
        scores: Calibration scores, shape ``(M,)`` (non-finite ones are dropped).
        strata: Their stratum codes, shape ``(M,)``; ``None`` for a pooled-only calibration
            (a model saved before strata existed).
    """

    scores: NDArray[np.float64]
    strata: NDArray[np.int16] | None = None
    _sets: dict[tuple[str, int], NDArray[np.float64]] = field(default_factory=dict, repr=False,
                                                              compare=False)

    def __post_init__(self) -> None:
        s = np.asarray(self.scores, dtype=np.float64).ravel()
        keep = np.isfinite(s)
        if self.strata is not None:
            st = np.asarray(self.strata, dtype=np.int16).ravel()
            if st.shape != s.shape:
                raise ValueError(f"strata {st.shape} and scores {s.shape} differ in length")
            self.strata = st[keep]
        self.scores = s[keep]

    @classmethod
    def pooled(cls, scores: NDArray[Any]) -> MondrianCalibration:
        """A pooled-only calibration (every p-value against all ``scores``)."""
        return cls(np.asarray(scores, dtype=np.float64), None)

    @property
    def stratified(self) -> bool:
        return self.strata is not None

    def _set(self, level: str, key: int) -> NDArray[np.float64]:
        got = self._sets.get((level, key))
        if got is None:
            if level == "pooled" or self.strata is None:
                got = np.sort(self.scores)
            elif level == "stratum":
                got = np.sort(self.scores[self.strata == key])
            else:
                got = np.sort(self.scores[camera_group(self.strata) == key])
            self._sets[(level, key)] = got
        return got

    def counts(self) -> dict[int, int]:
        """Calibration scores per stratum code (empty when pooled-only)."""
        if self.strata is None:
            return {}
        codes, n = np.unique(self.strata, return_counts=True)
        return {int(c): int(k) for c, k in zip(codes, n, strict=True)}

    def level_of(self, code: int, alpha: float) -> tuple[int, NDArray[np.float64]]:
        """(level index into :data:`LEVELS`, sorted calibration set) for stratum ``code``."""
        need = n_min(alpha)
        if self.strata is not None and code >= 0:
            own = self._set("stratum", code)
            if own.size >= need:
                return 0, own
            group = self._set("cameras", code // N_FRACTION_BINS)
            if group.size >= need:
                return 1, group
        return 2, self._set("pooled", 0)

    def p_values(self, scores: NDArray[Any], strata: NDArray[Any] | None, alpha: float
                 ) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
        """Conformal p-values of ``scores`` against their own stratum (with fallback).

        Args:
            scores: Scores, shape ``(N,)`` (NaN stays NaN).
            strata: Their stratum codes, shape ``(N,)``, or ``None`` (every row pooled);
                :data:`NO_STRATUM` rows are pooled.
            alpha: The level the decision is made at; it sets ``n_min`` of the fallback.

        Returns:
            ``(p, level)``: p-values ``(N,)`` and the level used per row ``(N,)`` int8 (index
            into :data:`LEVELS`).
        """
        s = np.asarray(scores, dtype=np.float64).ravel()
        st = (np.full(s.size, NO_STRATUM, np.int16) if strata is None
              else np.asarray(strata).astype(np.int16).ravel())
        if st.shape != s.shape:
            raise ValueError(f"strata {st.shape} and scores {s.shape} differ in length")
        p = np.full(s.size, np.nan)
        level = np.full(s.size, 2, np.int8)
        for code in np.unique(st):
            rows = st == code
            lv, cal = self.level_of(int(code), alpha)
            p[rows] = p_values(cal, s[rows])
            level[rows] = lv
        return p, level

    def flags(self, scores: NDArray[Any], strata: NDArray[Any] | None, alpha: float
              ) -> NDArray[np.bool_]:
        """``p ≤ α`` per row (NaN scores are not flagged)."""
        p, _ = self.p_values(scores, strata, alpha)
        return np.asarray(np.nan_to_num(p, nan=2.0) <= alpha)

    def thresholds(self, alpha: float) -> list[dict[str, Any]]:
        """Per stratum present in the calibration set: code, name, n, the level a spectrum of
        that stratum is decided at, and the score threshold t (flag ⇔ score > t)."""
        out = []
        for code, n in sorted(self.counts().items()):
            lv, cal = self.level_of(code, alpha)
            out.append({"code": code, "name": stratum_name(code), "n": n, "level": LEVELS[lv],
                        "n_used": int(cal.size), "threshold": conformal_threshold(cal, alpha)})
        return out

    def summary(self, alpha: float) -> dict[str, Any]:
        """JSON-able description for ``metrics["calibration"]`` / the model card."""
        return {"method": "mondrian-conformal" if self.stratified else "split-conformal",
                "alpha": alpha, "n_min": n_min(alpha), "n_pooled": int(self.scores.size),
                "pooled_threshold": conformal_threshold(self.scores, alpha),
                "fraction_edges": list(FRACTION_EDGES),
                "camera_min_fraction": CAMERA_MIN_FRACTION,
                "strata": self.thresholds(alpha)}

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """Arrays for ``np.savez`` (``strata`` absent when pooled-only)."""
        out: dict[str, NDArray[Any]] = {"scores": self.scores.astype(np.float32)}
        if self.strata is not None:
            out["strata"] = self.strata.astype(np.int16)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[Any]]) -> MondrianCalibration:
        return cls(np.asarray(arrays["scores"], dtype=np.float64),
                   None if "strata" not in arrays else np.asarray(arrays["strata"], np.int16))


def level_counts(level: NDArray[Any]) -> dict[str, int]:
    """Rows decided at each level, by name (:data:`LEVELS`)."""
    lv = np.asarray(level)
    return {name: int(np.sum(lv == i)) for i, name in enumerate(LEVELS)}


#: Contiguous-block lengths (share of the grid) of the calibration copies.
BLOCK_FRACTIONS: tuple[float, ...] = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40)
#: Copies with the training augmentation (:func:`qso_anomaly.train.augment.augment_masks`).
N_AUGMENT_COPIES = 2


def copy_names() -> list[str]:
    """Names of the copies :func:`masking_copies` yields, in order."""
    return ([f"{arm} camera off" for arm in DESI_ARMS]
            + [f"{round(f * 100)}% block" for f in BLOCK_FRACTIONS]
            + [f"augmentation {k + 1}" for k in range(N_AUGMENT_COPIES)])


def masking_copies(flux: NDArray[np.float32], ivar: NDArray[np.float32],
                   wave: NDArray[Any], seed: int
                   ) -> Iterator[tuple[str, NDArray[np.float32], NDArray[np.float32]]]:
    """Deterministic instrument-state copies of calibration spectra: ``(name, flux, ivar)``.

    One copy per camera off (b, r, z: ivar = 0 over the arm), one per contiguous block of
    :data:`BLOCK_FRACTIONS` of the grid at a random start per spectrum, and
    :data:`N_AUGMENT_COPIES` copies with the training augmentation (every row masked). Masked
    pixels get flux 0 and ivar 0, as in :mod:`qso_anomaly.bench.robustness`. The same seed
    gives the same copies.

    Args:
        flux: Flux ``(N, P)`` in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: ivar ``(N, P)`` in flux⁻².
        wave: Grid wavelengths ``(P,)`` in Å.
        seed: Seed of the block starts and the augmentation.
    """
    from qso_anomaly.train.augment import augment_masks

    n, p = ivar.shape
    w = np.asarray(wave)
    for arm, (lo, hi) in DESI_ARMS.items():
        sel = np.broadcast_to((w >= lo) & (w <= hi), ivar.shape)
        yield (f"{arm} camera off", np.where(sel, 0.0, flux).astype(np.float32),
               np.where(sel, 0.0, ivar).astype(np.float32))
    cols = np.arange(p)[None, :]
    for k, frac in enumerate(BLOCK_FRACTIONS):
        rng = np.random.default_rng([seed, 2, k])
        length = int(frac * p)
        start = rng.integers(0, max(1, p - length), size=n)[:, None]
        sel = (cols >= start) & (cols < start + length)
        yield (f"{round(frac * 100)}% block", np.where(sel, 0.0, flux).astype(np.float32),
               np.where(sel, 0.0, ivar).astype(np.float32))
    for k in range(N_AUGMENT_COPIES):
        fa, ia = augment_masks(flux, ivar, w, np.random.default_rng([seed, 3, k]), 1.0)
        yield f"augmentation {k + 1}", fa, ia
