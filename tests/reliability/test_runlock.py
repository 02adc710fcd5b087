"""The per-stack run lock: refuses naming the holder, waits when asked, released on exit, error
and crash (stale by PID), never taken from another host; atomic state writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from skyrig.errors import RunInterrupted, RunLockError
from skyrig.fsutil import write_atomic
from skyrig.workflows.runlock import LOCK_NAME, guarded_run, read_holder, run_lock

pytestmark = pytest.mark.unit

HOLD = """
import sys, time
from pathlib import Path
from skyrig.workflows.runlock import run_lock
with run_lock(Path(sys.argv[1]), "skyrig up --stack twin"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder_process(state: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_command_refused_naming_holder_then_crash_releases(tmp_path: Path) -> None:
    p = _holder_process(tmp_path)
    try:
        with pytest.raises(RunLockError) as exc, run_lock(tmp_path, "skyrig down --stack twin"):
            pass
        text = str(exc.value)
        assert "skyrig up --stack twin" in text and f"pid {p.pid}" in text
        assert socket.gethostname() in text
    finally:
        p.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
        p.wait()
    assert (tmp_path / LOCK_NAME).exists()  # left behind by the crash ...
    with run_lock(tmp_path, "skyrig down --stack twin"):  # ... and found stale by its PID
        holder = read_holder(tmp_path / LOCK_NAME)
        assert holder is not None and holder.pid == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_waits_for_the_holder_when_asked(tmp_path: Path) -> None:
    p = _holder_process(tmp_path)
    try:
        subprocess.Popen(["sh", "-c", f"sleep 1; kill -INT {p.pid}"])
        with run_lock(tmp_path, "skyrig up --stack twin", wait_s=30):
            pass
    finally:
        p.kill()
        p.wait()


def test_released_on_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError), run_lock(tmp_path, "x"):
        raise ValueError("boom")
    assert not (tmp_path / LOCK_NAME).exists()


def test_reused_pid_and_other_host(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_NAME
    # Our own live PID but another start time: the PID was reused, the lock is stale.
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "command": "old", "since": 0, "start_ticks": 1}))
    with run_lock(tmp_path, "new"):
        pass
    # Another host: its PID cannot be checked from here, so never taken over.
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "command": "skyrig up",
                                "since": time.time()}))
    with pytest.raises(RunLockError, match=r"elsewhere\.example"), run_lock(tmp_path, "new"):
        pass
    assert lock.exists()


def test_interrupt_writes_summary_and_says_what_is_left(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    summary: dict[str, object] = {"stack": "t"}
    with pytest.raises(RunInterrupted) as exc, guarded_run(
            tmp_path, "skyrig up --stack t", ["infra", "os", "platform"], console=console,
            summary=summary) as guard:
        guard.begin("infra")
        guard.end("infra")
        guard.begin("os")
        raise KeyboardInterrupt("SIGTERM")
    assert exc.value.exit_code == 130
    saved = json.loads((tmp_path / "last-up.json").read_text())
    assert saved["interrupted"]["done"] == ["infra"]
    assert saved["interrupted"]["interrupted"] == "os"
    assert saved["interrupted"]["left"] == ["platform"]
    out = console.export_text()
    assert "interrupted by SIGTERM" in out and "left: platform" in out
    assert not (tmp_path / LOCK_NAME).exists()


def test_write_atomic_leaves_old_or_new(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "state.json"
    write_atomic(f, "old")
    assert f.read_text() == "old" and (f.stat().st_mode & 0o777) == 0o600
    assert (f.parent.stat().st_mode & 0o777) == 0o700
    write_atomic(f, "new")
    assert f.read_text() == "new"
    assert [p.name for p in f.parent.iterdir()] == ["state.json"]
