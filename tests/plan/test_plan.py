"""The plan: pure data derived from a stack (PVE configs, mappings, inventory)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from skyrig.config import load_stack
from skyrig.plan import build_plan

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prod():  # type: ignore[no-untyped-def]
    return build_plan(load_stack("prod", ROOT))


def test_prod_counts(prod) -> None:  # type: ignore[no-untyped-def]
    assert len(prod.pci_mappings) == 8
    assert len(prod.vms) == 11
    assert sum(1 for vm in prod.vms if vm.gpus) == 8


def test_gpu_vm_configs_are_passthrough_ready(prod) -> None:  # type: ignore[no-untyped-def]
    for vm in prod.vms:
        c = vm.config
        assert c["machine"] == "q35" and c["bios"] == "ovmf" and c["cpu"] == "host"
        assert c["balloon"] == 0
        assert c["efidisk0"] == "local-lvm:1,efitype=4m,pre-enrolled-keys=0"
        assert "skyrig-prod" in str(c["tags"]).split(";")
        assert c["ipconfig0"] == f"ip={vm.ip}/24,gw=10.42.10.1"
        assert c["net0"] == "virtio,bridge=vmbr0,tag=42,mtu=9000"
        hostpci = {k: v for k, v in c.items() if k.startswith("hostpci")}
        assert len(hostpci) == len(vm.gpus)
        for i, mapping in enumerate(vm.gpus):
            assert hostpci[f"hostpci{i}"] == f"mapping={mapping},pcie=1"
            assert "host=" not in str(hostpci[f"hostpci{i}"])
        assert vm.clone_params == {
            "newid": vm.vmid,
            "name": vm.name,
            "target": vm.node,
            "full": 1,
            "storage": "local-lvm",
        }


def test_sshkeys_are_url_encoded(prod) -> None:  # type: ignore[no-untyped-def]
    keys = prod.vms[0].config["sshkeys"]
    assert " " not in keys and "\n" not in keys
    assert unquote(keys).startswith("ssh-ed25519 ")


def test_mapping_specs(prod) -> None:  # type: ignore[no-untyped-def]
    m = {x.id: x for x in prod.pci_mappings}["a4000-pve07-b"]
    (entry,) = m.entries
    assert (entry.node, entry.path, entry.vendor_device) == ("pve07", "0000:41:00", "10de:24b0")
    assert entry.as_map_string(iommugroup=42, subsystem_id="1028:14ad") == (
        "id=10de:24b0,iommugroup=42,node=pve07,path=0000:41:00,subsystem-id=1028:14ad"
    )


def test_inventory_groups_and_vars(prod) -> None:  # type: ignore[no-untyped-def]
    inv = prod.inventory["all"]
    groups = inv["children"]
    assert set(groups["proxmox_hosts"]["hosts"]) == {f"pve0{i}" for i in range(1, 8)}
    assert set(groups["kube_control_plane"]["hosts"]) == {"k8s-cp-01", "k8s-cp-02", "k8s-cp-03"}
    assert len(groups["gpu_guests"]["hosts"]) == 8
    assert set(groups["k8s_cluster"]["children"]) == {"kube_control_plane", "kube_node"}
    hv = inv["hosts"]["gpu-w-01"]
    assert hv["ansible_host"] == "10.42.10.31" and hv["k8s_node_role"] == "agent"
    assert hv["k8s_node_gpu_labels"]["nvidia.com/gpu.product"] == "NVIDIA-RTX-A4000"
    assert "ray_node_role" not in hv  # prod runs Ray on KubeRay, not on the VMs
    assert inv["hosts"]["pve04"]["proxmox_gpu_host_pci_addresses"] == ["0000:01:00", "0000:41:00"]
    assert "proxmox_gpu_host_pci_addresses" not in inv["hosts"]["pve01"]
    assert set(groups["proxmox_gpu_hosts"]["hosts"]) == {"pve04", "pve05", "pve06", "pve07"}
    assert inv["hosts"]["pve01"]["ansible_host"] == "pve01.astro-lab.internal"
    assert inv["hosts"]["pve01"]["ansible_user"] == "root"
    assert groups["k8s_cluster"]["vars"]["k8s_node_server_url"] == (
        "https://10.42.10.21:{{ k8s_node_api_port }}"
    )
    assert inv["hosts"]["k8s-cp-01"]["k8s_node_cluster_init"] is True
    assert groups["gpu_guests"]["vars"]["nvidia_driver_version"] == "580.126.20"


def test_inventory_uses_provisioned_ips() -> None:
    from skyrig.plan.inventory import build_inventory

    inv = build_inventory(load_stack("local", ROOT), ips={"gpu-w-1": "127.0.10.99"})
    assert inv["all"]["hosts"]["gpu-w-1"]["ansible_host"] == "127.0.10.99"


def test_plan_is_deterministic() -> None:
    a = build_plan(load_stack("prod", ROOT)).to_dict()
    b = build_plan(load_stack("prod", ROOT)).to_dict()
    assert a == b


def test_stack_reference_doc_is_current() -> None:
    from skyrig.config.reference import render_markdown

    doc = (ROOT / "docs" / "stack-reference.md").read_text()
    assert doc.strip() == render_markdown().strip(), (
        "docs/stack-reference.md is stale: run `python -m skyrig.config.reference >"
        " docs/stack-reference.md`"
    )
