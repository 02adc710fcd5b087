"""Real signals to a real `skyrig up --stack <copy of local> --only infra`: exit 130, a
complete summary that says what was done and left, the lock released; a twin `up` meanwhile is
refused naming the holder. pvesim's log and files keep the root token secret private."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyrig.proxmox.privileges import MINIMAL_PRIVILEGES
from support import REPO

pytestmark = pytest.mark.integration


def _stack(tmp_path: Path) -> Path:
    f = tmp_path / "stacks" / "Pulumi.local.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text((REPO / "stacks" / "Pulumi.local.yaml").read_text())
    return f


@pytest.fixture
def slow_pvesim(tmp_path: Path) -> Iterator[Path]:
    """The stack's pvesim, started ahead with 8 s clones so `up` is surely mid-task."""
    state = tmp_path / "state"
    pdir = state / "local" / "pvesim"
    pdir.mkdir(parents=True)
    ep = pdir / "endpoint.json"
    # the same least-privilege token skyrig's localsim asks for, so skyrig reuses this pvesim
    spec = {"userid": "skyrig@pve", "tokenid": "provision",
            "acl": {k: list(v) for k, v in MINIMAL_PRIVILEGES.items()}}
    (pdir / "bootstrap.json").write_text(json.dumps(spec))
    log = open(pdir / "pvesim.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "pvesim", "serve", "--state",
                             str(pdir / "state.json"), "--hardware", "local", "--port", "0",
                             "--endpoint-file", str(ep), "--task-duration", "clone=8",
                             "--bootstrap-token", str(pdir / "bootstrap.json")],
                            stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ep.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ep.exists(), (pdir / "pvesim.log").read_text()
    (pdir / "pvesim.pid").write_text(f"{proc.pid}\n")
    try:
        yield state
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def slow_pvesim_pid(state: Path) -> int:
    return int(json.loads((state / "local" / "pvesim" / "endpoint.json").read_text())["pid"])


def _up(stack: Path, state: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SKYRIG_STATE_DIR": str(state), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "skyrig.cli", "up", "--stack", str(stack),
                             "--only", "infra"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], needle: str) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError("".join(seen))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_infra_exits_130(sig: signal.Signals, tmp_path: Path,
                                    slow_pvesim: Path) -> None:
    stack = _stack(tmp_path)
    proc = _up(stack, slow_pvesim)
    try:
        seen = _wait_for(proc, "pvesim:")
        assert f"pid {slow_pvesim_pid(slow_pvesim)}" in seen[-1]  # the slow pvesim is reused
        time.sleep(2.0)  # clones (8 s each) are running now
        # A twin `up` meanwhile is refused, naming the holder.
        twin = subprocess.run([sys.executable, "-m", "skyrig.cli", "up", "--stack", str(stack),
                               "--only", "infra"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "SKYRIG_STATE_DIR": str(slow_pvesim)},
                              timeout=120)
        assert twin.returncode == 1, twin.stderr
        assert f"pid {proc.pid}" in twin.stderr and "skyrig up --stack local" in twin.stderr
        # ... and so is a `down`, which would otherwise delete the VMs under the running `up`.
        twin = subprocess.run([sys.executable, "-m", "skyrig.cli", "down", "--stack",
                               str(stack), "--only", "infra"], cwd=REPO, capture_output=True,
                              text=True, timeout=120,
                              env={**os.environ, "SKYRIG_STATE_DIR": str(slow_pvesim)})
        assert twin.returncode == 1 and f"pid {proc.pid}" in twin.stderr, twin.stderr
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out[-2000:], err[-2000:])
    assert f"interrupted by {sig.name}" in out
    assert "done: nothing" in out and "interrupted: infra" in out
    assert "Proxmox tasks" in out  # says whether a PVE task may keep running
    state = slow_pvesim / "local"
    summary = json.loads((state / "last-up.json").read_text())  # complete, parseable
    assert summary["interrupted"]["signal"] == sig.name
    assert summary["interrupted"]["interrupted"] == "infra"
    assert not (state / "run.lock").exists()
    assert not list(state.rglob("*.tmp"))
    # The next run finishes what was left.
    again = subprocess.run([sys.executable, "-m", "skyrig.cli", "up", "--stack", str(stack),
                            "--only", "infra"], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "SKYRIG_STATE_DIR": str(slow_pvesim)},
                           timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def test_pvesim_log_and_files_keep_the_secret(tmp_path: Path) -> None:
    from pvesim.daemon import ensure_running, stop

    pdir = tmp_path / "pvesim"
    ep = ensure_running(pdir)
    try:
        log = (pdir / "pvesim.log").read_text()
        assert ep.token_secret not in log and "root token" in log
        assert stat.S_IMODE(pdir.stat().st_mode) == 0o700
        for f in pdir.rglob("*"):
            if f.is_file() and ep.token_secret in f.read_text(errors="replace"):
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert stat.S_IMODE((pdir / "pvesim.log").stat().st_mode) == 0o600
    finally:
        stop(pdir)
