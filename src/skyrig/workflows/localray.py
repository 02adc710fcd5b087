"""A local Ray head for the `local` stack: started by skyrig, found again on a re-run, stopped by
`skyrig down`. The head runs as ``ray start --head --block`` in its own process group whose id is
kept in the stack's state directory, so skyrig only ever stops the processes it started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from skyrig.config.model import Ray
from skyrig.errors import WorkloadError
from skyrig.fsutil import private_dir, write_atomic

#: Environment marker carried by every process of a stack's local Ray (head, raylet, workers,
#: job drivers): its value is the stack's Ray state directory. `stop_head` sweeps by it, so
#: job drivers that Ray starts in their own sessions are stopped too.
MARKER = "SKYRIG_RAY_STATE"


@dataclass(frozen=True)
class RayHead:
    """How to reach a running local head."""

    address: str
    dashboard_url: str
    pgid: int
    started: bool


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    found = str(candidate) if candidate.exists() else shutil.which("ray")
    if not found:
        raise WorkloadError(
            "the `ray` command is not installed in this environment",
            hint="run `make venv` (installs ray[default])",
        )
    return found


def _dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as resp:
            return bool(resp.status == 200 and json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def running_head(state_dir: Path) -> RayHead | None:
    """The head this state dir started, if it still serves (read from its files); else None."""
    pid_file = state_dir / "ray-head.pgid"
    addr_file = state_dir / "ray-head.json"
    if not (pid_file.exists() and addr_file.exists()):
        return None
    try:
        pgid = int(pid_file.read_text().strip() or 0)
        info = json.loads(addr_file.read_text())
        head = RayHead(str(info["address"]), str(info["dashboard"]), pgid, started=False)
    except (OSError, ValueError, KeyError):
        return None
    return head if pgid and _alive(pgid) and _dashboard_up(head.dashboard_url) else None


def ensure_head(cfg: Ray, state_dir: Path, *, timeout_s: float = 180.0) -> RayHead:
    """Start the head unless the one this state dir started is still serving."""
    private_dir(state_dir)
    pid_file = state_dir / "ray-head.pgid"
    url = f"http://127.0.0.1:{cfg.dashboard_port}"
    address = f"127.0.0.1:{cfg.head_port}"
    if pid_file.exists():
        pgid = int(pid_file.read_text().strip() or 0)
        if pgid and _alive(pgid) and _dashboard_up(url):
            return RayHead(address, url, pgid, started=False)
        if pgid and _alive(pgid):
            _stop_group(pgid)
        pid_file.unlink(missing_ok=True)
    if _dashboard_up(url):
        raise WorkloadError(
            f"another Ray dashboard already answers on {url}, not started by this stack",
            hint="stop it, or change skyrig:ray.dashboard_port / head_port in the stack file",
        )
    cmd = [
        _ray_bin(),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--port={cfg.head_port}",
        f"--dashboard-host={cfg.dashboard_host}",
        f"--dashboard-port={cfg.dashboard_port}",
        f"--metrics-export-port={cfg.metrics_export_port}",
        # Ray's fixed default ports (agent 52365, client server 10001) would collide with any
        # other Ray on this machine: derive them from the stack's head port instead.
        f"--dashboard-agent-listen-port={cfg.head_port + 1}",
        f"--ray-client-server-port={cfg.head_port + 2}",
        f"--object-store-memory={cfg.object_store_memory_mib * 1024 * 1024}",
        "--include-dashboard=true",
    ]
    if cfg.num_cpus:
        cmd.append(f"--num-cpus={cfg.num_cpus}")
    log = open(state_dir / "ray-head.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # Jobs run `python ...` like on a real cluster: put this environment's interpreter first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = cfg.auth_mode
    env[MARKER] = str(state_dir.resolve())
    # A single-node head: keep every Ray address on loopback. Without this Ray replaces
    # 127.0.0.1 with the address of the machine's outward interface.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    write_atomic(pid_file, str(proc.pid))
    try:
        return _wait_started(proc, state_dir, pid_file, url, address, timeout_s)
    except KeyboardInterrupt:
        # Interrupted while the head was starting: do not leave a half-started head behind.
        _stop_group(proc.pid)
        _sweep(state_dir)
        pid_file.unlink(missing_ok=True)
        raise


def _wait_started(proc: subprocess.Popen[bytes], state_dir: Path, pid_file: Path, url: str,
                  address: str, timeout_s: float) -> RayHead:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            tail = (state_dir / "ray-head.log").read_text(errors="replace")[-2000:]
            raise WorkloadError(
                f"the local Ray head exited with {proc.returncode}:\n{tail}",
                hint=f"see {state_dir / 'ray-head.log'}",
            )
        if _dashboard_up(url):
            write_atomic(state_dir / "ray-head.json",
                         json.dumps({"address": address, "dashboard": url}) + "\n")
            return RayHead(address, url, proc.pid, started=True)
        time.sleep(1.0)
    _stop_group(proc.pid)
    pid_file.unlink(missing_ok=True)
    raise WorkloadError(
        f"the local Ray head did not answer on {url} within {timeout_s:.0f} s",
        hint=f"see {state_dir / 'ray-head.log'}",
    )


def _stop_group(pgid: int, timeout_s: float = 30.0) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pgid):
        time.sleep(0.5)
    if _alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


def stack_processes(state_dir: Path) -> list[int]:
    """PIDs of live processes carrying this state dir's :data:`MARKER` (read from /proc)."""
    want = f"{MARKER}={state_dir.resolve()}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if want in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def _sweep(state_dir: Path, timeout_s: float = 15.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of this stack's Ray that is still alive."""
    pids = stack_processes(state_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and stack_processes(state_dir):
        time.sleep(0.3)
    for pid in stack_processes(state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def stop_head(state_dir: Path) -> bool:
    """Stop the head this state dir started and every process of it (job drivers included);
    False when none was running."""
    pid_file = state_dir / "ray-head.pgid"
    running = False
    if pid_file.exists():
        try:
            pgid = int(pid_file.read_text().strip() or 0)
        except ValueError:
            pgid = 0
        running = bool(pgid) and _alive(pgid)
        if running:
            _stop_group(pgid)
        pid_file.unlink(missing_ok=True)
    if state_dir.exists() and _sweep(state_dir):
        running = True
    return running
