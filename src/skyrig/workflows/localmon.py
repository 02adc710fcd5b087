"""The local stack's real monitoring: Prometheus, Alertmanager, Pushgateway, node exporter,
prometheus-pve-exporter and skyrig's alert receiver, all on 127.0.0.1.

* Installed on first use: Debian's ``prometheus``, ``prometheus-alertmanager``,
  ``prometheus-pushgateway``, ``prometheus-node-exporter`` (``apt-get install``, as root), and
  ``prometheus-pve-exporter`` from requirements/base.txt (the venv's ``pve_exporter``).
* Configuration is rendered from :mod:`skyrig.monitoring` (the same rule file as every other
  environment) into ``<state>/monitoring/``; ports come from
  :func:`skyrig.monitoring.local_ports` so stacks do not collide.
* The PVE exporter reads pvesim with a read-only token ``skyrig-monitor@pve!exporter`` holding
  ``PVEAuditor`` on ``/`` (created once through the API with the stack's provisioning token).
* Alertmanager sends to :mod:`skyrig.workflows.alertsink`, which records each notification to
  ``<state>/monitoring/alerts.jsonl``.
* Every process runs in its own session; its PID is kept in ``pids.json`` and ``stop`` ends
  exactly those PIDs (after checking each still runs the program skyrig started).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
import yaml
from rich.console import Console

from skyrig.config import Stack
from skyrig.errors import SkyrigError
from skyrig.monitoring import RULES_FILE, local_ports, prometheus_config, rules_yaml
from skyrig.monitoring.targets import LOOPBACK, alertmanager_config
from skyrig.proxmox.endpoint import Endpoint

DEBIAN = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "pushgateway": "prometheus-pushgateway",
    "node_exporter": "prometheus-node-exporter",
}
MONITOR_USER = "skyrig-monitor@pve"
MONITOR_TOKEN = "exporter"


@dataclass(frozen=True)
class LocalMonitoring:
    """A running local monitoring stack."""

    prometheus_url: str
    alertmanager_url: str
    pushgateway_url: str
    alerts_file: Path
    started: list[str]


def mon_dir(stack: Stack) -> Path:
    """``<state>/monitoring``: configs, TSDB, logs, pids.json, alerts.jsonl."""
    return stack.state_dir / "monitoring"


# ------------------------------------------------------------------------------ install


def _bin(name: str) -> str | None:
    return shutil.which(DEBIAN[name]) or (
        f"/usr/bin/{DEBIAN[name]}" if Path(f"/usr/bin/{DEBIAN[name]}").exists() else None)


def _pve_exporter() -> str | None:
    here = Path(sys.executable).parent / "pve_exporter"
    return str(here) if here.exists() else shutil.which("pve_exporter")


def ensure_installed(console: Console) -> dict[str, str]:
    """Program paths; installs missing Debian packages with apt-get (root only).

    Raises :class:`SkyrigError` when a program is missing and cannot be installed here.
    """
    missing = [pkg for name, pkg in DEBIAN.items() if _bin(name) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SkyrigError(
                f"the local monitoring stack needs {', '.join(missing)}",
                hint=f"apt-get install -y {' '.join(missing)} (as root)")
        console.print(f"  installing {', '.join(missing)} (apt-get, first use)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                            *missing], capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            raise SkyrigError(f"apt-get install {' '.join(missing)} failed:\n{r.stderr[-1500:]}",
                              hint="run `apt-get update` and try again")
    paths = {name: _bin(name) for name in DEBIAN}
    pve = _pve_exporter()
    if pve is None:
        raise SkyrigError("prometheus-pve-exporter is not installed in this environment",
                          hint="pip install -r requirements/base.txt (make venv does this)")
    out = {k: v for k, v in paths.items() if v}
    if len(out) != len(DEBIAN):
        raise SkyrigError(f"programs still missing after install: {paths}")
    out["pve_exporter"] = pve
    return out


# ------------------------------------------------------------------------ pve token


def monitor_token(stack: Stack, endpoint: Endpoint) -> tuple[str, str]:
    """The exporter's read-only token (``PVEAuditor`` on ``/`` for user and token); created
    through the PVE API the first time and kept (mode 0600).

    Creating a user and a token is bootstrap work, which the least-privilege provisioning token
    may not do: for the embedded pvesim the root token from its 0600 endpoint file creates it
    (as it created the provisioning token); for a real cluster ``endpoint``'s token must hold
    ``User.Modify`` and ``Permissions.Modify``."""
    f = mon_dir(stack) / "pve-token.json"
    if f.is_file():
        saved = json.loads(f.read_text())
        return str(saved["tokenid"]), str(saved["secret"])
    token_id, token_secret = endpoint.token_id, endpoint.token_secret
    sim_file = stack.state_dir / "pvesim" / "endpoint.json"
    if stack.config.proxmox.embedded and sim_file.is_file():
        sim = json.loads(sim_file.read_text())
        token_id, token_secret = str(sim["token_id"]), str(sim["token_secret"])
    s = requests.Session()
    s.headers["Authorization"] = f"PVEAPIToken={token_id}={token_secret}"
    base = endpoint.url.rstrip("/") + "/api2/json"

    def call(method: str, where: str, /, **data: Any) -> Any:
        r = s.request(method, base + where, data=data, timeout=15, verify=endpoint.verify)
        if r.status_code >= 400:
            raise SkyrigError(f"PVE {method} {where} for the monitoring token: {r.status_code}"
                              f" {r.reason} {r.text[:300]}",
                              hint="the provisioning token needs User.Modify and"
                              " Permissions.Modify to create the read-only exporter token")
        return r.json().get("data")

    try:
        call("POST", "/access/users", userid=MONITOR_USER, comment="skyrig metrics (read-only)")
    except SkyrigError as exc:
        if "already exists" not in str(exc):
            raise
    name = MONITOR_TOKEN
    for i in range(100):
        try:
            tok = call("POST", f"/access/users/{MONITOR_USER}/token/{name}", privsep=1)
            break
        except SkyrigError as exc:
            if "already exists" not in str(exc):
                raise
            name = f"{MONITOR_TOKEN}{i + 2}"
    call("PUT", "/access/acl", path="/", roles="PVEAuditor", users=MONITOR_USER,
         tokens=tok["full-tokenid"])
    f.parent.mkdir(parents=True, exist_ok=True)
    f.touch(mode=0o600)
    f.write_text(json.dumps({"tokenid": tok["full-tokenid"], "secret": tok["value"]}))
    return str(tok["full-tokenid"]), str(tok["value"])


# -------------------------------------------------------------------------- processes


def _alive(pid: int, program: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:  # gone (also between the two reads)
        return False
    return state != "Z" and any(program.encode() in part for part in cmd[:3])


def _group_members(pgid: int) -> list[int]:
    """PIDs of the processes of process group ``pgid`` that still run (zombies aside).

    Each daemon starts in its own session (``start_new_session``), so its group holds it and
    the processes it started; read from ``/proc/<pid>/stat`` (field 5, the group).
    """
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _pids(d: Path) -> dict[str, dict[str, Any]]:
    f = d / "pids.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path,
               name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SkyrigError(f"{name} exited with {proc.returncode}:"
                              f"\n{log.read_text(errors='replace')[-1500:]}", hint=f"see {log}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SkyrigError(f"{url} did not answer within {timeout_s:.0f} s", hint=f"see {log}")


def write_configs(stack: Stack, pve_target: str, *, scrape_interval: str | None = None,
                  evaluation_interval: str | None = None, include_ray: bool = True) -> Path:
    """Render prometheus.yml, the rule file and alertmanager.yml into :func:`mon_dir`."""
    d = mon_dir(stack)
    (d / "rules").mkdir(parents=True, exist_ok=True)
    (d / RULES_FILE).write_text(rules_yaml(stack))
    conf = prometheus_config(stack, rule_files=[RULES_FILE], pve_target=pve_target,
                             scrape_interval=scrape_interval,
                             evaluation_interval=evaluation_interval)
    if not include_ray:
        conf["scrape_configs"] = [j for j in conf["scrape_configs"]
                                  if not j["job_name"].startswith("ray-")]
    (d / "prometheus.yml").write_text(yaml.safe_dump(conf, sort_keys=False))
    (d / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(stack),
                                                       sort_keys=False))
    return d


def start(stack: Stack, endpoint: Endpoint, console: Console, *,
          scrape_interval: str | None = None, evaluation_interval: str | None = None,
          include_ray: bool = True, timeout_s: float = 60.0) -> LocalMonitoring:
    """Start (or find running) the local monitoring stack of ``stack``.

    ``endpoint`` is the stack's Proxmox API (pvesim). Intervals default to the stack's
    ``scrape_interval``; ``include_ray=False`` leaves out the Ray head target (tests without
    Ray). Raises :class:`SkyrigError` when a program is missing or does not come up.
    """
    bins = ensure_installed(console)
    p = local_ports(stack)
    pve_host = urlparse(endpoint.url).netloc
    token_id, secret = monitor_token(stack, endpoint)
    d = write_configs(stack, pve_host, scrape_interval=scrape_interval,
                      evaluation_interval=evaluation_interval, include_ray=include_ray)
    user, tname = token_id.split("!", 1)
    pve_conf = d / "pve.yml"
    pve_conf.touch(mode=0o600)
    pve_conf.write_text(yaml.safe_dump({"default": {
        "user": user, "token_name": tname, "token_value": secret, "verify_ssl": True}}))
    lo = LOOPBACK
    env = {**os.environ}
    if endpoint.ca_path:
        env["REQUESTS_CA_BUNDLE"] = endpoint.ca_path
    procs: dict[str, tuple[list[str], str]] = {
        "prometheus": ([bins["prometheus"], f"--config.file={d / 'prometheus.yml'}",
                        f"--storage.tsdb.path={d / 'tsdb'}",
                        f"--web.listen-address={lo}:{p.prometheus}",
                        "--web.enable-lifecycle", "--storage.tsdb.retention.time=7d"],
                       f"http://{lo}:{p.prometheus}/-/ready"),
        "alertmanager": ([bins["alertmanager"], f"--config.file={d / 'alertmanager.yml'}",
                          f"--storage.path={d / 'alertmanager'}",
                          f"--web.listen-address={lo}:{p.alertmanager}",
                          "--cluster.listen-address="],
                         f"http://{lo}:{p.alertmanager}/-/ready"),
        "pushgateway": ([bins["pushgateway"], f"--web.listen-address={lo}:{p.pushgateway}"],
                        f"http://{lo}:{p.pushgateway}/-/ready"),
        "node_exporter": ([bins["node_exporter"], f"--web.listen-address={lo}:{p.node_exporter}",
                           "--collector.disable-defaults", "--collector.cpu",
                           "--collector.meminfo", "--collector.loadavg",
                           "--collector.filesystem", "--collector.netdev"],
                          f"http://{lo}:{p.node_exporter}/metrics"),
        "pve_exporter": ([bins["pve_exporter"], "--config.file", str(pve_conf),
                          "--web.listen-address", f"{lo}:{p.pve_exporter}"],
                         f"http://{lo}:{p.pve_exporter}/"),
        "receiver": ([sys.executable, "-m", "skyrig.workflows.alertsink",
                      "--port", str(p.receiver), "--out", str(d / "alerts.jsonl")],
                     f"http://{lo}:{p.receiver}/health"),
    }
    pids = _pids(d)
    started: list[str] = []
    for name, (cmd, ready) in procs.items():
        known = pids.get(name)
        if known and _alive(int(known["pid"]), known["program"]):
            continue
        log = d / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        pids[name] = {"pid": proc.pid, "program": Path(cmd[0]).name
                      if name != "receiver" else "python"}
        (d / "pids.json").write_text(json.dumps(pids, indent=1))
        _wait_http(ready, timeout_s, proc, log, name)
        started.append(name)
    console.print(f"  monitoring: Prometheus http://{lo}:{p.prometheus}"
                  f" ({'started ' + ', '.join(started) if started else 'already running'})")
    return LocalMonitoring(
        prometheus_url=f"http://{lo}:{p.prometheus}",
        alertmanager_url=f"http://{lo}:{p.alertmanager}",
        pushgateway_url=f"http://{lo}:{p.pushgateway}",
        alerts_file=d / "alerts.jsonl", started=started)


def stop(stack: Stack, timeout_s: float = 15.0) -> list[str]:
    """Stop every process :func:`start` started for ``stack`` (by PID); returns their names.

    Each daemon's process group gets SIGTERM; the call returns once no process of those
    groups runs (a daemon's own children included: the test of a stopped stack found one
    still exiting after its leader), sending SIGKILL to a group still running after
    ``timeout_s`` seconds.
    """
    d = mon_dir(stack)
    pids = _pids(d)
    stopped: list[str] = []
    groups: list[int] = []
    for name, info in pids.items():
        pid = int(info["pid"])
        if _alive(pid, info["program"]):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            stopped.append(name)
            groups.append(pid)
    deadline = time.monotonic() + timeout_s
    for pgid in groups:
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5.0
            while _group_members(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
    (d / "pids.json").unlink(missing_ok=True)
    return stopped


def running(stack: Stack) -> bool:
    """Whether this stack's Prometheus (started by skyrig) runs."""
    info = _pids(mon_dir(stack)).get("prometheus")
    return info is not None and _alive(int(info["pid"]), str(info["program"]))


# ------------------------------------------------------------------------------ status


def status(stack: Stack) -> dict[str, Any]:
    """Prometheus URL, targets up/total (with the down ones) and the alerts firing.

    Raises :class:`SkyrigError` when the stack's Prometheus does not answer.
    """
    url = f"http://{LOOPBACK}:{local_ports(stack).prometheus}"
    try:
        targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]
        alerts = requests.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise SkyrigError(f"Prometheus of stack {stack.name} does not answer at {url}: {exc}",
                          hint=f"skyrig up --stack {stack.name} --only platform") from exc
    active = targets["activeTargets"]
    return {
        "prometheus": url,
        "targets_up": sum(1 for t in active if t["health"] == "up"),
        "targets_total": len(active),
        "targets_down": sorted(f"{t['labels'].get('job')}/{t['labels'].get('instance')}"
                               for t in active if t["health"] != "up"),
        "alerts_firing": sorted({a["labels"]["alertname"] for a in alerts
                                 if a["state"] == "firing"}),
        "alerts_pending": sorted({a["labels"]["alertname"] for a in alerts
                                  if a["state"] == "pending"}),
    }


def push_metrics(stack: Stack, metrics_file: Path) -> str:
    """Push a run's ``anomaly_*`` text-format metrics to the stack's Pushgateway (grouping key
    ``job=qso_anomaly``); returns the group URL. Raises :class:`SkyrigError` on failure."""
    url = (f"http://{LOOPBACK}:{local_ports(stack).pushgateway}/metrics/job/"
           f"{stack.config.workload.name}")
    try:
        r = requests.put(url, data=metrics_file.read_bytes(), timeout=10)
    except (OSError, requests.RequestException) as exc:
        raise SkyrigError(f"cannot push {metrics_file} to {url}: {exc}") from exc
    if r.status_code >= 400:
        raise SkyrigError(f"Pushgateway refused {metrics_file}: {r.status_code} {r.text[:300]}")
    return url


# ------------------------------------------------------------------- `skyrig up` hooks


def skip_reason(stack: Stack) -> str | None:
    """Why the monitor layer does not apply to ``stack`` (None when it does)."""
    if not stack.config.monitoring.enabled:
        return "skyrig:monitoring.enabled is off"
    if stack.config.ray.mode != "local":
        return ("monitoring of this stack runs in Kubernetes (kube-prometheus-stack with the"
                " objects of `skyrig render`)")
    return None


def platform_up(stack: Stack, endpoint: Endpoint | None, console: Console) -> dict[str, Any]:
    """Start the local monitoring stack in the ``platform`` layer; returns summary fields."""
    if skip_reason(stack) or endpoint is None:
        return {}
    t0 = time.monotonic()
    mon = start(stack, endpoint, console)
    return {"prometheus": mon.prometheus_url, "alertmanager": mon.alertmanager_url,
            "started": mon.started, "start_s": round(time.monotonic() - t0, 2)}


def monitor_up(stack: Stack, summary: dict[str, Any], console: Console) -> dict[str, Any]:
    """The ``monitor`` layer: push the last run's ``anomaly_*`` metrics, then report targets
    up/total and alerts firing (also printed)."""
    w = summary.get("workload") or {}
    pushed = None
    if w.get("metrics") and Path(str(w["metrics"])).is_file():
        pushed = push_metrics(stack, Path(str(w["metrics"])))
    st = status(stack)
    if pushed:
        st["pushed"] = pushed
    print_status(st, console)
    return st


def print_status(st: dict[str, Any], console: Console) -> None:
    """Human lines for :func:`status`."""
    console.print(f"  Prometheus {st['prometheus']}: targets up {st['targets_up']}/"
                  f"{st['targets_total']}"
                  + (f" (down: {', '.join(st['targets_down'])})" if st["targets_down"] else ""))
    console.print("  alerts firing: " + (", ".join(st["alerts_firing"]) or "none")
                  + (f"; pending: {', '.join(st['alerts_pending'])}"
                     if st["alerts_pending"] else ""))
