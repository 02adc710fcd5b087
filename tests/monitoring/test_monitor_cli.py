"""`skyrig monitor status` and `skyrig render` as a user meets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _skyrig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skyrig.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_monitor_status_without_prometheus_exits_1_with_a_hint(tmp_path: Path) -> None:
    text = (ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace(
        "dcgm_exporter: false", "dcgm_exporter: false\n    local_port_base: 1030")
    f = tmp_path / "Pulumi.local.yaml"
    f.write_text(text)
    r = _skyrig("monitor", "status", "--stack", str(f))
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "127.0.0.1:1030" in out and "skyrig up --stack" in out
    assert "Traceback" not in out


def test_render_writes_the_monitoring_tree(tmp_path: Path) -> None:
    r = _skyrig("render", "--stack", "prod", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    mon = tmp_path / "prod" / "monitoring"
    assert (mon / "rules" / "skyrig.rules.yml").is_file()
    assert (mon / "alertmanager.yml").is_file()
    assert len(list((mon / "dashboards").glob("*.json"))) == 4
