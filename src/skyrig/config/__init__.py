"""Typed, validated model of one skyrig environment (a Pulumi stack file)."""

from skyrig.config.loader import Stack, load_stack, project_root, resolve_secret, stack_file
from skyrig.config.model import (
    CloudInit,
    Governance,
    Gpu,
    GpuStack,
    GpuVm,
    Kubernetes,
    Monitoring,
    Network,
    Node,
    PciMapping,
    PciMappingEntry,
    ProxmoxEndpoint,
    Ray,
    SecretRef,
    StackConfig,
    VmClass,
    Workload,
)

__all__ = [
    "CloudInit", "Governance", "Gpu", "GpuStack", "GpuVm", "Kubernetes", "Monitoring", "Network",
    "Node", "PciMapping", "PciMappingEntry", "ProxmoxEndpoint", "Ray", "SecretRef", "Stack",
    "StackConfig", "VmClass", "Workload", "load_stack", "project_root", "resolve_secret",
    "stack_file",
]
