"""Anomaly classes injected by the synthetic survey (see the injection recipes in synth/inject)."""

from __future__ import annotations

from dataclasses import dataclass

NORMAL = "normal"


@dataclass(frozen=True)
class AnomalyClass:
    name: str
    kind: str  # "physical" | "contaminant" | "artefact"
    z_range: tuple[float, float]  # QSO redshifts at which the feature lands on 3600–9824 Å
    description: str


CLASS_INFO: dict[str, AnomalyClass] = {
    c.name: c
    for c in (
        AnomalyClass("hibal", "physical", (1.6, 4.0),
                     "high-ionisation BAL: troughs blueward of CIV, SiIV, NV, Lyα"),
        AnomalyClass("lobal", "physical", (0.55, 2.3),
                     "low-ionisation BAL: HiBAL troughs plus MgII and AlIII troughs"),
        AnomalyClass("felobal", "physical", (0.6, 2.3),
                     "FeLoBAL: many FeII/FeIII troughs 2300–2800 Å, MgII trough, "
                     "depressed continuum blueward of 2800 Å"),
        AnomalyClass("reddened", "physical", (0.05, 4.0),
                     "SMC-like extinction at the QSO redshift, E(B-V) 0.1–1.0"),
        AnomalyClass("double_peaked", "physical", (0.05, 1.0),
                     "broad Hα/Hβ/MgII replaced by two peaks at ±1,500–5,000 km/s"),
        AnomalyClass("weak_line", "physical", (0.05, 4.0),
                     "weak-line QSO: broad-line equivalent widths scaled to 5–25%"),
        AnomalyClass("extreme_lines", "physical", (0.05, 4.0),
                     "extreme line ratios: CIV peaker, SiIV≈CIV, [OIII]/Hβ ×5–10 or strong FeII"),
        AnomalyClass("dla", "physical", (2.2, 4.0),
                     "damped Lyα absorber (Voigt, log N_HI 20.3–21.7) at z_abs < z_QSO"),
        AnomalyClass("star", "contaminant", (0.05, 4.0),
                     "a star (redrock F/K/M/WD archetype) catalogued as a QSO at the given z"),
        AnomalyClass("wrong_z", "contaminant", (0.3, 3.5),
                     "a QSO catalogued at the wrong redshift (MgII↔CIV/CIII] confusion or random)"),
        AnomalyClass("sky_residual", "artefact", (0.05, 4.0),
                     "sky-subtraction residuals at OI 5579/6302, NaD and OH lines, not in ivar"),
        AnomalyClass("arm_step", "artefact", (0.05, 4.0),
                     "flux step of 15–50% at the b/r (5780 Å) or r/z (7570 Å) arm join"),
    )
}

#: Names of the injected anomaly classes, in a fixed order.
ANOMALY_CLASSES: tuple[str, ...] = tuple(CLASS_INFO)

#: Every label value that appears in a batch's ``label`` column.
ALL_LABELS: tuple[str, ...] = (NORMAL, *ANOMALY_CLASSES)
