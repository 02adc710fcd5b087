"""Half-made clones (issue 13 case 3) against a real pvesim: a clone still running is waited
for; a stale ``lock: clone`` placeholder is removed when skyrig provably made it, otherwise the
error gives the cleanup commands; re-runs converge and ``down`` removes what skyrig half-made."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from skyrig.errors import ProxmoxError
from skyrig.plan import build_plan
from skyrig.proxmox.apply import ApplyFailed, apply_plan, destroy_plan
from skyrig.proxmox.client import PveClient, RetryPolicy
from skyrig.proxmox.state import ProvisionRecord
from skyrig.proxmox.vms import VmReconciler
from support import endpoint_of, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SLOW_CLONE = {"qmclone": 1.5, "qmconfig": 0.02, "qmstart": 0.02, "qmstop": 0.02,
              "qmshutdown": 0.02, "qmreboot": 0.02, "qmdestroy": 0.02, "resize": 0.02,
              "agent_boot": 0.02}


def client_of(sim: Any) -> PveClient:
    return PveClient(endpoint_of(sim), retry=RetryPolicy(attempts=2, backoff_s=0.05))


def record_of(root: Path) -> ProvisionRecord:
    return ProvisionRecord(stack(root, "local").state_dir / "provision.json")


def test_a_clone_still_running_is_waited_for(tmp_path: Path, root: Path) -> None:
    """Case A: another `up` (or a task that outlived a timeout) is still cloning VM 301."""
    from pvesim.testing import running_sim

    plan = build_plan(stack(root, "local"))
    spec = next(v for v in plan.vms if v.vmid == 301)
    with running_sim(tmp_path, hardware="local", task_durations=SLOW_CLONE) as sim:
        client = client_of(sim)
        earlier = threading.Thread(target=VmReconciler(client_of(sim), task_timeout_s=20).clone,
                                   args=(spec,))
        earlier.start()
        try:
            while (sim.vm(301) or {}).get("conf", {}).get("lock") != "clone":
                pass
            res = apply_plan(plan, client, task_timeout_s=20, record=record_of(root))
        finally:
            earlier.join()
        assert sorted(res.created + res.updated) == [
            "pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0", "vm/gpu-w-1", "vm/gpu-w-2"]
        assert sim.vm(301)["status"] == "running" and "skyrig-local" in sim.vm(301)["conf"]["tags"]


def _interrupted_clone(tmp_path: Path, root: Path, record: bool) -> None:
    """Start skyrig's clone of 301 (recording it when ``record``), stop pvesim mid-clone."""
    from pvesim.testing import running_sim

    plan = build_plan(stack(root, "local"))
    spec = next(v for v in plan.vms if v.vmid == 301)
    with running_sim(tmp_path, hardware="local", task_durations=SLOW_CLONE) as sim:
        params = dict(spec.clone_params)
        params.pop("target")
        if record:  # what apply_plan's before_clone hook records right before the clone
            record_of(root).put_vm(spec)
        client_of(sim).post("nodes/pve1/qemu/9001/clone", **params)
        assert sim.vm(301)["conf"] == {"lock": "clone"}


def _admin_cleanup(sim: Any, vmid: int) -> None:
    """What the error tells the administrator to run (``qm unlock`` + ``qm destroy``), as
    root@pam, the only user PVE lets skip a config lock."""
    from pvesim.testing import proxmox_client

    root = proxmox_client(sim, password=("root@pam", sim.root_password))
    upid = root.nodes("pve1").qemu(vmid).delete(skiplock=1, purge=1,
                                                **{"destroy-unreferenced-disks": 1})
    from skyrig.proxmox.tasks import wait_for_task

    wait_for_task(client_of(sim), upid)


def test_stale_placeholder_skyrig_made(tmp_path: Path, root: Path) -> None:
    """Case B: pvesim stopped mid-clone and restarted: `{lock: clone}` and no task. The record
    proves it is skyrig's: the error says so and gives the exact commands (an API token may
    not skip a config lock in PVE); after them, the re-run converges."""
    from pvesim.testing import running_sim

    _interrupted_clone(tmp_path, root, record=True)
    with running_sim(tmp_path, hardware="local", task_durations=SLOW_CLONE) as sim:
        assert sim.vm(301)["conf"].get("lock") == "clone"
        client = client_of(sim)
        plan = build_plan(stack(root, "local"))
        with pytest.raises(ApplyFailed) as info:
            apply_plan(plan, client, task_timeout_s=20, record=record_of(root))
        err = str(info.value.failures["vm/gpu-w-1"])
        assert "stale clone placeholder skyrig made" in err and "not owned" not in err
        assert "qm unlock 301 && qm destroy 301 --purge --destroy-unreferenced-disks 1" in err
        _admin_cleanup(sim, 301)
        res = apply_plan(plan, client, task_timeout_s=20, record=record_of(root))
        assert "vm/gpu-w-1" in res.created
        assert sim.vm(301)["conf"].get("lock") is None and sim.vm(301)["status"] == "running"
        assert not apply_plan(plan, client, task_timeout_s=20, record=record_of(root)).changed


def test_root_removes_a_stale_placeholder_itself(tmp_path: Path, root: Path) -> None:
    """With root@pam (PVE's only user that may skip a lock) skyrig removes its own stale
    placeholder and the same run converges; its half-copied volumes go with it."""
    from pvesim.testing import running_sim

    _interrupted_clone(tmp_path, root, record=True)
    with running_sim(tmp_path, hardware="local", task_durations=SLOW_CLONE) as sim:
        vr = VmReconciler(client_of(sim), task_timeout_s=20)
        real = vr.c.request

        def as_root(method: str, path: str, *a: Any, **kw: Any) -> Any:
            if method == "DELETE":
                from pvesim.testing import proxmox_client

                node, vmid = path.split("/")[1], path.split("/")[3]
                params = a[0] if a else {}
                return proxmox_client(sim, password=("root@pam", sim.root_password)).nodes(
                    node).qemu(vmid).delete(**params)
            return real(method, path, *a, **kw)

        vr.c.request = as_root  # type: ignore[method-assign]
        state = vr.read(301)
        assert state is not None
        assert vr.settle_clone(state, 9001, "gpu-w-1", "", recorded=True) is None
        sim.wait_idle()
        assert sim.vm(301) is None
        assert not [n for n in sim.backend.data["volumes"]["pve1"]["local-lvm"]
                    if n.startswith("vm-301-")]


def test_stale_placeholder_not_provably_ours_gives_cleanup_commands(
        tmp_path: Path, root: Path) -> None:
    from pvesim.testing import running_sim

    _interrupted_clone(tmp_path, root, record=False)
    with running_sim(tmp_path, hardware="local", task_durations=SLOW_CLONE) as sim:
        plan = build_plan(stack(root, "local"))
        with pytest.raises(ApplyFailed) as info:
            apply_plan(plan, client_of(sim), task_timeout_s=20, record=record_of(root))
        err = info.value.failures["vm/gpu-w-1"]
        assert isinstance(err, ProxmoxError) and "stale clone placeholder" in str(err)
        assert "qm unlock 301 && qm destroy 301 --purge" in str(err)
        assert sim.vm(301)["conf"] == {"lock": "clone"}  # left alone


def test_down_reports_a_placeholder_skyrig_half_made(tmp_path: Path, root: Path) -> None:
    """`down` names the placeholder as skyrig's, with the cleanup commands, never "not owned";
    after them it completes."""
    from pvesim.testing import running_sim

    _interrupted_clone(tmp_path, root, record=True)
    with running_sim(tmp_path, hardware="local", task_durations=SLOW_CLONE) as sim:
        plan = build_plan(stack(root, "local"))
        with pytest.raises(ApplyFailed) as info:
            destroy_plan(plan, client_of(sim), task_timeout_s=20, record=record_of(root))
        assert "qm unlock 301" in str(info.value.failures["vm/gpu-w-1"])
        _admin_cleanup(sim, 301)
        gone = destroy_plan(plan, client_of(sim), task_timeout_s=20, record=record_of(root))
        assert sim.vm(301) is None and "vm/gpu-w-1" not in gone.unchanged


def test_clones_that_lose_a_lock_race_are_retried(tmp_path: Path, root: Path) -> None:
    """Parallel clones onto one storage: the allocation lock times out for some (PVE's
    ``cfs-lock 'storage-…' error: got lock request timeout``); skyrig re-runs those clones."""
    from dataclasses import replace

    from pvesim.testing import running_sim

    spec = next(v for v in build_plan(stack(root, "local")).vms if v.vmid == 301)
    specs = [replace(spec, vmid=n, name=f"w{n}") for n in (301, 303, 304)]
    durations = {**SLOW_CLONE, "qmclone": 0.0, "storage_alloc": 0.3}
    with running_sim(tmp_path, hardware="local", task_durations=durations,
                     lock_timeout=0.2) as sim:
        errors: list[BaseException] = []

        def one(s: Any) -> None:
            try:
                VmReconciler(client_of(sim), task_timeout_s=20).clone(s)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(s,)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(sim.vm(s.vmid)["conf"].get("name") == s.name for s in specs)
        failed = [t for t in sim.backend.data["tasks"].values()
                  if t["type"] == "qmclone" and "lock request timeout" in t.get("exitstatus", "")]
        assert failed  # the race did happen, and was retried
