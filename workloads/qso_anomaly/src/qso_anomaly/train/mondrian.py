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

* coverage pattern: for each DESI camera (b, r, z, wavelength ranges :data:`~qso_anomaly.data.
  grid.DESI_ARMS`) the share of its grid pixels with ivar > 0, as a level: *full* (≥ 0.8),
  *partial* (0.2–0.8: an amplifier half, a block edge) or *absent* (< 0.2: a camera off); a
  camera the grid does not reach counts as absent. 27 patterns, ``pattern = Σ level_c · 3^c``;
* valid-pixel fraction of the whole grid, binned at :data:`FRACTION_EDGES` (7 bins from
  ``≥ 0.975`` down to ``< 0.5``): clean DESI coadds sit in the first bin; a camera off (30–37 %
  of the grid) lands near 0.65; contiguous blocks of 10–40 % spread over the middle ones.

``code = pattern · 7 + fraction_bin``; :func:`stratum_name` reads it, e.g. ``"br/0.50–0.65"``
(z absent) or ``"b½rz/0.85–0.925"`` (half of b masked). The first design (camera present or
not, 4 fraction bins) mixed a whole camera off with blocks of 30–40 % in one stratum and clean
spectra with lightly augmented copies in another; within such a mixed stratum the flag rate of
each kind drifts from α (measured: z camera off 1.35 %, unmasked 0.50 % at α = 1 %), so the
strata are now finer and the calibration copies structured (no random augmentation).

:class:`MondrianCalibration` keeps the calibration scores with their strata. A p-value uses the
spectrum's own stratum when that holds at least ``n_min(α) = ⌈1/α⌉ − 1`` scores (the smallest
set whose smallest p-value, 1/(n+1), reaches α), else the coarser group of the same coverage
pattern (all fraction bins), else the pooled set; the level used is returned per spectrum
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
from qso_anomaly.data.masks import band, camera, contiguous_blocks, masked, row_counts
from qso_anomaly.train.calibrate import conformal_threshold, p_values

#: Share of a camera's grid pixels with ivar > 0 from which it is *partial* / *full*.
CAMERA_LEVEL_EDGES: tuple[float, float] = (0.2, 0.8)
#: Per-camera coverage levels (index = level).
CAMERA_LEVELS: tuple[str, ...] = ("absent", "partial", "full")
CAMERAS: tuple[str, ...] = ("b", "r", "z")
N_PATTERNS = 3 ** len(CAMERAS)
#: Lower edges of the valid-pixel fraction bins, ascending (bin 0 is ≥ the last edge).
FRACTION_EDGES: tuple[float, ...] = (0.5, 0.65, 0.75, 0.85, 0.925, 0.975)
FRACTION_LABELS: tuple[str, ...] = ("≥0.975", "0.925–0.975", "0.85–0.925", "0.75–0.85",
                                    "0.65–0.75", "0.50–0.65", "<0.50")
N_FRACTION_BINS = len(FRACTION_EDGES) + 1
N_STRATA = N_PATTERNS * N_FRACTION_BINS
#: The stratum of a fully observed spectrum (b, r, z full; fraction ≥ 0.975).
UNMASKED = (N_PATTERNS - 1) * N_FRACTION_BINS
#: Levels of :meth:`MondrianCalibration.p_values`: own stratum, coverage pattern, pooled.
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
        Codes ``7 · pattern + fraction_bin``, shape ``(N,)`` int16 (see the module doc).

    Raises:
        ValueError: ``ivar`` is not 2-D with ``P`` columns.
    """
    iv = np.asarray(ivar)
    return observed_strata(np.isfinite(iv) & (iv > 0), wave)


def observed_strata(observed: NDArray[np.bool_], wave: NDArray[Any]) -> NDArray[np.int16]:
    """Coverage stratum code per spectrum from a map of observed pixels.

    The same codes as :func:`coverage_strata` for ``observed = isfinite(ivar) & (ivar > 0)``;
    a scorer that already knows which pixels are usable (mask off, finite flux and ivar,
    ivar > 0) passes that map and skips building a masked ivar copy. Counts run over the
    contiguous pixel range of each camera when ``wave`` is ascending (the model grids are),
    else over a boolean selection (same result, slower).

    Args:
        observed: Shape ``(N, P)`` bool, True where a pixel was observed.
        wave: Observed-frame wavelengths of the model grid, shape ``(P,)`` in Å.

    Returns:
        Codes, shape ``(N,)`` int16 (see the module doc).

    Raises:
        ValueError: ``observed`` is not 2-D with ``P`` columns.
    """
    good = np.asarray(observed, dtype=bool)
    w = np.asarray(wave, dtype=np.float64)
    if good.ndim != 2 or good.shape[1] != w.size:
        raise ValueError(f"pixel array has shape {good.shape}, expected (N, {w.size}) on the "
                         "grid")
    n = good.shape[0]
    if w.size == 0:
        return np.zeros(n, np.int16)
    ascending = bool(np.all(w[1:] >= w[:-1]))
    pattern = np.zeros(n, np.int16)
    for i, arm in enumerate(CAMERAS):
        lo, hi = DESI_ARMS[arm]
        if ascending:
            a, b = int(np.searchsorted(w, lo, "left")), int(np.searchsorted(w, hi, "right"))
            cols: Any = slice(a, b)
            width = b - a
        else:
            cols = np.flatnonzero((w >= lo) & (w <= hi))
            width = cols.size
        share = row_counts(good[:, cols]) / width if width else np.zeros(n)
        level = np.searchsorted(np.asarray(CAMERA_LEVEL_EDGES), share, side="right")
        pattern += (level * 3**i).astype(np.int16)
    frac = row_counts(good) / w.size
    fbin = (N_FRACTION_BINS - 1) - np.searchsorted(np.asarray(FRACTION_EDGES), frac,
                                                   side="right")
    return (pattern * N_FRACTION_BINS + fbin).astype(np.int16)


def camera_group(codes: NDArray[Any]) -> NDArray[np.int16]:
    """Coverage pattern (0–26) of stratum codes (the coarser Mondrian group)."""
    return (np.asarray(codes) // N_FRACTION_BINS).astype(np.int16)


def cameras_name(pattern: int) -> str:
    """``"brz"`` (all full), ``"b½rz"`` (b partial), ``"br"`` (z absent), … or ``"none"``."""
    out = ""
    for i, arm in enumerate(CAMERAS):
        level = (int(pattern) // 3**i) % 3
        out += {0: "", 1: f"{arm}½", 2: arm}[level]
    return out or "none"


def stratum_name(code: int) -> str:
    """Readable name of a stratum code, e.g. ``"brz/≥0.975"``; ``"-"`` for :data:`NO_STRATUM`."""
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
                "camera_level_edges": list(CAMERA_LEVEL_EDGES),
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


def copy_names() -> list[str]:
    """Names of the copies :func:`masking_copies` yields, in order."""
    return ([f"{arm} camera off" for arm in CAMERAS]
            + [f"{arm} {half} half off" for arm in CAMERAS for half in ("blue", "red")]
            + [f"{round(f * 100)}% block" for f in BLOCK_FRACTIONS])


def masking_copies(flux: NDArray[np.float32], ivar: NDArray[np.float32],
                   wave: NDArray[Any], seed: int
                   ) -> Iterator[tuple[str, NDArray[np.float32], NDArray[np.float32]]]:
    """Deterministic instrument-state copies of calibration spectra: ``(name, flux, ivar)``.

    One copy per camera off (b, r, z: ivar = 0 over the arm), one per half camera off (the
    blue or red half of an arm's wavelength range: a CCD amplifier's half of the DESI
    spectrograph camera), and one per contiguous block of :data:`BLOCK_FRACTIONS` of the grid
    at a random start per spectrum (:mod:`qso_anomaly.data.masks`, the same states
    :mod:`qso_anomaly.bench.robustness` measures). Masked pixels get flux 0 and ivar 0. The
    same seed gives the same copies. The training augmentation's random mixtures are not
    used: mixed into a stratum they pull its threshold away from the structured states that
    fill it (module doc).

    Args:
        flux: Flux ``(N, P)`` in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
        ivar: ivar ``(N, P)`` in flux⁻².
        wave: Grid wavelengths ``(P,)`` in Å.
        seed: Seed of the block starts.
    """
    n, p = ivar.shape

    def copy(name: str, sel: NDArray[np.bool_]
             ) -> tuple[str, NDArray[np.float32], NDArray[np.float32]]:
        return (name, *masked(flux, ivar, sel))

    for arm in CAMERAS:
        yield copy(f"{arm} camera off", camera(wave, arm))
    for arm in CAMERAS:
        lo, hi = DESI_ARMS[arm]
        mid = 0.5 * (lo + hi)
        for half, (a, b) in (("blue", (lo, mid)), ("red", (mid, hi))):
            yield copy(f"{arm} {half} half off", band(wave, a, b))
    for k, frac in enumerate(BLOCK_FRACTIONS):
        yield copy(f"{round(frac * 100)}% block",
                   contiguous_blocks(n, p, frac, np.random.default_rng([seed, 2, k])))
