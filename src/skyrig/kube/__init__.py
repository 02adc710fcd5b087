"""Pure plan → Kubernetes objects for the dev/prod platform (plain dicts, no I/O).

``build_kube(stack) -> KubePlan``: one list of objects per component, in apply order:

- ``platform``: namespaces (PSA labels), NVIDIA device plugin (+ GPU Feature Discovery), the
  KubeRay operator and its CRDs at the stack's ``kuberay_version``, RBAC, NetworkPolicies,
  ResourceQuota and LimitRange;
- ``ray_cluster``: the RayCluster (its monitors are in ``monitoring``);
- ``workload``: data/results PVCs, the in-cluster MLflow server (if asked), one RayJob for the
  pinned workload release;
- ``monitoring``: ``skyrig.monitoring.kube_objects(stack)``.

Validate them with :func:`skyrig.kube.validate.validate_objects`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skyrig.config import Stack
from skyrig.errors import SkyrigConfigError
from skyrig.kube import objects as o
from skyrig.kube.vendor import Obj

COMPONENTS = ("platform", "ray_cluster", "workload", "monitoring")


@dataclass(frozen=True)
class KubePlan:
    """Kubernetes objects of one stack, per component (apply in :data:`COMPONENTS` order).

    Attributes:
        stack: Stack name.
        k8s_version: Kubernetes version the objects are validated for, e.g. ``1.33.4``.
        kuberay_version: KubeRay release whose CRDs and operator are used, e.g. ``1.7.0``.
        platform: Namespaces, device plugin, KubeRay operator, RBAC, NetworkPolicies, quotas.
        ray_cluster: The RayCluster.
        workload: Data/results PVCs, the MLflow server (if in-cluster) and the RayJob.
        monitoring: Objects of :mod:`skyrig.monitoring`.
    """

    stack: str
    k8s_version: str
    kuberay_version: str
    platform: list[Obj] = field(default_factory=list)
    ray_cluster: list[Obj] = field(default_factory=list)
    workload: list[Obj] = field(default_factory=list)
    monitoring: list[Obj] = field(default_factory=list)

    def components(self) -> dict[str, list[Obj]]:
        """Return ``{component: objects}`` in apply order (empty components included).

        Returns:
            Component name → a new list of its objects (the objects themselves are not copied).
        """
        return {c: list(getattr(self, c)) for c in COMPONENTS}

    def objects(self) -> list[Obj]:
        """Return every object of every component, in apply order.

        Returns:
            The objects as Kubernetes manifest dicts.
        """
        return [obj for objs in self.components().values() for obj in objs]

    def summary_rows(self) -> list[dict[str, Any]]:
        """Return one row per object for ``skyrig plan``.

        Returns:
            Rows with ``component``, ``kind``, ``namespace`` (``-`` when cluster-scoped) and
            ``name``.
        """
        return [
            {"component": c, "kind": obj["kind"],
             "namespace": obj["metadata"].get("namespace", "-"),
             "name": obj["metadata"]["name"]}
            for c, objs in self.components().items() for obj in objs
        ]


def _monitoring_objects(stack: Stack) -> list[Obj]:
    """PrometheusRule, monitors, the DCGM exporter and dashboards of :mod:`skyrig.monitoring`."""
    from skyrig.monitoring import kube_objects

    return list(kube_objects(stack))


def build_kube(stack: Stack) -> KubePlan:
    """Build all Kubernetes objects of a dev/prod stack (pure: no I/O, no API server).

    Args:
        stack: The validated stack.

    Returns:
        The objects per component.

    Raises:
        SkyrigConfigError: The stack has no Kubernetes platform (``kubernetes.enabled: false`` or
            ``ray.mode`` not ``kuberay``) or pins a KubeRay or device-plugin release that is not
            vendored.
    """
    cfg = stack.config
    if not cfg.kubernetes.enabled or cfg.ray.mode != "kuberay":
        raise SkyrigConfigError(
            f"stack {stack.name} has no Kubernetes platform (kubernetes.enabled:"
            f" {cfg.kubernetes.enabled}, ray.mode: {cfg.ray.mode})", file=str(stack.file))
    platform = [*o.namespaces(stack), *o.device_plugin(stack), *o.kuberay_operator(stack),
                *o.rbac(stack), *o.network_policies(stack), *o.quotas(stack)]
    return KubePlan(
        stack=stack.name,
        k8s_version=o.k8s_version(stack),
        kuberay_version=str(cfg.ray.kuberay_version),
        platform=platform,
        ray_cluster=o.ray_cluster(stack),
        workload=[*o.volumes(stack), *o.mlflow_server(stack), o.rayjob(stack)],
        monitoring=_monitoring_objects(stack),
    )


def has_platform(stack: Stack) -> bool:
    """Say whether the stack runs a Kubernetes platform (dev/prod; not local).

    Args:
        stack: The validated stack.

    Returns:
        ``True`` when ``kubernetes.enabled`` and ``ray.mode: kuberay``.
    """
    return stack.config.kubernetes.enabled and stack.config.ray.mode == "kuberay"


__all__ = ["COMPONENTS", "KubePlan", "build_kube", "has_platform"]
