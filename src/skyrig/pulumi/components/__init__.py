"""Pulumi components wiring the dynamic providers per the plan."""

from skyrig.pulumi.components.gpu_cluster import GpuCluster, GpuClusterArgs

__all__ = ["GpuCluster", "GpuClusterArgs"]
