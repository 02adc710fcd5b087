"""Cluster PCI mappings against a real pvesim: the whole-file digest of ``mapping/pci.cfg``
(one run updates every mapping, also from parallel writers) and preflight errors per node."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from skyrig.errors import PreflightError
from skyrig.plan import Plan
from skyrig.plan.proxmox import PciMappingEntrySpec, PciMappingSpec
from skyrig.proxmox.apply import apply_plan
from skyrig.proxmox.client import PveClient, RetryPolicy
from skyrig.proxmox.mappings import MappingReconciler
from support import endpoint_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def mapping(mid: str, node: str, description: str | None = None) -> PciMappingSpec:
    return PciMappingSpec(id=mid, description=description or mid, model="rtx-a4000", entries=(
        PciMappingEntrySpec(node=node, path="0000:01:00", vendor_device="10de:24b0"),))


def plan_of(*specs: PciMappingSpec) -> Plan:
    return Plan(stack="t", environment="local", inventory={}, vms=[],  # type: ignore[arg-type]
                pci_mappings=list(specs))


def client_of(sim: Any) -> PveClient:
    return PveClient(endpoint_of(sim), retry=RetryPolicy(attempts=2, backoff_s=0.05))


def groups(client: PveClient) -> dict[str, set[str]]:
    return {r["id"]: {p for m in r["map"] for p in m.split(",") if p.startswith("iommugroup")}
            for r in client.get("cluster/mapping/pci")}


def test_kernel_update_changes_every_group_one_run_updates_all(tmp_path: Path) -> None:
    """Issue 13 case 1: new IOMMU group numbers on both nodes → both mappings in one run."""
    from pvesim.testing import running_sim

    two = plan_of(mapping("a4000-pve1-0", "pve1"), mapping("a4000-pve2-0", "pve2"))
    with running_sim(tmp_path, hardware="local") as sim:
        assert apply_plan(two, client_of(sim)).created == [
            "pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0"]
    text = resources.files("pvesim").joinpath("profiles/local.yaml").read_text()
    moved = tmp_path / "after-kernel-update.yaml"
    moved.write_text(text.replace("iommugroup: 14", "iommugroup: 24"))
    with running_sim(tmp_path, hardware=moved) as sim:
        client = client_of(sim)
        res = apply_plan(two, client)
        assert res.updated == ["pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0"]
        assert groups(client) == {"a4000-pve1-0": {"iommugroup=24"},
                                  "a4000-pve2-0": {"iommugroup=24"}}
        assert not apply_plan(two, client).changed


def test_create_and_update_in_one_run(sim: Any) -> None:
    client = client_of(sim)
    apply_plan(plan_of(mapping("ma", "pve1"), mapping("mb", "pve2")), client)
    res = apply_plan(plan_of(mapping("ma", "pve1", "new a"), mapping("mb", "pve2", "new b"),
                             mapping("mc", "pve1")), client)
    assert (res.created, res.updated) == (["pci-mapping/mc"],
                                          ["pci-mapping/ma", "pci-mapping/mb"])
    live = {r["id"]: r.get("description") for r in client.get("cluster/mapping/pci")}
    assert live == {"ma": "new a", "mb": "new b", "mc": "mc"}


def test_parallel_writers_in_one_process(sim: Any) -> None:
    """The Pulumi path runs one dynamic provider per mapping in parallel, each with its own
    reconciler that listed the mappings (and their digests) before anyone wrote."""
    client = client_of(sim)
    ids = [f"m{i}" for i in range(6)]
    apply_plan(plan_of(*(mapping(i, "pve1") for i in ids)), client)
    readers = []
    for i in ids:
        mr = MappingReconciler(client_of(sim))
        mr.live()  # every reader holds the same, soon stale digest
        readers.append((mr, mapping(i, "pve1", f"{i} v2")))
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(readers))

    def write(mr: MappingReconciler, spec: PciMappingSpec) -> None:
        try:
            barrier.wait()
            assert mr.ensure(spec, mr.measure([spec])[spec.id]).action == "updated"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=r) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {r["id"]: r["description"] for r in client.get("cluster/mapping/pci")} == {
        i: f"{i} v2" for i in ids}


def test_stale_digest_error_is_retried_once_after_rediff(sim: Any) -> None:
    """Another writer outside this process changes the file between our read and our write."""
    client = client_of(sim)
    apply_plan(plan_of(mapping("ma", "pve1"), mapping("mb", "pve2")), client)
    mr = MappingReconciler(client)
    spec = mapping("ma", "pve1", "a v2")
    measured = mr.measure([spec])[spec.id]
    real = client.request

    def racing(method: str, path: str, *args: Any, **kw: Any) -> Any:
        out = real(method, path, *args, **kw)
        if method == "GET" and path == "cluster/mapping/pci/ma" and not racing.done:  # type: ignore[attr-defined]
            racing.done = True  # type: ignore[attr-defined]
            real("PUT", "cluster/mapping/pci/mb", {"description": "touched by an admin"})
        return out

    racing.done = False  # type: ignore[attr-defined]
    client.request = racing  # type: ignore[method-assign]
    assert mr.ensure(spec, measured).action == "updated"
    live = {r["id"]: r["description"] for r in client.get("cluster/mapping/pci")}
    assert live == {"ma": "a v2", "mb": "touched by an admin"}


def test_every_node_error_lands_in_the_preflight_report(sim: Any) -> None:
    """Issue 13 case 5: an unknown node and an offline node are preflight problems."""
    sim.set_faults({"requests": [{"method": "GET", "path": "/nodes/pve2/hardware/pci",
                                  "status": 595, "message": "No route to host"}]})
    client = PveClient(endpoint_of(sim), retry=RetryPolicy(attempts=1, backoff_s=0.01))
    with pytest.raises(PreflightError) as info:
        apply_plan(plan_of(mapping("ok", "pve1"), mapping("ghost", "pve9"),
                           mapping("down", "pve2")), client)
    problems = {p["mapping"]: (p["problem"], p["node"]) for p in info.value.report}
    assert problems == {"ghost": ("node missing", "pve9"), "down": ("node unreachable", "pve2")}
    assert "No route to host" in str(info.value) and "pve9" in str(info.value)
    sim.set_faults(None)
    assert client.get("cluster/mapping/pci") == []  # nothing was written


# ---------------------------------------------------------------- ownership (issue 13 case 2)

def foreign_vm(client: PveClient, mid: str, vmid: int = 401, start: bool = False) -> None:
    """A VM skyrig does not own that passes a mapping through (an administrator made both)."""
    from skyrig.proxmox.tasks import wait_for_task

    upid = client.post("nodes/pve1/qemu", vmid=vmid, name="admins-vm", machine="q35",
                       memory=2048, balloon=0, hostpci0=f"mapping={mid},pcie=1")
    wait_for_task(client, upid)
    if start:
        wait_for_task(client, client.post(f"nodes/pve1/qemu/{vmid}/status/start"))


def owned_mapping(mid: str, node: str, **kw: Any) -> PciMappingSpec:
    from dataclasses import replace

    return replace(mapping(mid, node), owner_tag="skyrig-t", **kw)


def test_foreign_mapping_is_not_adopted_unless_the_stack_says_so(sim: Any) -> None:
    from skyrig.errors import OwnershipError

    client = client_of(sim)
    client.post("cluster/mapping/pci", id="a4000-pve1-0", description="made by hand",
                map=["node=pve1,path=0000:01:00,id=10de:24b0,iommugroup=14"])
    foreign_vm(client, "a4000-pve1-0")
    with pytest.raises(OwnershipError) as info:
        apply_plan(plan_of(owned_mapping("a4000-pve1-0", "pve1")), client)
    assert "admins-vm (vmid 401 on pve1)" in str(info.value)
    assert "adopt_existing" in str(info.value)
    (live,) = client.get("cluster/mapping/pci")
    assert live["description"] == "made by hand"  # untouched
    res = apply_plan(plan_of(owned_mapping("a4000-pve1-0", "pve1", adopt_existing=True)), client)
    assert res.updated == ["pci-mapping/a4000-pve1-0"]
    (live,) = client.get("cluster/mapping/pci")
    assert live["description"] == "a4000-pve1-0 [owner: skyrig-t]"


def test_down_never_deletes_a_mapping_a_vm_uses_nor_a_foreign_one(sim: Any,
                                                                  tmp_path: Path) -> None:
    from skyrig.proxmox.apply import destroy_plan
    from skyrig.proxmox.state import ProvisionRecord

    client = client_of(sim)
    client.post("cluster/mapping/pci", id="by-hand", description="made by hand",
                map=["node=pve2,path=0000:01:00,id=10de:24b0,iommugroup=14"])
    record = ProvisionRecord(tmp_path / "provision.json")
    plan = plan_of(owned_mapping("ours", "pve1"), owned_mapping("by-hand", "pve2"))
    with pytest.raises(Exception, match="not created by this stack"):
        apply_plan(plan, client, record=record)
    plan = plan_of(owned_mapping("ours", "pve1"))
    apply_plan(plan, client, record=record)
    foreign_vm(client, "ours")
    gone = destroy_plan(plan_of(owned_mapping("ours", "pve1"), owned_mapping("by-hand", "pve2")),
                        client, record=record)
    assert gone.deleted == []
    assert "still used by admins-vm (vmid 401 on pve1)" in gone.details["pci-mapping/ours"][0]
    assert "left alone" in gone.details["pci-mapping/by-hand"][0]
    assert {r["id"] for r in client.get("cluster/mapping/pci")} == {"ours", "by-hand"}
    assert record.mappings() == ["ours"]  # still ours: a later down deletes it
    client.delete("nodes/pve1/qemu/401")
    sim.wait_idle()
    again = destroy_plan(plan, client, record=record)
    assert again.deleted == ["pci-mapping/ours"] and record.mappings() == []


def test_vms_using_a_remapped_mapping_are_pending_reboot(tmp_path: Path) -> None:
    from pvesim.testing import running_sim

    plan = plan_of(owned_mapping("a4000-pve1-0", "pve1"))
    with running_sim(tmp_path, hardware="local", task_durations={"qmstart": 0.01}) as sim:
        client = client_of(sim)
        apply_plan(plan, client)
        foreign_vm(client, "a4000-pve1-0", start=True)
    text = resources.files("pvesim").joinpath("profiles/local.yaml").read_text()
    moved = tmp_path / "after-kernel-update.yaml"
    moved.write_text(text.replace("iommugroup: 14", "iommugroup: 24"))
    with running_sim(tmp_path, hardware=moved) as sim:
        client = client_of(sim)
        if client.get("nodes/pve1/qemu/401/status/current")["status"] != "running":
            from skyrig.proxmox.tasks import wait_for_task

            wait_for_task(client, client.post("nodes/pve1/qemu/401/status/start"))
        res = apply_plan(plan, client)
        assert res.updated == ["pci-mapping/a4000-pve1-0"]
        assert res.pending_reboot == ["admins-vm"]
        assert "PCI mapping a4000-pve1-0 changed" in res.details["vm/admins-vm"][0]
