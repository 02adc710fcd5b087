"""Pure functions from a validated stack to desired state (no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from skyrig.config.loader import Stack
from skyrig.plan.inventory import Inventory, build_inventory
from skyrig.plan.proxmox import GpuVmSpec, PciMappingSpec, gpu_vms, owner_tag, pci_mappings


@dataclass(frozen=True)
class Plan:
    """Everything a stack wants, as plain data.

    Attributes:
        stack: Stack name.
        environment: The stack's environment (``local``, ``dev``, ``prod``, ...).
        pci_mappings: Cluster PCI mappings to create or update.
        vms: GPU VMs to clone and configure.
        inventory: The Ansible inventory of the VMs.
        owner_tag: The tag that marks what this stack owns in PVE (``skyrig-<stack>``); the
            reconcile core takes it from here for reconcile, prune and destroy alike. Derived from
            ``stack`` when empty.
    """

    stack: str
    environment: str
    pci_mappings: list[PciMappingSpec]
    vms: list[GpuVmSpec]
    inventory: Inventory
    #: The tag that marks what this stack owns in PVE (``skyrig-<stack>``); the reconcile core
    #: takes it from here for reconcile, prune and destroy alike.
    owner_tag: str = ""

    def __post_init__(self) -> None:
        if not self.owner_tag:
            object.__setattr__(self, "owner_tag", owner_tag(self.stack))

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as nested plain data (dataclasses become dicts; for JSON output).

        Returns:
            ``dataclasses.asdict`` of the plan.
        """
        return asdict(self)


def build_plan(stack: Stack) -> Plan:
    """Build the desired state of a validated stack (pure: no I/O).

    Args:
        stack: The loaded and validated stack.

    Returns:
        Its PCI mappings, GPU VMs and inventory, owned by ``skyrig-<stack.name>``.
    """
    return Plan(
        stack=stack.name,
        environment=stack.config.environment,
        pci_mappings=pci_mappings(stack.config, stack.name),
        vms=gpu_vms(stack),
        inventory=build_inventory(stack),
    )


__all__ = ["GpuVmSpec", "PciMappingSpec", "Plan", "build_inventory", "build_plan", "owner_tag"]
