"""Fixtures for the pvesim conformance suite (unmodified proxmoxer against a live PveSim)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from pvesim import PveSim
from pvesim.testing import proxmox_client, running_sim

FAST = {"qmcreate": 0.05, "qmclone": 0.2, "qmconfig": 0.02, "qmstart": 0.05, "qmstop": 0.05,
        "qmshutdown": 0.05, "qmreboot": 0.05, "qmdestroy": 0.05, "resize": 0.05,
        "qmtemplate": 0.05, "qmigrate": 0.05, "agent_boot": 0.0}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[PveSim]:
    with running_sim(tmp_path, task_durations=FAST, lock_timeout=1.0) as s:
        yield s


@pytest.fixture
def prox(sim: PveSim) -> ProxmoxAPI:
    """root@pam!skyrig API token (no privilege separation)."""
    return proxmox_client(sim)


@pytest.fixture
def root(sim: PveSim) -> ProxmoxAPI:
    """root@pam with a ticket (password login)."""
    return proxmox_client(sim, password=("root@pam", sim.root_password))


def wait(prox: ProxmoxAPI, upid: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll a task until it stops; return its status dict."""
    node = upid.split(":")[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st: dict[str, Any] = prox.nodes(node).tasks(upid).status.get()
        if st["status"] == "stopped":
            return st
        time.sleep(0.02)
    raise AssertionError(f"task {upid} still running after {timeout} s")


def wait_ok(prox: ProxmoxAPI, upid: str) -> dict[str, Any]:
    st = wait(prox, upid)
    assert st["exitstatus"] == "OK", st
    return st


def raises(fn: Any, *args: Any, **kw: Any) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        fn(*args, **kw)
    return info.value


def clone(prox: ProxmoxAPI, newid: int, node: str = "pve1", template: int = 9001,
          **kw: Any) -> dict[str, Any]:
    upid = prox.nodes(node).qemu(template).clone.post(newid=newid, **kw)
    return wait_ok(prox, upid)
