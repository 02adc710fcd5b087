"""The data card of a released model version (``release/data_card.json``, NIST AI RMF MAP 2.3).

Gebru et al. 2021 ("Datasheets for Datasets", CACM 64(12)) style: where the training and
evaluation data come from (provenance, with the sha256 of every file, the generator and its
seeds), how it is composed, and the known biases of the survey the model is meant for (DESI
quasar targeting, redrock redshifts, fibre assignment) and of the synthetic survey it is
trained on. Facts about DESI and the DR1 QSO corpus follow the project reference
``spectra-and-models.md`` (§1, §2, §4, §5); statements marked "(unverified)" there stay marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qso_anomaly.registry.mlflow_registry import RegisteredVersion

#: Citation and licence of every template file the synthetic survey uses.
TEMPLATE_SOURCES: dict[str, dict[str, str]] = {
    "vandenberk2001_composite_qso.mrt.txt": {
        "what": "SDSS median composite quasar spectrum (800.5–8554.5 Å rest, vacuum, 1 Å)",
        "citation": "Vanden Berk et al. 2001, AJ 122, 549",
        "terms": "published journal data; cite the paper"},
    "rrtemplate-QSO-LOZ-v1.1.fits": {
        "what": "redrock QSO PCA basis, z < 1.7 (from 103,196 SDSS DR16Q quasars)",
        "citation": "DESI Collaboration, desihub/redrock-templates @ 110d448e",
        "terms": "BSD-3-Clause"},
    "rrtemplate-QSO-HIZ-v1.1.fits": {
        "what": "redrock QSO PCA basis, z > 1.3 (from 138,217 SDSS DR16Q quasars; Lyα-forest "
                "correction)",
        "citation": "DESI Collaboration, desihub/redrock-templates @ 110d448e",
        "terms": "BSD-3-Clause"},
    "rrtemplate-STAR-F-v0.1.fits": {"what": "redrock stellar archetypes, F",
                                    "citation": "DESI Collaboration, desihub/redrock-templates",
                                    "terms": "BSD-3-Clause"},
    "rrtemplate-STAR-K-v0.1.fits": {"what": "redrock stellar archetypes, K",
                                    "citation": "DESI Collaboration, desihub/redrock-templates",
                                    "terms": "BSD-3-Clause"},
    "rrtemplate-STAR-M-v0.1.fits": {"what": "redrock stellar archetypes, M",
                                    "citation": "DESI Collaboration, desihub/redrock-templates",
                                    "terms": "BSD-3-Clause"},
    "rrtemplate-STAR-WD-v0.1.fits": {"what": "redrock stellar archetypes, white dwarf",
                                     "citation": "DESI Collaboration, desihub/redrock-templates",
                                     "terms": "BSD-3-Clause"},
}

#: Known biases of the data the model sees and of the survey it is meant for, with sources.
KNOWN_BIASES: tuple[dict[str, str], ...] = (
    {"name": "DESI QSO target selection",
     "description": "DESI selects quasar targets from optical and WISE infrared photometry "
                    "(colour cuts / a random forest on grzW1W2), so blue, unobscured, "
                    "point-like quasars are favoured; reddened and host-dominated quasars and "
                    "quasars whose colours cross the stellar locus are under-represented, and "
                    "completeness depends on magnitude and redshift.",
     "effect": "classes the targeting misses (e.g. heavily reddened quasars) are rarer in real "
               "DESI data than in qso-inject-v1, and unusual colours never reach the model",
     "source": "Chaussidon et al. 2023, ApJ 944, 107, DESI QSO target selection "
               "(unverified: not in the project reference)"},
    {"name": "Redrock redshift failures and the ZWARN cut",
     "description": "Real-data input keeps only SPECTYPE == QSO and ZWARN == 0 (the data "
                    "policy); in the DR1 QSO corpus this cut drops 33.5 % of ≈1.55 M QSOs. "
                    "Redshift failures and line confusions (e.g. MgII ↔ CIV) concentrate where "
                    "few broad lines fall in the window, around z ≈ 1.5–2, and in low-S/N and "
                    "unusual spectra (unverified); masking BAL troughs shifts redrock redshifts by 243 km/s on "
                    "average.",
     "effect": "the most unusual spectra are the most likely to be removed before scoring; "
               "wrong redshifts put rest-frame features in the wrong place and raise the score",
     "source": "spectra-and-models.md §2 (DR1 corpus audit: 33.5 % dropped by ZWARN), §5 "
               "(wrong_z class), Filbert et al. 2023 (arXiv 2309.03434); redrock QSO "
               "templates v1.1 correct a redshift bias (§4)"},
    {"name": "Fibre assignment incompleteness",
     "description": "5,000 fibres per pointing and a varying number of passes leave some "
                    "targets unobserved, depending on sky position and target density.",
     "effect": "spatially varying completeness; a population statistic of flagged spectra is "
               "not a rate on the sky without a completeness correction",
     "source": "spectra-and-models.md §1.2 (5,000 fibres); DESI DR1 documentation "
               "(unverified)"},
    {"name": "Broad absorption line quasars",
     "description": "12–16 % of real quasars show broad absorption lines; qso-inject-v1 "
                    "treats BAL troughs as anomalies (hibal, lobal, felobal) and its normal "
                    "quasars have none.",
     "effect": "on real data every BAL quasar scores as anomalous: flag rates are inflated "
               "unless BALs are excluded (BAL_PROB in the DR1 AGN/QSO VAC) or accepted",
     "source": "Ennesser et al. 2022 (arXiv 2111.09439); spectra-and-models.md §1.4, §5"},
    {"name": "Synthetic training and evaluation data",
     "description": "Normal quasars are the Vanden Berk composite plus random combinations of "
                    "four redrock QSO eigenvectors (5 % rms residual on the composite), a "
                    "random continuum slope and a stochastic Lyα forest; noise follows an "
                    "arm-dependent throughput with sky-line spikes; anomalies are injection "
                    "recipes with their own rates. No host-galaxy light, no real "
                    "sky-subtraction or calibration residual patterns, no resolution matrix.",
     "effect": "metrics measure separation of injected recipes from template quasars drawn "
               "by the same generator (evaluation uses seed + 1): optimistic for real sky; "
               "real top-N lists are dominated by artefacts",
     "source": "qso_anomaly.data.synth; spectra-and-models.md §4 (fit check), §5, §6"},
    {"name": "Redshift and S/N distribution",
     "description": "Redshift and S/N are drawn from the DR1 QSO corpus quantiles (median z "
                    "1.71, median S/N 2.33 per 0.8 Å pixel); the model's trained range is "
                    "z 0.05–4.5.",
     "effect": "quasars outside the trained range are rejected (redshift_out_of_range), and "
               "rare high-z or high-S/N spectra are sparsely represented",
     "source": "spectra-and-models.md §2"},
)


def build_data_card(rv: RegisteredVersion, lineage: Mapping[str, Any]) -> dict[str, Any]:
    """The data card of a model version from its data lineage.

    Args:
        rv: The registered version the card belongs to (``model_version`` is its version, so
            a card copied to another release reads as stale).
        lineage: :func:`qso_anomaly.registry.steps.data_lineage` of the training data, or
            ``{}`` when unknown (the card then has no provenance and no data version, and
            the governance check reports MAP 2.3 missing).

    Returns:
        A JSON-ready dict: ``model``, ``model_version``, ``provenance`` (generator, seeds,
        files with sha256, templates with citation and licence), ``composition``,
        ``known_biases`` (name, description, effect, source) and ``lineage`` (with
        ``data_version``).
    """
    lin = dict(lineage)
    templates = dict(lin.get("templates_sha256") or {})
    provenance: dict[str, Any] = {}
    if lin:
        provenance = {
            "kind": "synthetic",
            "benchmark": lin.get("benchmark"),
            "generator": lin.get("generator"),
            "generator_seed": lin.get("generator_seed"),
            "eval_generator_seed": lin.get("eval_generator_seed"),
            "data_files_sha256": dict(lin.get("data_sha256") or {}),
            "templates": [{"file": name, "sha256": sha,
                           **TEMPLATE_SOURCES.get(name, {"citation": "see PROVENANCE.md"})}
                          for name, sha in sorted(templates.items())],
            "distributions_from": "DESI DR1 QSO corpus audit (radioastronomyio/"
                                  "desi-qso-anomaly-detection, spectral manifest audit): "
                                  "redshift and S/N quantiles, masked-pixel fractions",
            "spectral_format": "DESI coadd b/r/z arms, vacuum wavelengths in Å, flux in "
                               "1e-17 erg s⁻¹ cm⁻² Å⁻¹, rebinned by inverse variance onto the "
                               "model grid",
        }
    composition = {k: lin[k] for k in ("n_train_spectra", "train_anomaly_fraction",
                                       "eval_anomaly_fraction", "grid") if k in lin}
    return {
        "model": rv.name,
        "model_version": rv.version,
        "provenance": provenance,
        "composition": composition,
        "known_biases": [dict(b) for b in KNOWN_BIASES],
        "lineage": lin,
    }
