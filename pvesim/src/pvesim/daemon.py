"""Run pvesim as a detached background process for the local stack.

``ensure_running(state_dir)`` starts ``python -m pvesim serve`` once per state directory
(pid file + endpoint file + health check) and returns how to reach it; ``stop(state_dir)`` ends
it. Files in ``state_dir``: ``state.json``, ``pvesim.pid``, ``pvesim.port``, ``endpoint.json``
and ``root-token`` (both 0600), ``pvesim.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from pvesim.apierror import PveSimError
from pvesim.store import write_atomic

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class SimEndpoint:
    url: str
    ca_path: Path
    token_id: str
    token_secret: str
    pid: int
    #: bootstrapped least-privilege tokens: ``user@realm!name`` → secret
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1].split(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _healthy(ep: SimEndpoint) -> bool:
    try:
        resp = requests.get(f"{ep.url}/version", timeout=2, verify=str(ep.ca_path),
                            headers={"Authorization":
                                     f"PVEAPIToken={ep.token_id}={ep.token_secret}"})
    except requests.RequestException:
        return False
    return resp.status_code == 200


def _read_endpoint(state_dir: Path) -> SimEndpoint | None:
    path = state_dir / "endpoint.json"
    try:
        raw = json.loads(path.read_text())
        return SimEndpoint(raw["url"], Path(raw["ca_path"]), raw["token_id"],
                           raw["token_secret"], int(raw["pid"]),
                           {str(k): str(v) for k, v in dict(raw.get("tokens") or {}).items()})
    except (OSError, ValueError, KeyError):
        return None


def running(state_dir: Path) -> SimEndpoint | None:
    """The endpoint of a healthy pvesim serving ``state_dir``, or None."""
    ep = _read_endpoint(Path(state_dir))
    if ep is not None and _alive(ep.pid) and _healthy(ep):
        return ep
    return None


def ensure_running(state_dir: Path, hardware: str = "local",
                   port: int | None = None,
                   bootstrap: dict[str, Any] | None = None) -> SimEndpoint:
    """Start pvesim for ``state_dir`` in the background unless it already runs; wait for it.

    ``bootstrap`` (``{userid, tokenid, acl: {path: [privileges]}}``) has the new pvesim create
    that user and privilege-separated token with exactly those grants; its secret is in the
    returned endpoint's ``tokens``. A running pvesim without that token is restarted.
    """
    state_dir = Path(state_dir)
    # The state dir holds the root token, the CA key and the log: private to its owner.
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    ep = running(state_dir)
    authid = f"{bootstrap['userid']}!{bootstrap['tokenid']}" if bootstrap else None
    if ep is not None and (authid is None or authid in ep.tokens):
        return ep
    if ep is not None:
        stop(state_dir)
    old = _read_endpoint(state_dir)
    if old is not None and _alive(old.pid):
        raise PveSimError(
            f"pvesim pid {old.pid} for {state_dir} is alive but does not answer on {old.url}",
            hint=f"stop it with pvesim.daemon.stop({str(state_dir)!r}) or kill {old.pid}")
    endpoint_file = state_dir / "endpoint.json"
    endpoint_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pvesim", "serve", "--state",
           str(state_dir / "state.json"), "--hardware", str(hardware), "--port",
           str(port if port is not None else 0), "--endpoint-file", str(endpoint_file)]
    if bootstrap is not None:
        write_atomic(state_dir / "bootstrap.json", json.dumps(bootstrap), 0o600)
        cmd += ["--bootstrap-token", str(state_dir / "bootstrap.json")]
    log_fd = os.open(state_dir / "pvesim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(log_fd, 0o600)
    log = os.fdopen(log_fd, "ab")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    finally:
        log.close()
    write_atomic(state_dir / "pvesim.pid", f"{proc.pid}\n", 0o644)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state_dir / "pvesim.log").read_text(errors="replace")[-2000:]
            raise PveSimError(f"pvesim exited with code {proc.returncode} while starting:\n{tail}",
                              hint=f"see {state_dir / 'pvesim.log'}")
        ep = _read_endpoint(state_dir)
        if ep is not None and _healthy(ep):
            write_atomic(state_dir / "pvesim.port", f"{ep.port}\n", 0o644)
            write_atomic(state_dir / "root-token", f"{ep.token_id}={ep.token_secret}\n", 0o600)
            return ep
        time.sleep(0.1)
    proc.terminate()
    raise PveSimError(f"pvesim did not answer within {START_TIMEOUT:.0f} s",
                      hint=f"see {state_dir / 'pvesim.log'}")


def stop(state_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the pvesim serving ``state_dir``; True if one was running."""
    state_dir = Path(state_dir)
    pid = None
    ep = _read_endpoint(state_dir)
    if ep is not None:
        pid = ep.pid
    else:
        try:
            pid = int((state_dir / "pvesim.pid").read_text().strip())
        except (OSError, ValueError):
            pid = None
    was_running = pid is not None and _alive(pid)
    if pid is not None and was_running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for name in ("pvesim.pid", "pvesim.port", "endpoint.json"):
        (state_dir / name).unlink(missing_ok=True)
    return was_running
