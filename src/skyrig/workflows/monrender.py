"""``skyrig render`` writer for monitoring: ``OUT/<stack>/monitoring/`` from
:func:`skyrig.monitoring.render_files` (rules, prometheus.yml, alertmanager.yml, dashboards, DCGM
counters). Kubernetes objects of monitoring are written with the Kubernetes tree."""

from __future__ import annotations

from pathlib import Path

from skyrig.config import Stack
from skyrig.monitoring import render_files
from skyrig.plan import Plan


def write_monitoring(stack: Stack, plan: Plan, out_dir: Path) -> list[Path]:
    """Write the monitoring files of ``stack`` under ``out_dir/monitoring``; returns them.

    Nothing is written when ``skyrig:monitoring.enabled`` is off.
    """
    del plan  # the monitoring definition derives from the stack alone
    if not stack.config.monitoring.enabled:
        return []
    written: list[Path] = []
    for rel, text in render_files(stack).items():
        f = out_dir / "monitoring" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        written.append(f)
    return written
