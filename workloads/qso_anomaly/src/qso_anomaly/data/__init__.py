"""Data layer: wavelength grids, spectra batches, templates, the synthetic survey, I/O."""

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.data.classes import ANOMALY_CLASSES
from qso_anomaly.data.grid import WavelengthGrid

__all__ = ["ANOMALY_CLASSES", "SpectraBatch", "WavelengthGrid"]
