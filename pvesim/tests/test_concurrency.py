"""50 concurrent clients creating, configuring and deleting VMs leave a consistent state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from proxmoxer.core import ResourceException

from pvesim import PveSim
from pvesim.testing import proxmox_client, running_sim

from .conftest import FAST, raises, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLIENTS = 50


def _client_run(sim: PveSim, idx: int, results: dict[int, Any], upids: list[str],
                lock: threading.Lock) -> None:
    prox = proxmox_client(sim, timeout=60)
    node = "pve1" if idx % 2 else "pve2"
    mine: list[str] = []
    # nextid is not reserved: race for ids like real PVE clients do, retry on "already exists"
    for _ in range(60):
        vmid = int(prox.cluster.nextid.get())
        try:
            upid = prox.nodes(node).qemu.post(vmid=vmid, name=f"c{idx}", memory=512,
                                              scsi0="local-lvm:1", net0="virtio,bridge=vmbr0")
            break
        except ResourceException as exc:
            assert "already exists" in str(exc.content), exc
    else:
        raise AssertionError("no free vmid")
    mine.append(upid)
    assert wait(prox, upid, 60)["exitstatus"] == "OK"
    prox.nodes(node).qemu(vmid).config.put(cores=2, description=f"client {idx}")
    upid = prox.nodes(node).qemu(vmid).config.post(ipconfig0=f"ip=10.9.{idx}.2/24")
    mine.append(upid)
    assert wait(prox, upid, 60)["exitstatus"] == "OK"
    if idx % 3 == 0:
        upid = prox.nodes(node).qemu(vmid).delete(purge=1)
        mine.append(upid)
        assert wait(prox, upid, 60)["exitstatus"] == "OK"
        results[idx] = None
    else:
        results[idx] = (node, vmid)
    with lock:
        upids.extend(mine)


def test_fifty_concurrent_clients(sim: PveSim) -> None:
    results: dict[int, Any] = {}
    upids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            _client_run(sim, i, results, upids, lock)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors[:3]
    assert len(results) == CLIENTS
    kept = {vmid: node for node_vmid in results.values() if node_vmid
            for node, vmid in [node_vmid]}
    assert len(kept) == len([r for r in results.values() if r])       # no duplicated vmids
    prox = proxmox_client(sim)
    listed = {r["vmid"]: r["node"] for r in prox.cluster.resources.get(type="vm")
              if r["vmid"] < 9000}
    assert listed == kept                                             # nothing lost or extra
    for vmid, node in kept.items():
        conf = prox.nodes(node).qemu(vmid).config.get()
        assert conf["cores"] == 2 and "lock" not in conf
        assert conf["scsi0"].startswith(f"local-lvm:vm-{vmid}-disk-0")
    vols = {v["volid"] for n in ("pve1", "pve2")
            for v in prox.nodes(n).storage("local-lvm").content.get()}
    assert {f"local-lvm:vm-{vmid}-disk-0" for vmid in kept} <= vols
    assert len([v for v in vols if v.startswith("local-lvm:vm-") and "-disk-" in v]) == len(kept)
    assert len(upids) == len(set(upids)) == CLIENTS * 2 + CLIENTS // 3 + 1
    for upid in upids:                                                # every UPID resolvable
        st = prox.nodes(upid.split(":")[1]).tasks(upid).status.get()
        assert st["status"] == "stopped" and st["exitstatus"] == "OK"


def test_clones_share_the_template_lock_and_an_exclusive_writer_times_out(
        tmp_path: Path) -> None:
    """PVE clones a template under a shared flock: parallel clones run, while an exclusive
    writer of the template waits and fails with PVE's flock timeout."""
    with running_sim(tmp_path, task_durations={**FAST, "qmclone": 1.0}, lock_timeout=0.3) as sim:
        prox = proxmox_client(sim)
        upids = [prox.nodes("pve1").qemu(9001).clone.post(newid=n) for n in (100, 101)]
        exc = raises(prox.nodes("pve1").qemu(9001).config.put, description="x")
        assert exc.content == "can't lock file '/var/lock/qemu-server/lock-9001.conf' - got timeout"
        assert [wait(prox, u)["exitstatus"] for u in upids] == ["OK", "OK"]
        prox.nodes("pve1").qemu(9001).config.put(description="x")  # released afterwards


def test_parallel_clones_time_out_on_the_storage_allocation_lock(tmp_path: Path) -> None:
    durations = {**FAST, "qmclone": 0.0, "storage_alloc": 0.6}
    with running_sim(tmp_path, task_durations=durations, lock_timeout=0.3) as sim:
        prox = proxmox_client(sim)
        upids = [prox.nodes("pve1").qemu(9001).clone.post(newid=n) for n in (100, 101, 102)]
        statuses = sorted(wait(prox, u)["exitstatus"] for u in upids)
        assert "OK" in statuses
        failed = [s for s in statuses if s != "OK"]
        assert failed and set(failed) == {
            "clone failed: cfs-lock 'storage-local-lvm' error: got lock request timeout"}
        vmids = {int(v["vmid"]) for v in prox.nodes("pve1").qemu.get()}
        assert len(vmids & {100, 101, 102}) == 3 - len(failed)  # failed clones left nothing
