"""Rest-frame vacuum wavelengths (Å) of quasar lines, line windows, continuum anchors, sky lines."""

from __future__ import annotations

LYA = 1215.67
NV = 1240.81
SIIV = 1396.76
CIV = 1549.06
CIII = 1908.73
ALIII = 1857.40
MGII = 2798.75
HBETA = 4862.68
OIII = 5008.24
HALPHA = 6564.61
C_KMS = 299_792.458

#: broad-line windows (rest Å) used to split a spectrum into continuum + lines.
LINE_WINDOWS: dict[str, tuple[float, float]] = {
    "lya_nv": (1160.0, 1290.0),
    "siiv": (1360.0, 1440.0),
    "civ": (1480.0, 1620.0),
    "ciii": (1870.0, 1960.0),
    "mgii": (2700.0, 2900.0),
    "hbeta": (4760.0, 4940.0),
    "oiii": (4945.0, 5030.0),
    "halpha": (6400.0, 6750.0),
}
LINE_CENTRES: dict[str, float] = {
    "lya_nv": LYA,
    "siiv": SIIV,
    "civ": CIV,
    "ciii": CIII,
    "mgii": MGII,
    "hbeta": HBETA,
    "oiii": OIII,
    "halpha": HALPHA,
}
#: FeII pseudo-continuum regions (UV and optical).
FEII_WINDOWS: tuple[tuple[float, float], ...] = (
    (2250.0, 2650.0), (2900.0, 3050.0), (4430.0, 4700.0), (5150.0, 5350.0),
)
#: line-free continuum anchors of the composite (rest Å; ±10 Å medians).
CONTINUUM_ANCHORS: tuple[float, ...] = (
    1285.0, 1450.0, 1690.0, 2200.0, 2670.0, 3030.0, 3680.0, 4200.0, 5100.0, 5600.0, 6200.0,
    7000.0, 8000.0,
)
#: strong night-sky emission lines (vacuum Å, approximate): OI, NaD, OI, and bright OH lines.
SKY_LINES: tuple[float, ...] = (
    5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 6865.0, 6925.0, 7277.4, 7318.2, 7343.0, 7371.5,
    7403.0, 7752.5, 7796.0, 7823.0, 7916.0, 7966.0, 8001.0, 8346.7, 8401.3, 8432.4, 8467.5,
    8829.5, 8888.0, 8922.0, 8945.0, 9378.0, 9442.0, 9793.0,
)
