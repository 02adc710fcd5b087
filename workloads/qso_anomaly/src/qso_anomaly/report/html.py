"""The HTML run report: one self-contained file with embedded PNG figures."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from numpy.typing import NDArray

from qso_anomaly.report import plots


@dataclass
class ReportInputs:
    """Everything a report shows. Only ``scores`` is required; sections without data are
    left out (real data has no labels or injection masks)."""

    scores: NDArray[Any]
    title: str = "qso_anomaly scoring run"
    model: Mapping[str, Any] = field(default_factory=dict)  # name, version, alias, framework
    labels: NDArray[Any] | None = None
    reference_scores: NDArray[Any] | None = None
    flag_threshold: float | None = None
    #: Flags per spectrum (the run's decision, e.g. ``ScoredRun.flagged``); without it the
    #: count is ``score >= flag_threshold``.
    flagged: NDArray[Any] | None = None
    #: Flags by coverage stratum (``ScoredRun.flag_summary()``), shown as a table.
    flag_strata: Mapping[str, Any] | None = None
    evaluation: Mapping[str, Any] | None = None  # registry.evaluation.evaluate_detection
    drift: Mapping[str, Any] | None = None
    explanations: Any = None  # explain.runner.ExplanationSet
    wave: NDArray[Any] | None = None
    gates: Mapping[str, Any] | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    n_top: int = 8


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)


def build_figures(inp: ReportInputs) -> dict[str, Any]:
    figs: dict[str, Any] = {}
    figs["score_distribution"] = _img(plots.score_distribution(
        inp.scores, inp.reference_scores, inp.drift, inp.flag_threshold),
        "score distribution vs reference")
    if inp.labels is not None and len(set(np.asarray(inp.labels).astype(str).tolist())) > 1:
        figs["pr_curves"] = _img(plots.pr_curves(inp.scores, inp.labels), "precision-recall")
    if inp.evaluation and (inp.evaluation.get("per_snr_bin") or inp.evaluation.get("per_z_bin")):
        figs["slices"] = _img(plots.slice_performance(inp.evaluation), "performance by bin")
    ex = inp.explanations
    top = []
    if ex is not None and inp.wave is not None:
        order = np.argsort(-np.asarray(ex.score))[: inp.n_top]
        for i in order:
            truth = None if ex.truth_mask is None else ex.truth_mask[i]
            title = (f"targetid {int(ex.targetid[i])}  z={float(ex.z[i]):.3f}  "
                     f"score={float(ex.score[i]):.2f}  label={ex.label[i]}")
            top.append(_img(plots.spectrum_panel(inp.wave, ex.flux[i], ex.recon[i], ex.ig[i],
                                                 ivar=ex.ivar[i], truth=truth, title=title),
                            title))
        curves = ex.report.get("curves") if isinstance(ex.report, Mapping) else None
        if curves and curves.get("deletion_mean"):
            figs["deletion"] = _img(plots.deletion_curves(curves), "deletion curves")
    figs["top"] = top
    return figs


def render_report(inp: ReportInputs) -> str:
    env = Environment(loader=PackageLoader("qso_anomaly.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    xai = None
    if inp.explanations is not None:
        xai = inp.explanations.report
    figs = build_figures(inp)
    scores = np.asarray(inp.scores, dtype=np.float64)
    n_flagged = (int(np.sum(inp.flagged)) if inp.flagged is not None
                 else int(np.sum(scores >= inp.flag_threshold))
                 if inp.flag_threshold is not None else None)
    return env.get_template("report.html.j2").render(
        title=inp.title,
        generated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        model=dict(inp.model),
        n=int(scores.size),
        n_flagged=n_flagged,
        flag_threshold=inp.flag_threshold,
        stratified=inp.flagged is not None,
        flag_strata=inp.flag_strata,
        summary=dict(inp.summary),
        evaluation=inp.evaluation,
        drift=inp.drift,
        xai=xai,
        gates=inp.gates,
        links=dict(inp.links),
        figs=figs,
        raw_json=json.dumps({"model": dict(inp.model), "summary": dict(inp.summary)},
                            default=str, indent=1).replace("</", "<\\/"),
    )


def write_report(inp: ReportInputs, path: str | Path) -> Path:
    """Render and write ``report.html`` (atomic rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(render_report(inp), encoding="utf-8")
    tmp.replace(p)
    return p
