"""The main job end to end: `skyrig up --stack local` twice, then `skyrig down`.

Real pvesim (background daemon), real provisioning, a real local Ray head and a real Ray job
running the pinned qso_anomaly release on small data. Ports and state are moved aside so the test
does not meet a developer's own `make run`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support import free_port_base

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _stack(tmp_path: Path, base: int) -> Path:
    """The local stack on ports base (Ray head), +10 (dashboard), +20 (metrics export) and
    +30..+35 (monitoring), away from a developer's own `make run`."""
    text = (ROOT / "stacks" / "Pulumi.local.yaml").read_text()
    for a, b in (("head_port: 26379", f"head_port: {base}"),
                 ("dashboard_port: 28265", f"dashboard_port: {base + 10}"),
                 ("metrics_export_port: 28080", f"metrics_export_port: {base + 20}"),
                 ("n_spectra: 1500", "n_spectra: 400"),
                 ("dcgm_exporter: false",
                  f"dcgm_exporter: false\n    local_port_base: {base + 30}")):
        assert a in text, a
        text = text.replace(a, b)
    f = tmp_path / "stacks" / "Pulumi.local.yaml"
    f.parent.mkdir()
    f.write_text(text)
    return f


def _skyrig(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skyrig.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)


def test_up_twice_then_down(tmp_path: Path) -> None:
    base = free_port_base((0, 10, 20, *range(30, 36)))
    stack = _stack(tmp_path, base)
    state = tmp_path / "state"
    env = {**os.environ, "SKYRIG_STATE_DIR": str(state), "COLUMNS": "200"}
    try:
        first = _skyrig("up", "--stack", str(stack), env=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        s1 = json.loads((state / "local" / "last-up.json").read_text())
        assert set(s1["infra"]["created"]) == {
            "pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0", "vm/gpu-w-1", "vm/gpu-w-2"}
        assert s1["infra"]["ips"] == {"gpu-w-1": "127.0.10.31", "gpu-w-2": "127.0.10.32"}
        w1 = s1["workload"]
        assert w1["status"] == "SUCCEEDED"
        for key in ("report", "metrics", "model_card"):
            assert Path(w1[key]).is_file(), (key, w1[key])
        assert "report" in first.stdout and "model card" in first.stdout
        m1 = s1["monitoring"]
        assert m1["prometheus"] == f"http://127.0.0.1:{base + 30}"
        assert m1["targets_total"] == 6 and m1["pushed"], m1
        assert "Prometheus" in first.stdout and "targets up" in first.stdout

        second = _skyrig("up", "--stack", str(stack), env=env)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        s2 = json.loads((state / "local" / "last-up.json").read_text())
        assert s2["infra"]["changed"] is False and not s2["infra"]["created"]
        assert "no changes" in second.stdout
        assert s2["ray"]["started"] is False
        assert s2["workload"]["status"] == "SUCCEEDED"
        assert s2["workload"]["report"] != w1["report"]  # a new scoring run
    finally:
        down = _skyrig("down", "--stack", str(stack), env=env)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert not (state / "local" / "ray" / "ray-head.pgid").exists()
    assert not (state / "local" / "monitoring" / "pids.json").exists()
    for port in range(base + 30, base + 36):  # the monitoring stack's ports are closed again
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, port
