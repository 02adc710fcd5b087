"""Ctrl-C during a direct apply against a real pvesim: queued VMs are not started, the one in
flight finishes its PVE task, and a re-run converges (creates what was left, touches nothing
else)."""

from __future__ import annotations

import _thread
from pathlib import Path
from typing import Any

import pytest

from skyrig.plan import build_plan
from skyrig.proxmox.apply import apply_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.state import ProvisionRecord
from support import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_interrupt_cancels_queued_vms_and_rerun_converges(
        sim: Any, client: PveClient, root: Path) -> None:
    st = stack(root, "local")
    plan = build_plan(st)
    assert len(plan.vms) == 2
    events: list[tuple[str, str]] = []
    interrupted = False

    def progress(name: str, status: str) -> None:
        nonlocal interrupted
        events.append((name, status))
        if not interrupted:  # the first VM has started: the operator presses Ctrl-C
            interrupted = True
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        apply_plan(plan, client, parallelism=1, task_timeout_s=20,
                   record=ProvisionRecord(st.state_dir / "provision.json"), progress=progress)

    first = events[0][0]
    left = next(vm.name for vm in plan.vms if vm.name != first)
    assert (left, "not started (interrupted)") in events
    assert not any(name == left and status != "not started (interrupted)"
                   for name, status in events)
    vmids = {vm.name: vm.vmid for vm in plan.vms}
    assert sim.vm(vmids[first]) is not None  # the VM in flight was finished, not abandoned
    assert sim.vm(vmids[left]) is None        # the queued one was never cloned

    again = apply_plan(plan, client, parallelism=1, task_timeout_s=20,
                       record=ProvisionRecord(st.state_dir / "provision.json"))
    assert again.created == [f"vm/{left}"]
    assert f"vm/{first}" in again.unchanged
