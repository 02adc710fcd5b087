"""The local monitoring stack for real: Prometheus, Alertmanager, Pushgateway, node exporter,
prometheus-pve-exporter against pvesim (read-only token) and skyrig's receiver, on loopback.

One test walks the whole story (bounded by short scrape/evaluation intervals; the VM-stopped
rule's own ``for: 1m`` and the node-down rule's ``for: 2m`` set the pace): every target up, the
rules loaded, only 127.0.0.1 listening, a VM stopped out of band fires SkyrigVmStopped which
reaches the receiver with its runbook link, the VM started again resolves it, a node taken
offline fires ProxmoxNodeDown and resolves when it is back, and after stop no process or port
is left.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from rich.console import Console

from skyrig.config import Stack
from skyrig.monitoring import RUNBOOK_IDS, local_ports
from skyrig.workflows import localmon
from skyrig.workflows.alertsink import read_alerts
from skyrig.workflows.monreport import build_report
from support import edit_stack, endpoint_of, free_port_base, make_root, stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None and os.geteuid() != 0,
                       reason="needs Debian's prometheus packages (or root to install them)"),
]


def _free_base() -> int:
    """A base with 6 consecutive free loopback ports (tests never use fixed ports)."""
    return free_port_base(tuple(range(6)))


def _until(what: str, fn: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout_s} s (last: {last!r})")


def _group_pids(pgids: list[int]) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _listening(pids: list[int]) -> list[str]:
    """host:port of every listening TCP socket held by ``pids`` (from /proc/net/tcp{,6})."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                continue
            addr, port = f[1].split(":")
            if v6:
                host = "::1" if addr == "0" * 24 + "01000000" else f"v6:{addr}"
                if addr == "0000000000000000FFFF00000100007F":
                    host = "127.0.0.1"
            else:
                host = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
            out.append(f"{host}:{int(port, 16)}")
    return out


@pytest.fixture
def mon_stack(tmp_path: Path) -> Stack:
    root = make_root(tmp_path)
    edit_stack(root, "local", "    dcgm_exporter: false\n",
               f"    dcgm_exporter: false\n    local_port_base: {_free_base()}\n")
    return stack(root, "local")


def test_local_monitoring_stack_fires_and_resolves_vm_stopped(
        sim: Any, mon_stack: Stack) -> None:
    from pvesim.testing import proxmox_client

    prox = proxmox_client(sim)

    def wait_task(upid: str) -> None:
        node = upid.split(":")[1]
        _until(f"task {upid}",
               lambda: prox.nodes(node).tasks(upid).status.get()["status"] == "stopped", 30)

    wait_task(prox.nodes("pve1").qemu.post(vmid=301, name="gpu-w-1", memory=2048))
    wait_task(prox.nodes("pve1").qemu(301).status.start.post())
    console = Console(quiet=True)
    ports = local_ports(mon_stack)
    try:
        mon = localmon.start(mon_stack, endpoint_of(sim), console, scrape_interval="1s",
                             evaluation_interval="1s", include_ray=False)
        seen: list[dict[str, Any]] = []

        def all_up() -> dict[str, Any] | None:
            s = localmon.status(mon_stack)
            seen.append(s)
            return s if s["targets_total"] == 5 and s["targets_up"] == 5 else None

        try:
            st = _until("every target up", all_up, 60)
        except AssertionError:
            raise AssertionError(f"targets: {seen[-1]}") from None
        assert st["prometheus"] == mon.prometheus_url
        jobs = requests.get(f"{mon.prometheus_url}/api/v1/targets", timeout=5).json()
        assert {t["labels"]["job"] for t in jobs["data"]["activeTargets"]} == {
            "prometheus", "alertmanager", "pushgateway", "node", "pve"}
        # the rules are loaded: every alert of the contract
        groups = requests.get(f"{mon.prometheus_url}/api/v1/rules", timeout=5).json()
        loaded = {r["name"] for g in groups["data"]["groups"] for r in g["rules"]
                  if r["type"] == "alerting"}
        assert loaded == set(RUNBOOK_IDS)
        # the PVE exporter reads pvesim with the read-only token
        q = requests.get(f"{mon.prometheus_url}/api/v1/query",
                         params={"query": 'pve_up{id="qemu/301"}'}, timeout=5).json()
        assert [r["value"][1] for r in q["data"]["result"]] == ["1"]
        # nothing listens beyond loopback
        pgids = [int(v["pid"]) for v in localmon._pids(localmon.mon_dir(mon_stack)).values()]
        listening = _listening(_group_pids(pgids))
        assert {int(a.rsplit(":", 1)[1]) for a in listening} >= set(ports.all().values())
        assert all(a.startswith("127.0.0.1:") for a in listening), listening

        # faults: stop VM 301 out of band (not through skyrig), and lose node pve2 (pvesim's
        # node-offline fault: cluster/status online 0, requests to it 595)
        wait_task(prox.nodes("pve1").qemu(301).status.stop.post())
        sim.set_node_online("pve2", False)

        def notified(status: str, name: str = "SkyrigVmStopped") -> dict[str, Any] | None:
            for n in read_alerts(mon.alerts_file):
                for a in n["alerts"]:
                    if a["labels"]["alertname"] == name and a["status"] == status:
                        return dict(a)
            return None

        fired = _until("SkyrigVmStopped at the receiver", lambda: notified("firing"), 120)
        assert fired["labels"]["vmid"] == "301" and fired["labels"]["stack"] == "local"
        assert fired["annotations"]["runbook_url"] == "runbooks/vm-stopped.md"
        assert "SkyrigVmStopped" in localmon.status(mon_stack)["alerts_firing"]
        down = _until("ProxmoxNodeDown at the receiver",
                      lambda: notified("firing", "ProxmoxNodeDown"), 150)  # for: 2m
        assert down["labels"]["node"] == "pve2" and down["labels"]["severity"] == "critical"
        assert down["annotations"]["runbook_url"] == "runbooks/pve-node-down.md"

        # faults removed: both alerts resolve
        wait_task(prox.nodes("pve1").qemu(301).status.start.post())
        sim.set_node_online("pve2", True)
        _until("SkyrigVmStopped resolved", lambda: notified("resolved"), 90)
        _until("ProxmoxNodeDown resolved", lambda: notified("resolved", "ProxmoxNodeDown"), 90)

        # a run's anomaly_* metrics reach Prometheus through the Pushgateway; plots from them
        prom = mon_stack.state_dir / "metrics.prom"
        prom.write_text(
            "# TYPE anomaly_throughput_spectra_per_second gauge\n"
            'anomaly_throughput_spectra_per_second{model="qso-ae",version="1"} 850\n'
            "# TYPE anomaly_score_psi gauge\n"
            'anomaly_score_psi{window="run"} 0.05\n')
        localmon.push_metrics(mon_stack, prom)

        def psi() -> list[Any]:
            r = requests.get(f"{mon.prometheus_url}/api/v1/query", timeout=5,
                             params={"query": 'anomaly_score_psi{job="qso_anomaly"}'}).json()
            return list(r["data"]["result"])

        _until("pushed metrics scraped", psi, 30)
        page = build_report(mon_stack, mon_stack.state_dir / "report.html", window_s=600)
        text = page.read_text()
        assert text.count("data:image/png;base64,") >= 5  # throughput, PSI, CPU, up, alerts
        assert "Score drift (PSI)" in text and "no data in this window" in text  # no DCGM here
    finally:
        stopped = localmon.stop(mon_stack)
    assert set(stopped) == {"prometheus", "alertmanager", "pushgateway", "node_exporter",
                            "pve_exporter", "receiver"}
    assert _group_pids(pgids) == []
    for port in ports.all().values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
