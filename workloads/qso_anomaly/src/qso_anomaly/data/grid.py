"""Observed-frame wavelength grids. The grid is configuration, never a constant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qso_anomaly.errors import DataError

#: DESI arm ranges in Å (desispec extraction): b, r, z at 0.8 Å.
DESI_ARMS: dict[str, tuple[float, float]] = {
    "b": (3600.0, 5800.0),
    "r": (5760.0, 7620.0),
    "z": (7520.0, 9824.0),
}
#: Overlap regions where two arms are coadded (the "arm joins").
ARM_JOINS: tuple[tuple[float, float], ...] = ((5760.0, 5800.0), (7520.0, 7620.0))


@dataclass(frozen=True)
class WavelengthGrid:
    """A uniform observed-frame wavelength grid (vacuum Å), ``start`` to ``stop`` inclusive."""

    start: float = 3600.0
    stop: float = 9824.0
    step: float = 0.8

    def __post_init__(self) -> None:
        if not (self.step > 0 and self.stop > self.start):
            raise DataError(
                f"invalid wavelength grid start={self.start} stop={self.stop} step={self.step}",
                hint="use start < stop and step > 0 (Å)",
            )

    @property
    def npix(self) -> int:
        return round((self.stop - self.start) / self.step) + 1

    @property
    def wave(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.npix, dtype=np.float64)

    @classmethod
    def desi_edr(cls) -> WavelengthGrid:
        """Merged b+r+z grid of DESI EDR / spender: 3600–9824 Å at 0.8 Å, 7,781 px."""
        return cls(3600.0, 9824.0, 0.8)

    @classmethod
    def desi_dr1(cls) -> WavelengthGrid:
        """Merged grid of the DR1 QSO corpus (z arm ends at 9799.2 Å): 7,750 px."""
        return cls(3600.0, 9799.2, 0.8)

    def downsample(self, factor: int) -> WavelengthGrid:
        """Every ``factor``-th pixel of this grid (same start; the stop is the last kept pixel)."""
        if factor < 1:
            raise DataError(f"downsample factor must be >= 1, got {factor}")
        n = (self.npix - 1) // factor + 1
        step = self.step * factor
        return WavelengthGrid(self.start, round(self.start + (n - 1) * step, 6), round(step, 6))

    def index_of(self, wave: np.ndarray, tol: float = 1e-3) -> np.ndarray:
        """Grid index of each wavelength, or -1 where it is not on this grid."""
        pos = (np.asarray(wave, dtype=np.float64) - self.start) / self.step
        idx = np.rint(pos).astype(np.int64)
        ok = (np.abs(pos - idx) * self.step <= tol) & (idx >= 0) & (idx < self.npix)
        return np.where(ok, idx, -1)

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop, "step": self.step, "npix": self.npix}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WavelengthGrid:
        return cls(float(d["start"]), float(d["stop"]), float(d["step"]))
