"""Runbooks run for real against the local stack's Proxmox (pvesim over HTTPS): the
pending-reboot runbook applies the pending change with exactly one reboot; a failed step runs
the rollbacks in reverse; a run resumes with ``--from``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyrig.plan import build_plan
from skyrig.proxmox.apply import apply_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.endpoint import PVESIM_ENV, Endpoint
from skyrig.runbooks.execute import execute, read_record
from skyrig.runbooks.parse import find_runbook, parse_runbook
from support import edit_stack, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def provision_with_pending(root: Path, client: PveClient) -> None:
    """The local stack's VMs, running, then a cores change left pending (policy never)."""
    apply_plan(build_plan(stack(root, "local")), client, parallelism=2, task_timeout_s=20)
    edit_stack(root, "local", "cores: 4", "cores: 6")
    res = apply_plan(build_plan(stack(root, "local")), client, parallelism=2, task_timeout_s=20)
    assert sorted(res.pending_reboot) == ["gpu-w-1", "gpu-w-2"]


def reboots(client: PveClient, node: str, vmid: int) -> list[dict[str, Any]]:
    return list(client.get(f"nodes/{node}/tasks", vmid=vmid, typefilter="qmreboot", limit=100))


def env_for(endpoint: Endpoint) -> dict[str, str]:
    return {PVESIM_ENV: json.dumps(endpoint.to_dict())}


def test_pending_reboot_runbook_applies_the_change_then_resumes_after_a_failure(
        sim: Any, endpoint: Endpoint, client: PveClient, root: Path) -> None:
    provision_with_pending(root, client)
    st = stack(root, "local")
    book = find_runbook(RUNBOOKS, "pending-reboot")

    res = execute(book, st, variables={"vmid": "301"}, yes=True, env=env_for(endpoint))
    assert res.status == "succeeded", [(s.step, s.status, s.output_tail) for s in res.steps]
    vm = sim.vm(301)
    assert vm["conf"]["cores"] == "6" and not vm["pending"] and vm["status"] == "running"
    assert len(reboots(client, "pve1", 301)) == 1
    assert sim.vm(302)["pending"]["cores"] == "6"  # the other VM is untouched
    lines = read_record(res.record)
    assert lines[0]["event"] == "start" and lines[-1]["status"] == "succeeded"
    steps = {ln["step"]: ln for ln in lines if ln["event"] == "step"}
    assert steps["reboot"]["command"] == ["skyrig", "vm", "reboot", "--stack", "local",
                                          "--vmid", "301"]
    assert steps["reboot"]["exit_code"] == 0 and steps["drain"]["status"] == "confirmed"
    assert "pending: cores" in steps["has_pending"]["output_tail"]

    # The second VM: the Proxmox reboot task fails once → the run stops, the rollback runs.
    sim.set_faults({"tasks": [{"type": "qmreboot", "exitstatus": "reboot failed: injected",
                               "times": 1}]})
    failed = execute(book, st, variables={"vmid": "302"}, yes=True, env=env_for(endpoint))
    assert failed.status == "failed" and failed.failed_step == "reboot" and failed.exit_code == 1
    assert failed.rolled_back == ["start_again"]
    assert "reboot failed: injected" in next(s for s in failed.steps if s.step == "reboot"
                                             ).output_tail
    assert sim.vm(302)["pending"]["cores"] == "6"
    assert not any(s.step == "applied" for s in failed.steps)

    # Resume at the failed step: the checks before it are skipped, the reboot now applies.
    resumed = execute(book, st, variables={"vmid": "302"}, yes=True, start_from="reboot",
                      env=env_for(endpoint))
    assert resumed.status == "succeeded"
    assert [(s.step, s.status) for s in resumed.steps if s.kind != "rollback"] == [
        ("vm_running", "skipped"), ("has_pending", "skipped"), ("drain", "skipped"),
        ("reboot", "ok"), ("applied", "ok"), ("uncordon", "confirmed")]
    assert sim.vm(302)["conf"]["cores"] == "6" and not sim.vm(302)["pending"]
    assert resumed.record != failed.record
    ok = [t for t in reboots(client, "pve2", 302) if t.get("status") == "OK"]
    assert len(ok) == 1


MAINTENANCE = """---
id: maintenance
title: Stop a VM, then a check that fails
alerts: []
stacks: [local]
preconditions: []
risk: low
vars: {vmid: null}
---
```bash check name=running
skyrig vm status --stack {{ stack }} --vmid {{ vmid }} --expect-status running
```
```bash rollback name=restart
skyrig vm start --stack {{ stack }} --vmid {{ vmid }}
```
```bash run name=shutdown
skyrig vm shutdown --stack {{ stack }} --vmid {{ vmid }}
```
```bash rollback name=note
printf rolled-back
```
```bash check name=must_be_pending
skyrig vm status --stack {{ stack }} --vmid {{ vmid }} --expect-pending
```
```bash run name=never_reached
skyrig vm start --stack {{ stack }} --vmid {{ vmid }}
```
"""


def test_a_failing_check_runs_the_rollbacks_in_reverse(sim: Any, endpoint: Endpoint,
                                                       client: PveClient, root: Path,
                                                       tmp_path: Path) -> None:
    apply_plan(build_plan(stack(root, "local")), client, parallelism=2, task_timeout_s=20)
    (tmp_path / "maintenance.md").write_text(MAINTENANCE)
    book = parse_runbook(tmp_path / "maintenance.md")
    res = execute(book, stack(root, "local"), variables={"vmid": "301"}, env=env_for(endpoint))
    assert res.status == "failed" and res.failed_step == "must_be_pending"
    assert res.rolled_back == ["note", "restart"]
    assert sim.vm(301)["status"] == "running"  # the rollback started it again
    assert not any(s.step == "never_reached" for s in res.steps)
    lines = [ln for ln in read_record(res.record) if ln["event"] == "step"]
    assert [(ln["step"], ln["status"]) for ln in lines] == [
        ("running", "ok"), ("shutdown", "ok"), ("must_be_pending", "failed"),
        ("note", "ok"), ("restart", "ok")]
    assert lines[2]["exit_code"] == 1 and "no pending changes" in lines[2]["output_tail"]
    assert lines[3]["rollback_for"] == "must_be_pending"
