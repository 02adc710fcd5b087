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
    """One node's entry of a cluster PCI mapping, before hardware is measured.

    Attributes:
        node: PVE node name.
        path: PCI slot address without function, e.g. ``0000:01:00`` (all functions go along).
        vendor_device: ``vendor:device`` hex of the GPU model, e.g. ``10de:24b0`` (from the
            compatibility matrix).
    """

    node: str
    path: str
    vendor_device: str

    def as_map_string(self, iommugroup: int | None = None, subsystem_id: str | None = None) -> str:
        """Return the entry as PVE's mapping ``map`` property string.

        Format per the PVE API ``POST /cluster/mapping/pci`` (``map`` items:
        ``id=<vendor:device>,iommugroup=<n>,node=<node>,path=<slot>,subsystem-id=<v:d>``).

        Args:
            iommugroup: Measured IOMMU group, or ``None`` to leave it out.
            subsystem_id: Measured ``subsystem_vendor:subsystem_device`` hex, or ``None`` to leave
                it out.

        Returns:
            E.g. ``id=10de:24b0,iommugroup=14,node=pve1,path=0000:01:00,subsystem-id=10de:14ad``.
        """
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
    """A cluster PCI mapping (PVE API ``/cluster/mapping/pci``; PVE 8 resource mappings).

    Attributes:
        id: Mapping id that VMs name in ``hostpciN: mapping=<id>``.
        description: Free text (skyrig appends its owner marker when writing it).
        model: GPU model key of the compatibility matrix, e.g. ``rtx-a4000``.
        entries: One entry per node that has such a card.
        owner_tag: The owning stack's tag, ``skyrig-<stack>`` (empty: unowned plan).
        adopt_existing: Whether an existing mapping of this id made by someone else may be taken
            over.
    """

    id: str
    description: str
    model: str
    entries: tuple[PciMappingEntrySpec, ...]
    owner_tag: str = ""
    adopt_existing: bool = False


@dataclass(frozen=True)
class GpuVmSpec:
    """A VM to clone from its node's template and configure.

    Attributes:
        name: VM name (also the inventory host name).
        vmid: Fixed VMID.
        node: PVE node the VM lives on.
        template_vmid: VMID of the node's cloud-init template to full-clone from.
        storage: Target storage of the clone and of ``efidisk0``.
        disk: Boot disk key, ``scsi0``.
        disk_size: Boot disk size as PVE writes it, in GiB: ``"<n>G"``.
        ip: Static IPv4 address (without prefix).
        gpus: PCI mapping ids passed through, in ``hostpciN`` order.
        config: The VM config in PVE wire form (see :func:`vm_config`).
        owner_tag: The owning stack's tag, ``skyrig-<stack>``.
    """

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
        """Parameters of ``POST /nodes/{node}/qemu/{template}/clone`` (full clone, PVE API)."""
        return {
            "newid": self.vmid,
            "name": self.name,
            "target": self.node,
            "full": 1,
            "storage": self.storage,
        }


def owner_tag(stack_name: str) -> str:
    """Return the tag that marks a VM as owned by a stack (skyrig never touches VMs without it).

    Args:
        stack_name: The stack name.

    Returns:
        ``skyrig-<stack_name>``; a valid PVE tag (``pve-tag`` format) for valid stack names.
    """
    return f"{OWNER_TAG_PREFIX}{stack_name}"


def _tags(values: list[str]) -> str:
    seen: list[str] = []
    for tag in values:
        tag = tag.lower()
        if tag not in seen:
            seen.append(tag)
    return ";".join(sorted(seen))


def vm_config(cfg: StackConfig, vm: GpuVm, stack_name: str) -> dict[str, str | int]:
    """Return the PVE config parameters of ``vm``.

    Values are in the wire form of ``POST /nodes/{node}/qemu/{vmid}/config`` (pve-docs qm.conf):
    ``memory`` and ``balloon`` in MiB, booleans as ``1``/``0``, ``tags`` ``;``-separated and
    sorted, ``sshkeys`` URL-encoded, ``ipconfig0`` as ``ip=<addr>/<prefix>,gw=<gateway>``, GPUs as
    ``hostpciN: mapping=<id>[,pcie=1]``, and ``efidisk0`` (OVMF only) as
    ``<storage>:1,efitype=4m,pre-enrolled-keys=0``.

    Args:
        cfg: The validated stack config.
        vm: One of ``cfg.vms``.
        stack_name: The stack name (owner tag and description).

    Returns:
        Config key → value (``str`` or ``int``).
    """
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
    """Return the stack's cluster PCI mappings.

    Args:
        cfg: The validated stack config.
        stack_name: Sets the mappings' owner tag (``skyrig-<stack_name>``); ``None`` leaves it
            empty.

    Returns:
        One spec per ``skyrig:pci_mappings`` entry, in stack order; ``vendor_device`` comes from
        the compatibility matrix entry of the mapping's model.
    """
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
    """Return the stack's GPU VMs as clone-and-configure specs.

    Args:
        stack: The validated stack.

    Returns:
        One spec per ``skyrig:vms`` entry, in stack order, with class defaults and per-VM overrides
        applied (cores, memory MiB, disk GiB) and the boot disk ``scsi0``.
    """
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
    """Return one row per VM for tables.

    Args:
        specs: Planned VMs.

    Returns:
        Rows with ``vm``, ``vmid``, ``node``, ``cores``, ``memory_mib`` (MiB), ``disk``
        (``"<n>G"``), ``ip`` and ``gpus`` (comma-separated mapping ids, ``-`` when none).
    """
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
