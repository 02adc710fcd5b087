"""Pure functions from a validated stack to desired state (no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from skyrig.config.loader import Stack
from skyrig.plan.inventory import Inventory, build_inventory
from skyrig.plan.proxmox import GpuVmSpec, PciMappingSpec, gpu_vms, owner_tag, pci_mappings


@dataclass(frozen=True)
class Plan:
    """Everything a stack wants, as plain data."""

    stack: str
    environment: str
    pci_mappings: list[PciMappingSpec]
    vms: list[GpuVmSpec]
    inventory: Inventory

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_plan(stack: Stack) -> Plan:
    return Plan(
        stack=stack.name,
        environment=stack.config.environment,
        pci_mappings=pci_mappings(stack.config),
        vms=gpu_vms(stack),
        inventory=build_inventory(stack),
    )


__all__ = ["GpuVmSpec", "PciMappingSpec", "Plan", "build_inventory", "build_plan", "owner_tag"]
