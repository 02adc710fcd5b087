"""Reconcile core and direct apply against a real pvesim: create → no-op → pending reboot →
mapping change → delete; ownership; import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from skyrig.errors import OwnershipError
from skyrig.plan import build_plan
from skyrig.proxmox.apply import ApplyFailed, apply_plan, destroy_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.endpoint import Endpoint
from skyrig.proxmox.state import ProvisionRecord
from skyrig.workflows.provision import deprovision, preview, provision
from support import edit_stack, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def apply(root: Path, client: PveClient, policy: str = "never", **kw: Any) -> Any:
    st = stack(root, "local")
    return apply_plan(build_plan(st), client, parallelism=2, reboot_policy=policy,  # type: ignore[arg-type]
                      task_timeout_s=20, record=ProvisionRecord(st.state_dir / "provision.json"),
                      **kw)


def test_lifecycle(sim: Any, client: PveClient, root: Path) -> None:
    first = apply(root, client)
    assert first.created == ["pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0",
                             "vm/gpu-w-1", "vm/gpu-w-2"]
    assert first.ips == {"gpu-w-1": "127.0.10.31", "gpu-w-2": "127.0.10.32"}
    vm = sim.vm(301)
    assert vm["status"] == "running" and vm["node"] == "pve1"
    conf = vm["conf"]
    assert (conf["machine"], conf["bios"], conf["cpu"], conf["balloon"]) == (
        "q35", "ovmf", "host", "0")
    assert conf["hostpci0"] == "mapping=a4000-pve1-0,pcie=1"
    assert "efitype=4m" in conf["efidisk0"] and "size=40G" in conf["scsi0"]
    assert "skyrig-local" in conf["tags"]

    # second run: nothing changes, only reads are sent
    sim.reset_request_counts()
    again = apply(root, client)
    assert not again.changed and "no changes" in again.summary()
    assert set(again.api_calls) == {"GET"}
    assert {m for m, _ in sim.request_counts()} == {"GET"}
    assert again.api_calls["GET"] == sum(sim.request_counts().values()) <= 10

    # cores on running VMs: pending reboot under `never`, applied under `when-required`
    edit_stack(root, "local", "cores: 4", "cores: 6")
    pending = apply(root, client, "never")
    assert pending.updated == ["vm/gpu-w-1", "vm/gpu-w-2"]
    assert pending.pending_reboot == ["gpu-w-1", "gpu-w-2"] or sorted(
        pending.pending_reboot) == ["gpu-w-1", "gpu-w-2"]
    assert sim.vm(301)["conf"]["cores"] == "4" and sim.vm(301)["pending"]["cores"] == "6"
    still = apply(root, client, "never")  # reported again, not silently dropped
    assert sorted(still.pending_reboot) == ["gpu-w-1", "gpu-w-2"] and not still.changed
    rebooted = apply(root, client, "when-required")
    assert sorted(rebooted.rebooted) == ["gpu-w-1", "gpu-w-2"] and not rebooted.pending_reboot
    assert sim.vm(301)["conf"]["cores"] == "6" and not sim.vm(301)["pending"]

    # a changed GPU mapping on a running VM is pending until reboot, never ignored
    edit_stack(root, "local", "a4000-pve1-0", "a4000-pve1-x", count=10)
    moved = apply(root, client, "never")
    assert "pci-mapping/a4000-pve1-x" in moved.created
    assert "pci-mapping/a4000-pve1-0" in moved.deleted
    assert moved.pending_reboot == ["gpu-w-1"]
    assert sim.vm(301)["pending"]["hostpci0"] == "mapping=a4000-pve1-x,pcie=1"
    applied = apply(root, client, "when-required")
    assert applied.rebooted == ["gpu-w-1"]
    assert sim.vm(301)["conf"]["hostpci0"] == "mapping=a4000-pve1-x,pcie=1"

    # delete: graceful shutdown → destroy with purge; mappings removed too
    st = stack(root, "local")
    gone = destroy_plan(build_plan(st), client, task_timeout_s=20,
                        record=ProvisionRecord(st.state_dir / "provision.json"))
    assert gone.deleted == ["pci-mapping/a4000-pve1-x", "pci-mapping/a4000-pve2-0",
                            "vm/gpu-w-1", "vm/gpu-w-2"]
    assert sim.vm(301) is None and sim.vm(302) is None
    assert sim.vm(9001) is not None  # templates untouched
    assert client.get("cluster/mapping/pci") == []


def _foreign_vm(client: PveClient, vmid: int = 301) -> None:
    """A VM someone else made at one of the stack's vmids (no skyrig tag)."""
    from skyrig.proxmox.tasks import wait_for_task

    upid = client.post("nodes/pve1/qemu/9001/clone", newid=vmid, name="someone-elses", full=1)
    wait_for_task(client, upid)


def test_vms_the_stack_does_not_own_are_never_touched(sim: Any, client: PveClient,
                                                      root: Path) -> None:
    _foreign_vm(client)
    before = sim.vm(301)
    with pytest.raises(ApplyFailed) as info:
        apply(root, client)
    assert isinstance(info.value.failures["vm/gpu-w-1"], OwnershipError)
    assert "not owned by this stack" in str(info.value)
    assert info.value.result.created == ["pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0",
                                         "vm/gpu-w-2"]
    assert sim.vm(301) == before
    st = stack(root, "local")
    gone = destroy_plan(build_plan(st), client, task_timeout_s=20)
    assert "vm/gpu-w-1" not in gone.deleted and "vm/gpu-w-2" in gone.deleted
    assert sim.vm(301) == before
    assert "not owned" in gone.details["vm/gpu-w-1"][0]


def test_import_by_vmid_then_apply_adopts_the_vm(sim: Any, client: PveClient,
                                                 root: Path) -> None:
    from skyrig.proxmox.vms import VmReconciler

    _foreign_vm(client)
    state = VmReconciler(client).import_vm(301, "skyrig-local")
    assert "skyrig-local" in state.tags
    res = apply(root, client)
    assert "vm/gpu-w-1" in res.updated and "vm/gpu-w-2" in res.created
    assert sim.vm(301)["conf"]["name"] == "gpu-w-1"
    assert sim.vm(301)["status"] == "running"


def test_apply_stack_direct_path_reports_and_is_idempotent(
        sim: Any, endpoint: Endpoint, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("skyrig.workflows.provision.pulumi_cli", lambda: None)
    console = Console(record=True, width=120)
    st = stack(root, "local")
    first = provision(st, build_plan(st), console=console, endpoint_override=endpoint)
    assert first.path == "direct" and first.changed
    second = provision(st, build_plan(st), console=console, endpoint_override=endpoint)
    assert not second.changed
    text = console.export_text()
    assert "direct apply" in text and "Pulumi CLI not found" in text
    assert "no changes" in text
    assert (st.state_dir / "provision.json").is_file()
    assert endpoint.token_secret not in text


def test_preview_shows_drift_and_destroy_stack_removes_everything(
        sim: Any, endpoint: Endpoint, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("skyrig.workflows.provision.pulumi_cli", lambda: None)
    st = stack(root, "local")
    before = preview(st, build_plan(st), endpoint_override=endpoint)
    assert before["vm/gpu-w-1"] == ["create"] and before["pci-mapping/a4000-pve1-0"] == ["*"]
    provision(st, build_plan(st), console=Console(record=True), endpoint_override=endpoint)
    assert all(v == [] for v in preview(st, build_plan(st), endpoint_override=endpoint).values())
    with sim.backend.store.lock:  # someone edits the VM by hand
        sim.backend.data["vms"]["301"]["conf"]["cores"] = "2"
    drift = preview(st, build_plan(st), endpoint_override=endpoint)
    assert drift["vm/gpu-w-1"] == ["cores (reboot)"] and drift["vm/gpu-w-2"] == []
    console = Console(record=True, width=120)
    gone = deprovision(st, build_plan(st), console=console, endpoint_override=endpoint)
    assert gone.deleted == ["pci-mapping/a4000-pve1-0", "pci-mapping/a4000-pve2-0",
                            "vm/gpu-w-1", "vm/gpu-w-2"]
    assert "4 resources deleted" in console.export_text()
    assert sim.vm(301) is None and sim.vm(302) is None


def test_vm_that_leaves_the_stack_is_deleted(sim: Any, client: PveClient, root: Path) -> None:
    apply(root, client)
    edit_stack(root, "local", """    - name: gpu-w-2
      vmid: 302
      node: pve2
      class: gpu-worker
      ip: 127.0.10.32
      gpus: [a4000-pve2-0]
      roles: [ray_worker]
""", "")
    res = apply(root, client)
    assert res.deleted == ["vm/gpu-w-2"] and sim.vm(302) is None
    assert sim.vm(301)["status"] == "running"
