"""Pulumi dynamic providers: thin translations onto the reconcile core (skyrig.proxmox)."""

from skyrig.pulumi.providers.gpu_vm import GpuVm, GpuVmProvider
from skyrig.pulumi.providers.pci_mapping import PciMapping, PciMappingProvider

__all__ = ["GpuVm", "GpuVmProvider", "PciMapping", "PciMappingProvider"]
