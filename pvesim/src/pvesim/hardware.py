"""Simulated hardware: nodes, CPUs, memory, storages and PCI devices from a YAML profile.

Shape of a profile (``profiles/*.yaml`` or any file passed as ``--hardware``)::

    nodes:
      pve1:
        cpus: 16
        memory_gib: 64
        iommu: true                     # false: hardware/pci reports iommugroup -1
        storages:
          local-lvm: {type: lvmthin, content: [images, rootdir], size_gib: 1024}
        pci:
          - {id: "0000:01:00.0", class: "0x030000", vendor: "0x10de", device: "0x24b0",
             subsystem_vendor: "0x10de", subsystem_device: "0x14ad", iommugroup: 14}
        template: {vmid: 9001, name: debian12-cloud}   # optional cloud-init template VM
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pvesim.apierror import PveSimError

PROFILES = ("local", "lab", "faulty")
GIB = 1024**3


@dataclass(frozen=True)
class PciDevice:
    id: str
    klass: str
    vendor: str
    device: str
    iommugroup: int
    subsystem_vendor: str | None = None
    subsystem_device: str | None = None
    mdev: bool = False
    names: dict[str, str] = field(default_factory=dict)

    @property
    def slot(self) -> str:
        """``0000:01:00`` for ``0000:01:00.0``."""
        return self.id.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Storage:
    id: str
    type: str
    content: tuple[str, ...]
    size: int
    shared: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory: int
    iommu: bool
    storages: dict[str, Storage]
    pci: tuple[PciDevice, ...]
    template: dict[str, Any] | None

    def pci_device(self, pci_id: str) -> PciDevice | None:
        for dev in self.pci:
            if dev.id == pci_id:
                return dev
        return None

    def pci_functions(self, slot: str) -> list[PciDevice]:
        return [d for d in self.pci if d.slot == slot]


@dataclass(frozen=True)
class Hardware:
    source: str
    nodes: dict[str, Node]


def _where(source: str, path: str) -> str:
    return f"{source}: {path}"


def _parse_node(source: str, name: str, raw: dict[str, Any]) -> Node:
    try:
        storages = {
            sid: Storage(
                id=sid,
                type=str(s.get("type", "dir")),
                content=tuple(s.get("content", [])),
                size=int(float(s.get("size_gib", 100)) * GIB),
                shared=bool(s.get("shared", False)),
            )
            for sid, s in (raw.get("storages") or {}).items()
        }
        pci = []
        for d in raw.get("pci") or []:
            names = {k: str(d[k]) for k in ("vendor_name", "device_name",
                                            "subsystem_vendor_name", "subsystem_device_name")
                     if k in d}
            pci.append(PciDevice(
                id=str(d["id"]).lower(), klass=str(d["class"]), vendor=str(d["vendor"]),
                device=str(d["device"]), iommugroup=int(d.get("iommugroup", -1)),
                subsystem_vendor=d.get("subsystem_vendor"),
                subsystem_device=d.get("subsystem_device"),
                mdev=bool(d.get("mdev", False)), names=names,
            ))
        return Node(
            name=name,
            cpus=int(raw["cpus"]),
            memory=int(float(raw["memory_gib"]) * GIB),
            iommu=bool(raw.get("iommu", True)),
            storages=storages,
            pci=tuple(pci),
            template=raw.get("template"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PveSimError(
            f"invalid hardware profile {_where(source, 'nodes.' + name)}: {exc!r}",
            hint="see the profile shape in pvesim/hardware.py or profiles/local.yaml",
            exit_code=2,
        ) from exc


def load_hardware(hardware: str | Path = "local") -> Hardware:
    """Load a shipped profile by name (``local``, ``lab``, ``faulty``) or a YAML file path."""
    if isinstance(hardware, str) and hardware in PROFILES:
        text = resources.files("pvesim").joinpath(f"profiles/{hardware}.yaml").read_text()
        source = f"profile '{hardware}'"
    else:
        path = Path(hardware)
        if not path.is_file():
            raise PveSimError(
                f"hardware profile '{hardware}' not found",
                hint=f"use one of {', '.join(PROFILES)} or a path to a YAML file",
                exit_code=2,
            )
        text = path.read_text()
        source = str(path)
    raw = yaml.safe_load(text) or {}
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise PveSimError(f"invalid hardware profile {source}: no 'nodes' mapping",
                          hint="a profile needs at least one node under 'nodes:'", exit_code=2)
    nodes = {str(name): _parse_node(source, str(name), body) for name, body in nodes_raw.items()}
    return Hardware(source=source, nodes=nodes)
