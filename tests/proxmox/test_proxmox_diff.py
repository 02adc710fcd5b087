"""Diff semantics (pure): normalisation of what PVE writes back, and change classification."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from skyrig.plan import build_plan
from skyrig.plan.proxmox import GpuVmSpec
from skyrig.proxmox.vmdiff import diff_config, kind_of, same
from support import make_root, stack

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> GpuVmSpec:
    root = make_root(tmp_path_factory.mktemp("diff"))
    return build_plan(stack(root, "prod")).vms[3]  # gpu-w-01: GPU, NUMA, ssh keys, VLAN


def live_from(spec: GpuVmSpec) -> dict[str, object]:
    """What PVE shows after skyrig configured ``spec`` (MACs, volumes, sizes added)."""
    live: dict[str, object] = {k: v for k, v in spec.config.items()}
    live["net0"] = "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,mtu=9000,tag=42"
    live["efidisk0"] = "local-lvm:vm-301-disk-1,efitype=4m,pre-enrolled-keys=0,size=4M"
    live["scsi0"] = "local-lvm:vm-301-disk-0,iothread=1,size=400G"
    live["tags"] = ";".join(reversed(str(spec.config["tags"]).split(";")))
    live["sshkeys"] = str(spec.config["sshkeys"]).replace("%40", "@")
    live["cpu"] = "cputype=host"
    live["hostpci0"] = "pcie=1,mapping=a4000-pve04-a"
    live["vmgenid"] = "d1b0c5a4-0000-4000-8000-000000000000"
    return live


def test_what_pve_writes_back_is_not_drift(spec: GpuVmSpec) -> None:
    d = diff_config(spec, live_from(spec), running=True)
    assert d.empty, d.changes


def test_cores_on_a_running_vm_needs_a_reboot_but_not_on_a_stopped_one(spec: GpuVmSpec) -> None:
    live = live_from(spec)
    live["cores"] = 8
    running = diff_config(spec, live, running=True)
    assert [(c.key, c.kind) for c in running.changes] == [("cores", "reboot")]
    assert running.set == {"cores": spec.config["cores"]}
    assert [c.kind for c in diff_config(spec, live, running=False).changes] == ["in-place"]


def test_changed_gpu_mapping_is_pending_reboot_and_extra_hostpci_is_deleted(
        spec: GpuVmSpec) -> None:
    live = live_from(spec)
    live["hostpci0"] = "mapping=a4000-pve04-b,pcie=1"
    live["hostpci1"] = "mapping=other,pcie=1"
    d = diff_config(spec, live, running=True)
    assert d.set == {"hostpci0": "mapping=a4000-pve04-a,pcie=1"}
    assert d.delete == ["hostpci1"]
    assert set(d.reboot_keys) == {"hostpci0", "hostpci1"}


def test_net_change_keeps_the_mac_and_is_hot(spec: GpuVmSpec) -> None:
    live = live_from(spec)
    live["net0"] = "virtio=BC:24:11:AA:BB:CC,bridge=vmbr1,mtu=9000,tag=42"
    d = diff_config(spec, live, running=True)
    assert d.set["net0"] == "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=42,mtu=9000"
    assert [c.kind for c in d.changes] == ["hot"]


def test_disk_grow_is_hot_and_shrink_is_forbidden(spec: GpuVmSpec) -> None:
    live = live_from(spec)
    live["scsi0"] = "local-lvm:vm-301-disk-0,size=3G"
    assert diff_config(spec, live, running=True).resize == "400G"
    live["scsi0"] = "local-lvm:vm-301-disk-0,size=500G"
    d = diff_config(spec, live, running=True)
    assert d.resize is None and [c.key for c in d.forbidden] == ["scsi0.size"]


def test_node_template_and_storage_force_replacement(spec: GpuVmSpec) -> None:
    d = diff_config(spec, live_from(spec), running=True, live_node="pve05",
                    recorded={"template_vmid": 9999, "storage": spec.storage})
    assert sorted(d.replace) == ["node", "template_vmid"]
    moved = replace(spec, storage="ceph")
    d = diff_config(moved, live_from(spec), running=True,
                    recorded={"template_vmid": spec.template_vmid, "storage": "local-lvm"})
    assert d.replace == ["storage"]


@pytest.mark.parametrize(("key", "kind"), [
    ("name", "in-place"), ("tags", "in-place"), ("ipconfig0", "in-place"),
    ("sshkeys", "in-place"), ("net0", "hot"), ("cores", "reboot"), ("memory", "reboot"),
    ("hostpci0", "reboot"), ("machine", "reboot"), ("bios", "reboot"), ("cpu", "reboot"),
    ("balloon", "reboot"),
])
def test_change_kinds(key: str, kind: str) -> None:
    assert kind_of(key) == kind


def test_property_string_order_and_defaults() -> None:
    assert same("agent", "1", "enabled=1")
    assert same("memory", "16384", "current=16384")
    assert same("ipconfig0", "ip=10.0.0.2/24,gw=10.0.0.1", "gw=10.0.0.1,ip=10.0.0.2/24")
    assert not same("hostpci0", "mapping=a,pcie=1", "mapping=a")
    assert same("sshkeys", "ssh-ed25519%20AAAA%20me%40host%0A", "ssh-ed25519 AAAA me@host")


def test_every_planned_vm_of_every_stack_is_a_passthrough_vm(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    for name in ("local", "dev", "prod"):
        for vm in build_plan(stack(root, name)).vms:
            c = vm.config
            assert (c["machine"], c["bios"], c["cpu"], c["balloon"]) == ("q35", "ovmf", "host", 0)
            for key in (k for k in c if k.startswith("hostpci")):
                assert str(c[key]).startswith("mapping=") and "pcie=1" in str(c[key])
                assert "host=" not in str(c[key])
