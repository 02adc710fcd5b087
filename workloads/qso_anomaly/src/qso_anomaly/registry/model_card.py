"""Model cards (Mitchell et al. 2019) for registered model versions, as JSON and Markdown.

Sections follow the model-card-toolkit schema (model_details, model_parameters,
quantitative_analysis, considerations) plus data lineage, XAI faithfulness, release gates and a
NIST AI RMF mapping (:mod:`qso_anomaly.registry.nist`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from qso_anomaly.registry.nist import rmf_mapping

INTENDED_USE = (
    "Rank DESI-like quasar spectra by how unusual they are, so that astronomers can inspect the "
    "top of the list (BAL variants, changing-look candidates, contaminants, artefacts). Each flag "
    "comes with a per-pixel explanation; a flag is a candidate for review, never an automatic "
    "action or classification.")
USERS = (
    "Survey astronomers triaging anomalous quasar candidates",
    "The lab's ML engineers validating and releasing model versions",
)
OUT_OF_SCOPE = (
    "Non-QSO targets (galaxies, stars) except as contaminants to be flagged",
    "Spectra from other instruments or grids without re-gridding to the model's grid",
    "Redshift estimation, classification or any automated catalogue decision",
    "Quasars outside the training redshift range or with grid versions other than the card's",
)
LIMITATIONS = (
    ("Trained and evaluated on synthetic qso-inject-v1 spectra (templates + injected anomalies); "
    "real-sky performance is not measured by this card."),
    ("Whole-continuum changes (reddening, weak lines) are not localised: pixel localisation "
    "metrics are only meaningful for classes with localised features."),
    "Low-S/N spectra are harder; see the per-S/N-bin metrics and their confidence intervals.",
    ("Real top-N lists are dominated by artefacts (sky residuals, arm joins); the artefact-mass "
    "share of each explanation helps separate them but does not remove them."),
)
ETHICS = (
    {"name": "Selection bias in follow-up",
     "mitigation_strategy": "per-slice metrics (S/N, redshift) and the slice-gap gate",
     "residual_risk": "rare classes absent from the injection set are not measured"},
    {"name": "Over-trust in explanations",
     "mitigation_strategy": "faithfulness measured (localisation AUROC, deletion curves, "
                            "randomisation check) and reported with every version",
     "residual_risk": "attributions explain the score, not the astrophysics"},
)
METRICS_PLAN = {
    "measured": [
        ("AUROC / average precision / precision@k per injected class, S/N bin and redshift bin "
        "with 95% bootstrap CIs"),
        "XAI localisation AUROC vs injection masks, deletion/insertion AUC, randomisation check",
        "score drift (PSI, KS) against the reference distribution",
    ],
    "not_measured": [
        {"risk": "privacy", "rationale": "synthetic/public survey spectra carry no personal data",
         "proxy": "none needed"},
        {"risk": "real-sky precision",
         "rationale": "needs astronomer review verdicts (anomaly_review_decisions_total)",
         "proxy": "injected-anomaly benchmark metrics"},
        {"risk": "energy use", "rationale": "CPU CI runs have no DCGM energy counter",
         "proxy": "wall time of training and scoring in the evidence"},
    ],
}
REQUIRED_NON_EMPTY = ("intended_use", "users", "out_of_scope_uses", "limitations",
                      "data_lineage", "quantitative_analysis")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tuples lists, numpy scalars floats."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass
class ModelCard:
    model_details: dict[str, Any]
    data_lineage: dict[str, Any]
    quantitative_analysis: dict[str, Any]
    xai: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    intended_use: str = INTENDED_USE
    users: list[str] = field(default_factory=lambda: list(USERS))
    out_of_scope_uses: list[str] = field(default_factory=lambda: list(OUT_OF_SCOPE))
    limitations: list[str] = field(default_factory=lambda: list(LIMITATIONS))
    ethical_considerations: list[dict[str, str]] = field(
        default_factory=lambda: [dict(e) for e in ETHICS])
    metrics_plan: dict[str, Any] = field(default_factory=lambda: json.loads(
        json.dumps(METRICS_PLAN)))
    factors: list[str] = field(default_factory=lambda: [
        "redshift bin", "S/N bin", "anomaly class", "arm coverage", "grid version"])
    nist_ai_rmf: list[dict[str, Any]] = field(default_factory=list)

    def missing_sections(self) -> list[str]:
        """Required sections that are empty (MAP 1.1 completeness)."""
        return [name for name in REQUIRED_NON_EMPTY if not getattr(self, name)]

    @property
    def complete(self) -> bool:
        return not self.missing_sections()

    def to_dict(self) -> dict[str, Any]:
        data = _clean(asdict(self))
        data["complete"] = self.complete
        return data  # type: ignore[no-any-return]

    def attach_rmf(self, release_dir: str | Path,
                   assume_present: tuple[str, ...] = ("model_card.json", "model_card.md")) -> None:
        """Compute the NIST AI RMF mapping from the files present in ``release_dir``."""
        rows = rmf_mapping(release_dir)
        for row in rows:
            if row["evidence"] in assume_present and not row["evidence_present"]:
                row["evidence_present"] = True
                row["status"] = ("Not Applicable" if row["id"] == "MEASURE 2.10" else
                                 "Partially Implemented" if row["elsewhere"] else "Implemented")
        self.nist_ai_rmf = rows

    def render_markdown(self) -> str:
        env = Environment(loader=PackageLoader("qso_anomaly.registry", "templates"),
                          undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          autoescape=False)
        env.filters["num"] = _fmt
        env.filters["ci"] = _fmt_ci
        return env.get_template("model_card.md.j2").render(card=self.to_dict())

    def write(self, release_dir: str | Path) -> dict[str, str]:
        """Write ``model_card.json`` and ``model_card.md``; returns their paths."""
        root = Path(release_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.attach_rmf(root)
        jpath = root / "model_card.json"
        mpath = root / "model_card.md"
        jpath.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False))
        mpath.write_text(self.render_markdown())
        return {"json": str(jpath), "markdown": str(mpath)}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def _fmt_ci(ci: Any) -> str:
    if not ci:
        return ""
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"
