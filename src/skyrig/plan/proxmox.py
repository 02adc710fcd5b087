"""Desired Proxmox objects of a stack: PCI mappings and GPU VM configs, exactly as PVE takes them.

Pure functions, no I/O. The reconcile core (``skyrig.proxmox``) diffs these against live state; the
values are strings and ints in PVE's wire form (booleans as ``1``/``0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from skyrig.config.checks import effective
from skyrig.config.compat import gpu_model
from skyrig.config.loader import Stack
from skyrig.config.model import GpuVm, StackConfig

OWNER_TAG_PREFIX = "skyrig-"
BOOT_DISK = "scsi0"


@dataclass(frozen=True)
class PciMappingEntrySpec:
    """One node's entry of a cluster PCI mapping, before hardware is measured."""

    node: str
    path: str
    vendor_device: str

    def as_map_string(self, iommugroup: int | None = None, subsystem_id: str | None = None) -> str:
        """The PVE ``map`` property (``id=..,iommugroup=..,node=..,path=..,subsystem-id=..``)."""
        parts = [
            f"id={self.vendor_device}",
            f"iommugroup={iommugroup}" if iommugroup is not None else "",
            f"node={self.node}",
            f"path={self.path}",
            f"subsystem-id={subsystem_id}" if subsystem_id else "",
        ]
        return ",".join(p for p in parts if p)


@dataclass(frozen=True)
class PciMappingSpec:
    """A cluster PCI mapping (``/cluster/mapping/pci``)."""

    id: str
    description: str
    model: str
    entries: tuple[PciMappingEntrySpec, ...]
    owner_tag: str = ""
    adopt_existing: bool = False


@dataclass(frozen=True)
class GpuVmSpec:
    """A VM to clone from its node's template and configure."""

    name: str
    vmid: int
    node: str
    template_vmid: int
    storage: str
    disk: str
    disk_size: str
    ip: str
    gpus: tuple[str, ...]
    config: dict[str, str | int] = field(hash=False)
    owner_tag: str = ""

    @property
    def clone_params(self) -> dict[str, str | int]:
        """Parameters of ``POST /nodes/{node}/qemu/{template}/clone`` (full clone)."""
        return {
            "newid": self.vmid,
            "name": self.name,
            "target": self.node,
            "full": 1,
            "storage": self.storage,
        }


def owner_tag(stack_name: str) -> str:
    """The tag that marks a VM as owned by a stack (skyrig never touches VMs without it)."""
    return f"{OWNER_TAG_PREFIX}{stack_name}"


def _tags(values: list[str]) -> str:
    seen: list[str] = []
    for tag in values:
        tag = tag.lower()
        if tag not in seen:
            seen.append(tag)
    return ";".join(sorted(seen))


def vm_config(cfg: StackConfig, vm: GpuVm, stack_name: str) -> dict[str, str | int]:
    """The PVE config parameters of ``vm`` (``POST /nodes/{node}/qemu/{vmid}/config``)."""
    cls = cfg.vm_classes[vm.vm_class]
    node = next(n for n in cfg.nodes if n.name == vm.node)
    cores, memory, _ = effective(vm, cls)
    net = cfg.network
    net0 = f"virtio,bridge={net.bridge}"
    if net.vlan:
        net0 += f",tag={net.vlan}"
    if net.mtu:
        net0 += f",mtu={net.mtu}"
    conf: dict[str, str | int] = {
        "name": vm.name,
        "machine": cls.machine,
        "bios": cls.bios,
        "cpu": cls.cpu,
        "cores": cores,
        "sockets": cls.sockets,
        "memory": str(memory),
        "balloon": cls.balloon_mib,
        "numa": int(cls.numa),
        "scsihw": "virtio-scsi-single",
        "net0": net0,
        "ipconfig0": f"ip={vm.ip}/{net.subnet.prefixlen},gw={net.gateway}",
        "ciuser": cfg.cloud_init.user,
        "agent": "1",
        "onboot": int(cls.onboot),
        "tags": _tags([owner_tag(stack_name), *cls.tags]),
        "description": f"managed by skyrig (stack {stack_name}); do not edit by hand",
    }
    if cls.bios == "ovmf" and cls.efi_disk:
        conf["efidisk0"] = f"{node.storage}:1,efitype=4m,pre-enrolled-keys=0"
    if net.nameservers:
        conf["nameserver"] = " ".join(str(ns) for ns in net.nameservers)
    if net.search_domain:
        conf["searchdomain"] = net.search_domain
    if cfg.cloud_init.ssh_keys:
        # PVE wants the keys URL-encoded (and proxmoxer form-encodes once more on the wire).
        conf["sshkeys"] = quote("\n".join(cfg.cloud_init.ssh_keys) + "\n", safe="")
    for i, mapping in enumerate(vm.gpus):
        conf[f"hostpci{i}"] = f"mapping={mapping}" + (",pcie=1" if cls.pcie else "")
    return conf


def pci_mappings(cfg: StackConfig, stack_name: str | None = None) -> list[PciMappingSpec]:
    """The stack's cluster PCI mappings; ``stack_name`` sets their owner tag."""
    out = []
    for m in cfg.pci_mappings:
        model = gpu_model(m.model) or {}
        entries = tuple(
            PciMappingEntrySpec(node=e.node, path=e.path, vendor_device=model["vendor_device"])
            for e in m.entries
        )
        out.append(
            PciMappingSpec(
                id=m.id,
                description=m.description or f"{m.model} ({m.id})",
                model=m.model,
                entries=entries,
                owner_tag=owner_tag(stack_name) if stack_name else "",
                adopt_existing=m.adopt_existing,
            )
        )
    return out


def gpu_vms(stack: Stack) -> list[GpuVmSpec]:
    cfg = stack.config
    nodes = {n.name: n for n in cfg.nodes}
    out = []
    for vm in cfg.vms:
        cls = cfg.vm_classes[vm.vm_class]
        node = nodes[vm.node]
        _, _, disk = effective(vm, cls)
        out.append(
            GpuVmSpec(
                name=vm.name,
                vmid=vm.vmid,
                node=vm.node,
                template_vmid=node.template_vmid,
                storage=node.storage,
                disk=BOOT_DISK,
                disk_size=f"{disk}G",
                ip=str(vm.ip),
                gpus=tuple(vm.gpus),
                config=vm_config(cfg, vm, stack.name),
                owner_tag=owner_tag(stack.name),
            )
        )
    return out


def summary_rows(specs: list[GpuVmSpec]) -> list[dict[str, Any]]:
    """One row per VM for tables."""
    return [
        {
            "vm": s.name,
            "vmid": s.vmid,
            "node": s.node,
            "cores": s.config["cores"],
            "memory_mib": int(s.config["memory"]),
            "disk": s.disk_size,
            "ip": s.ip,
            "gpus": ",".join(s.gpus) or "-",
        }
        for s in specs
    ]
