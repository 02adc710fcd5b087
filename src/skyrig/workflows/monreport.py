"""``skyrig monitor report``: time-series plots queried from the local Prometheus, as one HTML
page with embedded PNGs (matplotlib, Agg backend).

Panels: scoring throughput, score drift (PSI) against the stack's alert threshold, flagged
ratio, host CPU use (node exporter), Ray node CPU and GPU use (Ray head metrics), targets up per
job, alerts firing. A panel whose query returns no data says so instead of a plot.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from skyrig.config import Stack
from skyrig.errors import SkyrigError
from skyrig.monitoring import local_ports
from skyrig.monitoring.targets import LOOPBACK


@dataclass(frozen=True)
class Panel:
    """One plot: a PromQL query, its legend (``{label}`` placeholders), unit and an optional
    threshold line."""

    title: str
    query: str
    legend: str
    unit: str
    threshold: float | None = None


def panels(stack: Stack) -> list[Panel]:
    """The report's panels for ``stack``."""
    psi = stack.config.monitoring.anomaly_drift_psi_alert
    return [
        Panel("Scoring throughput", "anomaly_throughput_spectra_per_second",
              "{model} v{version}",
              "spectra/s"),
        Panel("Score drift (PSI)", "max by (window) (anomaly_score_psi)", "{window}", "PSI", psi),
        Panel("Flagged ratio", "skyrig:anomaly_flagged:ratio", "{job}", "ratio"),
        Panel("Host CPU use", '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m]))',
              "", "ratio"),
        Panel("Ray node CPU", "ray_node_cpu_utilization", "{instance}", "%"),
        Panel("GPU use (DCGM)", "avg by (node) (DCGM_FI_DEV_GPU_UTIL)", "{node}", "%"),
        Panel("Targets up by job", "skyrig:up:ratio_by_job", "{job}", "ratio"),
        Panel("Alerts firing", 'count by (alertname) (ALERTS{alertstate="firing"})',
              "{alertname}", "alerts"),
    ]


def query_range(url: str, query: str, start: float, end: float,
                step_s: float) -> list[dict[str, Any]]:
    """``/api/v1/query_range`` result (list of ``{metric, values}``)."""
    try:
        params: dict[str, str | float] = {
            "query": query, "start": start, "end": end, "step": step_s}
        r = requests.get(f"{url}/api/v1/query_range", timeout=10, params=params)
        data = r.json()
    except (requests.RequestException, ValueError) as exc:
        raise SkyrigError(f"Prometheus at {url} does not answer: {exc}") from exc
    if data.get("status") != "success":
        raise SkyrigError(f"query {query!r} failed: {data.get('error')}")
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _plot(panel: Panel, series: list[dict[str, Any]], end: float) -> str:
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    for s in series:
        xs = [(float(t) - end) / 60 for t, _ in s["values"]]
        ys = [float(v) for _, v in s["values"]]
        metric = defaultdict(str, s["metric"])
        label = panel.legend.format_map(metric) if panel.legend else panel.title
        ax.plot(xs, ys, label=label or panel.title, linewidth=1.4)
    if panel.threshold is not None:
        ax.axhline(panel.threshold, color="tab:red", linestyle="--", linewidth=1,
                   label=f"alert > {panel.threshold}")
    ax.set_title(panel.title, fontsize=10)
    ax.set_ylabel(panel.unit)
    ax.set_xlabel("minutes (0 = now)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def build_report(stack: Stack, out: Path, *, window_s: float = 3600.0,
                 url: str | None = None) -> Path:
    """Query the last ``window_s`` seconds and write the HTML page to ``out``; returns it."""
    url = url or f"http://{LOOPBACK}:{local_ports(stack).prometheus}"
    end = time.time()
    start = end - window_s
    step = max(1.0, window_s / 300)
    parts = [f"<h1>skyrig monitoring — stack {html.escape(stack.name)}</h1>",
             f"<p>Prometheus {html.escape(url)}, last {window_s / 60:.0f} min, step {step:.0f} s,"
             f" generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(end))}</p>"]
    for p in panels(stack):
        series = query_range(url, p.query, start, end, step)
        parts.append(f"<section><h2>{html.escape(p.title)}</h2>"
                     f"<p><code>{html.escape(p.query)}</code></p>")
        if series:
            parts.append(f'<img alt="{html.escape(p.title)}" '
                         f'src="data:image/png;base64,{_plot(p, series, end)}">')
        else:
            parts.append("<p><em>no data in this window</em></p>")
        parts.append("</section>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("<!doctype html><html><head><meta charset='utf-8'><title>skyrig monitoring"
                   "</title><style>body{font-family:sans-serif;max-width:1400px;margin:1em auto}"
                   "section{display:inline-block;width:660px;vertical-align:top;margin:4px}"
                   "h2{font-size:14px}</style></head><body>" + "\n".join(parts)
                   + "</body></html>\n")
    return out
