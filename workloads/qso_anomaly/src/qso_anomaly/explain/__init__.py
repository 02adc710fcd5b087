"""Explanations of anomaly scores: Integrated Gradients, windowed occlusion, faithfulness metrics.

The functions here work on any differentiable score function ``f(flux) -> (N,)`` and any
reconstruction (the baseline); :mod:`qso_anomaly.explain.runner` wires them to the trained model.
"""

from qso_anomaly.explain.faithfulness import (
    Localisation,
    PerturbationCurves,
    RandomisationCheck,
    localisation,
    localisation_batch,
    perturbation_curves,
    randomisation_check,
    randomise_jax_params,
    randomise_torch_module,
    summarise_localisation,
)
from qso_anomaly.explain.integrated_gradients import (
    Attribution,
    integrated_gradients_jax,
    integrated_gradients_torch,
    quadrature,
    valid_pixels,
)
from qso_anomaly.explain.occlusion import occlusion

__all__ = [
    "Attribution",
    "Localisation",
    "PerturbationCurves",
    "RandomisationCheck",
    "integrated_gradients_jax",
    "integrated_gradients_torch",
    "localisation",
    "localisation_batch",
    "occlusion",
    "perturbation_curves",
    "quadrature",
    "randomisation_check",
    "randomise_jax_params",
    "randomise_torch_module",
    "summarise_localisation",
    "valid_pixels",
]
