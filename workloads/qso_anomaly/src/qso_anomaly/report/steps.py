"""The report step of a run: the HTML report of a scored (and explained) run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qso_anomaly.explain.runner import ExplanationSet
    from qso_anomaly.score.run import ScoredRun
    from qso_anomaly.train.trained import TrainedModel


def write_run_report(
    trained: TrainedModel,
    model: Mapping[str, str],
    scored: ScoredRun,
    path: str | Path,
    *,
    explanations: ExplanationSet | None = None,
    evaluation: Mapping[str, Any] | None = None,
    gates: Mapping[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
    framework: str = "torch",
) -> Path:
    """Write the self-contained HTML report of a run.

    Args:
        trained: The model (its grid's wavelengths in Å label the spectra).
        model: ``name``, ``version`` and optionally ``alias`` of the model.
        scored: The scored run; its rejections (on read and by the scorer) are listed by
            reason in the summary.
        path: The ``report.html`` to write.
        explanations: Explanations of the top spectra, or ``None``.
        evaluation: :func:`qso_anomaly.registry.steps.evaluate_scored`, or ``None`` (no labels).
        gates: Release gate report (:meth:`GateReport.to_dict`), or ``None``.
        links: Link text → path relative to the report (metrics, model card).
        framework: ``"torch"`` or ``"jax"``.

    Returns:
        The path of the written report.

    Raises:
        OSError: The report cannot be written.
    """
    from qso_anomaly.report.html import ReportInputs, write_report

    counts: dict[str, int] = dict(scored.rejected_on_read)
    for k, v in scored.rejected.items():
        counts[k] = counts.get(k, 0) + int(v)
    summary: dict[str, Any] = {
        "spectra_per_second": scored.spectra_per_second,
        "rejected_spectra": sum(v for k, v in counts.items()
                                if not k.startswith("masked_pixels:")),
    }
    for k, v in sorted(counts.items()):  # by reason: data policy on read, then the scorer
        if v:
            summary[k.replace("masked_pixels:", "masked pixels: ") if k.startswith(
                "masked_pixels:") else f"rejected: {k}"] = v
    inp = ReportInputs(
        scores=scored.score, labels=scored.label, reference_scores=scored.reference,
        flag_threshold=scored.flag_threshold, flagged=scored.flagged,
        flag_strata=scored.flag_summary(), evaluation=evaluation, drift=scored.drift,
        explanations=explanations, wave=trained.grid.wave, gates=gates,
        model={**model, "framework": framework}, summary=summary, links=dict(links or {}),
        title=f"qso_anomaly run — {model.get('name', '?')} v{model.get('version', '?')}")
    return write_report(inp, path)
