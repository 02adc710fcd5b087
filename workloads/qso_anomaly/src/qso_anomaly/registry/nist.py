"""NIST AI RMF 1.0 subcategories this workload's release evidence speaks to.

IDs and intents follow the AI RMF Core (NIST AI 100-1), not the Playbook. Each entry names the
release artifact that carries the evidence (a file name in the release directory) and whether it
is machine-checkable (M) or needs a person's review (P). The status of an entry is computed when
the card is built: "Implemented" only when its evidence file exists (a checkable evidence chain);
entries whose artifact lives outside this package (alerts, SBOM, CrossGuard policy) are marked
"Partially Implemented" with the owning component named.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RmfEntry:
    id: str
    intent: str
    evidence: str  # artifact file name in the release dir, or "" when held elsewhere
    kind: str  # "M" machine-checkable, "P" partly (a person reviews the content)
    how: str
    elsewhere: str = ""  # the component that holds the rest of the evidence


RMF_ENTRIES: tuple[RmfEntry, ...] = (
    RmfEntry("GOVERN 1.3", "risk-management level set by risk tolerance", "release_decision.json",
             "M", "risk tier selects the gate list in thresholds.yaml; the decision records it"),
    RmfEntry("GOVERN 1.6", "inventory of AI systems", "release_decision.json", "M",
             "every version is an MLflow registered-model version with aliases and tags",
             "skyrig stack outputs pin model@version per environment"),
    RmfEntry("MAP 1.1", "purpose, users, context, limitations", "model_card.json", "M/P",
             "card sections intended_use, users, out_of_scope_uses, limitations (non-empty check)"),
    RmfEntry("MAP 1.5", "risk tolerances documented", "thresholds.yaml", "M",
             "release gates per risk tier, copied into the release"),
    RmfEntry("MAP 2.1", "task and method defined", "model_card.json", "M",
             "model_details: task, architecture, framework and versions"),
    RmfEntry("MAP 2.2", "knowledge limits; how output is used and overseen", "model_card.json",
             "P", "limitations and oversight: flags are candidates for astronomer review, "
             "no automatic action"),
    RmfEntry("MAP 2.3", "scientific integrity, TEVV, representativeness", "data_card.json",
             "M/P", "data card: provenance (generator, seeds, template citations, shard and "
             "template sha256), composition and the known biases of DESI targeting, redrock "
             "redshifts, fibre assignment and the synthetic survey"),
    RmfEntry("MEASURE 1.3", "independent assessors", "release_decision.json", "P",
             "approver: the named person who reviewed and approved the release (--approver or "
             "QSO_RELEASE_APPROVER); automatic runs record none"),
    RmfEntry("MEASURE 1.1", "metrics chosen; unmeasured risks documented", "model_card.json", "M",
             "metrics_plan.measured / not_measured with rationale"),
    RmfEntry("MEASURE 2.1", "test sets, metrics, tools documented", "evidence.json", "M",
             "held-out split hashes, metric definitions, seeds, library versions, hardware; "
             "PCA χ² and PCA+IsolationForest baselines on the same held-out set"),
    RmfEntry("MEASURE 2.3", "performance under deployment-like conditions", "evidence.json", "M",
             "held-out benchmark metrics checked against thresholds.yaml"),
    RmfEntry("MEASURE 2.5", "valid and reliable; generalisation limits", "model_card.json", "M/P",
             "per-class, per-S/N and per-z metrics with 95% bootstrap CIs; limitations"),
    RmfEntry("MEASURE 2.8", "transparency and accountability", "model_card.md", "M",
             "model card logged with every registered version; release decision recorded"),
    RmfEntry("MEASURE 2.9", "model explained, validated, documented", "xai_report.json", "M",
             "IG + occlusion for the top-k; localisation AUROC, deletion curves, "
             "randomisation sanity check"),
    RmfEntry("MEASURE 2.10", "privacy", "model_card.json", "P",
             "documented N/A: synthetic / public survey spectra, no personal data"),
    RmfEntry("MEASURE 2.11", "fairness and bias (read as selection bias)", "evidence.json", "M",
             "largest AUROC gap across S/N and redshift bins, gated in the production tier"),
    RmfEntry("MEASURE 3.1", "track existing and emergent risks", "metrics.prom", "M",
             "score PSI/KS vs the reference exported as anomaly_score_psi / _ks_*",
             "skyrig PrometheusRules alert on drift"),
    RmfEntry("MANAGE 1.1", "decide whether to proceed", "release_decision.json", "M",
             "go/no-go from the gates; champion alias only on go"),
    RmfEntry("MANAGE 2.4", "supersede, disengage, deactivate", "release_decision.json", "M",
             "champion alias moves only on a passing release; the previous champion stays "
             "registered for rollback", "skyrig stack pins the alias/version per environment"),
    RmfEntry("MANAGE 4.1", "post-deployment monitoring plan", "metrics.prom", "M",
             "anomaly_* metrics of every scoring run (textfile snapshot and live exporter)",
             "skyrig monitoring: PrometheusRules with runbook_url"),
)


def _approver(decision: Path) -> str:
    try:
        doc = json.loads(decision.read_text())
    except (OSError, ValueError):
        return ""
    return str(doc.get("approver") or "") if isinstance(doc, dict) else ""


def rmf_mapping(release_dir: str | Path) -> list[dict[str, Any]]:
    """The mapping with a computed ``status`` and ``evidence_present`` for one release dir."""
    root = Path(release_dir)
    out = []
    for entry in RMF_ENTRIES:
        present = bool(entry.evidence) and (root / entry.evidence).is_file()
        if not present:
            status = "Planned"
        elif entry.elsewhere:
            status = "Partially Implemented"
        else:
            status = "Implemented"
        if entry.id == "MEASURE 2.10" and present:
            status = "Not Applicable"
        if entry.id == "MEASURE 1.3" and present and not _approver(root / entry.evidence):
            status = "Planned"  # a decision without a named human approver
            present = False
        row = asdict(entry)
        row.update(status=status, evidence_present=present)
        out.append(row)
    return out
