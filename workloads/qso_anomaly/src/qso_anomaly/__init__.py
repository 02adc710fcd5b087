"""qso_anomaly: anomalous-quasar detection on DESI-like spectra (the skyrig workload package)."""

__version__ = "0.3.0"

__all__ = ["__version__"]
