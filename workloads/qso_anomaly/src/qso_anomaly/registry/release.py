"""The release step: evidence → gates → champion promotion → model card, all logged to MLflow.

Files written to the release directory (reference style-governance §B3):
``evidence.json`` (eval report, with the baselines under ``detection.baselines``),
``data_card.json`` (provenance and known biases), ``xai_report.json``, ``thresholds.yaml`` (the
gates used), ``release_decision.json`` (go/no-go and the human approver, if any),
``model_card.json`` and ``model_card.md``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qso_anomaly.registry.data_card import build_data_card
from qso_anomaly.registry.gates import GateReport, Thresholds, evaluate_gates
from qso_anomaly.registry.mlflow_registry import (
    CHAMPION,
    ModelRegistry,
    PromotionBlocked,
    RegisteredVersion,
    check_approver,
    write_release_decision,
)
from qso_anomaly.registry.model_card import ModelCard, _clean
from qso_anomaly.registry.tracking import hash_files

CARD_TAG_METRICS = {
    "auroc": "detection.overall.auroc",
    "average_precision": "detection.overall.average_precision",
    "min_class_auroc": "detection.min_class_auroc",
    "xai_localisation_auroc": "xai.localisation_auroc_localised_mean",
    "xai_randomisation_passed": "xai.randomisation.passed",
    "score_psi": "drift.psi",
}


@dataclass(frozen=True)
class ReleaseOutcome:
    version: RegisteredVersion
    gates: GateReport
    promoted: bool
    files: dict[str, str]
    blocked_reason: str = ""


def _xai_summary(xai: Mapping[str, Any] | None) -> dict[str, Any]:
    if not xai:
        return {}
    keep = ("method", "n_explained", "localisation_auroc_localised_mean",
            "occlusion_localisation_auroc_localised_mean", "deletion_auc_mean",
            "deletion_auc_random_mean", "insertion_auc_mean", "insertion_auc_random_mean",
            "deletion_gain", "insertion_gain", "artefact_mass_fraction_mean", "randomisation",
            "per_class", "ig_completeness_error_median", "localisation_definition",
            "signed_pixel_localisation_auroc_localised_mean")
    return {k: xai[k] for k in keep if k in xai}


def release_version(
    registry: ModelRegistry,
    rv: RegisteredVersion,
    *,
    thresholds: Thresholds,
    release_dir: str | Path,
    evaluation: Mapping[str, Any],
    drift: Mapping[str, Any] | None,
    xai: Mapping[str, Any] | None,
    model_details: Mapping[str, Any],
    data_lineage: Mapping[str, Any],
    tier: str | None = None,
    extra_files: tuple[str | Path, ...] = (),
    approver: str | None = None,
    baselines: Mapping[str, Any] | None = None,
) -> ReleaseOutcome:
    """Evaluate the gates for ``rv``, promote it to champion if they pass, write the card.

    ``approver`` is the named person who approved the release (recorded in
    ``release_decision.json``; None records no human approver). ``baselines`` are the
    baseline detectors' figures on the same held-out set (``evidence.json``
    ``detection.baselines``). The data card is built from ``data_lineage``.
    """
    approver = check_approver(approver)
    root = Path(release_dir)
    root.mkdir(parents=True, exist_ok=True)
    xai_summary = _xai_summary(xai)
    card = ModelCard(model_details=dict(model_details), data_lineage=dict(data_lineage),
                     quantitative_analysis=dict(evaluation), xai=xai_summary)
    detection = dict(evaluation)
    if baselines:
        detection["baselines"] = dict(baselines)
    evidence = _clean({
        "detection": detection,
        "xai": xai_summary,
        "drift": dict(drift or {}),
        "card": {"complete": card.complete, "missing_sections": card.missing_sections()},
        "lineage": dict(data_lineage),
        "model": dict(model_details),
    })
    report = evaluate_gates(thresholds, evidence, tier)
    files: dict[str, str] = {}
    (root / "evidence.json").write_text(json.dumps(evidence, indent=2))
    files["evidence"] = str(root / "evidence.json")
    (root / "data_card.json").write_text(json.dumps(
        _clean(build_data_card(rv, data_lineage)), indent=2))
    files["data_card"] = str(root / "data_card.json")
    (root / "xai_report.json").write_text(json.dumps(_clean(dict(xai or {})), indent=2))
    files["xai_report"] = str(root / "xai_report.json")
    shutil.copyfile(thresholds.path, root / "thresholds.yaml")
    files["thresholds"] = str(root / "thresholds.yaml")
    for extra in extra_files:
        p = Path(extra)
        if p.is_file() and p.parent.resolve() != root.resolve():
            shutil.copyfile(p, root / p.name)
            files[p.stem] = str(root / p.name)
    promoted, blocked = False, ""
    try:
        rv = registry.promote(rv, report, CHAMPION)
        promoted = True
    except PromotionBlocked as exc:
        blocked = exc.message
    decision = write_release_decision(
        root / "release_decision.json", rv, report, promoted=promoted, approver=approver,
        artifact_hashes=hash_files(Path(f) for f in files.values()))
    files["release_decision"] = str(decision)
    card.gates = report.to_dict()
    paths = card.write(root)
    files["model_card"] = paths["markdown"]
    files["model_card_json"] = paths["json"]
    tags: dict[str, Any] = {"model_card": "release/model_card.md",
                            "release_decision": "go" if report.passed else "no-go"}
    if approver:
        tags["approver"] = approver
    from qso_anomaly.registry.gates import lookup

    for tag, path in CARD_TAG_METRICS.items():
        value = lookup(evidence, path)
        if value is not None:
            tags[tag] = value
    registry.log_release(rv, list(files.values()),
                         metrics={"release": {k: v for k, v in tags.items()
                                              if isinstance(v, (int, float))}},
                         version_tags=tags)
    return ReleaseOutcome(version=registry.get_version(rv.name, rv.version), gates=report,
                          promoted=promoted, files=files, blocked_reason=blocked)
