"""Pulumi components over :class:`skyrig.kube.KubePlan` (pulumi-kubernetes).

``GpuPlatform`` (namespaces, device plugin, KubeRay operator + CRDs, RBAC, NetworkPolicies,
quotas), ``RayClusterComponent`` (RayCluster + monitors) and ``WorkloadRelease`` (PVCs, MLflow,
the RayJob of one release). Each takes a ``pulumi_kubernetes.Provider`` built from the stack's
kubeconfig (:func:`kube_provider`, the kubeconfig is a secret) and creates one typed child
resource per object through ``kubernetes.yaml.ConfigGroup`` (v1, objects as YAML text) with
``parent=self``, so the nested inputs (GPU limits, node selectors, tolerations, images, the
RayJob entrypoint) are visible to ``pulumi preview`` and to tests under mocks. The CRDs go
through the provider-side ``yaml.v2.ConfigGroup`` (one string: 4 MB as nested inputs would take
minutes to serialise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from skyrig.kube import KubePlan
from skyrig.kube.vendor import Obj

SECRET_KINDS = {"Secret"}


def kube_provider(name: str, kubeconfig: pulumi.Input[str], *,
                  opts: pulumi.ResourceOptions | None = None) -> k8s.Provider:
    """Return a pulumi-kubernetes provider for the stack's cluster.

    The kubeconfig is wrapped as a Pulumi secret; server-side apply is on (pulumi-kubernetes
    ``Provider`` ``enable_server_side_apply``, Kubernetes docs: "Server-Side Apply").

    Args:
        name: Pulumi resource name of the provider.
        kubeconfig: The kubeconfig text (or an Input of it).
        opts: Pulumi resource options.

    Returns:
        The provider.
    """
    return k8s.Provider(name, kubeconfig=pulumi.Output.secret(kubeconfig),
                        enable_server_side_apply=True, opts=opts)


@dataclass
class KubeComponentArgs:
    """The plan and the provider a Kubernetes component deploys with.

    Attributes:
        plan: The stack's Kubernetes objects.
        provider: The pulumi-kubernetes provider of the stack's cluster.
    """

    plan: KubePlan
    provider: k8s.Provider


def _yaml(objs: list[Obj]) -> list[str]:
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return [yaml.dump_all(objs, Dumper=dumper, sort_keys=False)] if objs else []


class _KubeObjects(pulumi.ComponentResource):
    component: str = ""

    def __init__(self, token: str, name: str, args: KubeComponentArgs, objs: list[Obj],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(token, name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        secret_opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            additional_secret_outputs=["data", "stringData"]))
        crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
        plain = [o for o in objs if o["kind"] not in SECRET_KINDS and o not in crds]
        secrets = [o for o in objs if o["kind"] in SECRET_KINDS]
        # CRDs (4 MB of upstream schema) go as one YAML string to the provider-side v2 group:
        # as nested inputs they would take minutes to serialise; their content is checked
        # against the vendored release by the render tests.
        self.crds = (k8s.yaml.v2.ConfigGroup(f"{name}-crds", yaml=_yaml(crds)[0], opts=child)
                     if crds else None)
        if self.crds is not None:
            child = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[self.crds]))
        self.group = k8s.yaml.ConfigGroup(f"{name}-objects", yaml=_yaml(plain), opts=child)
        self.secrets = (k8s.yaml.ConfigGroup(f"{name}-secrets", yaml=_yaml(secrets),
                                             opts=secret_opts) if secrets else None)
        self.object_names = [f"{o['kind']}/{o['metadata'].get('namespace', '')}/"
                             f"{o['metadata']['name']}" for o in objs]
        self.register_outputs({"objects": self.object_names})


class GpuPlatform(_KubeObjects):
    """The platform objects of a stack (``KubePlan.platform``).

    Namespaces, NVIDIA device plugin, KubeRay operator and CRDs, RBAC, NetworkPolicies and quotas;
    type ``skyrig:kube:GpuPlatform``.

    Args:
        name: Pulumi resource name.
        args: Plan and provider.
        opts: Pulumi resource options.

    Attributes:
        submitter_token_secret: Name of the job submitter's token Secret (a Pulumi secret; ``""``
            when none).
    """

    def __init__(self, name: str, args: KubeComponentArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skyrig:kube:GpuPlatform", name, args, args.plan.platform, opts)
        token = [o for o in args.plan.platform if o["kind"] == "Secret"]
        self.submitter_token_secret = pulumi.Output.secret(
            token[0]["metadata"]["name"] if token else "")


class RayClusterComponent(_KubeObjects):
    """The RayCluster and its ServiceMonitor/PodMonitor (``KubePlan.ray_cluster``).

    Type ``skyrig:kube:RayCluster``.

    Args:
        name: Pulumi resource name.
        args: Plan and provider.
        opts: Pulumi resource options.
    """

    def __init__(self, name: str, args: KubeComponentArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skyrig:kube:RayCluster", name, args, args.plan.ray_cluster, opts)


class WorkloadRelease(_KubeObjects):
    """The workload objects of the pinned release (``KubePlan.workload``).

    Data/results PVCs, the in-cluster MLflow server (if any) and the RayJob; type
    ``skyrig:kube:WorkloadRelease``.

    Args:
        name: Pulumi resource name.
        args: Plan and provider.
        opts: Pulumi resource options.

    Attributes:
        rayjob_name: Name of the RayJob (``""`` when none).
    """

    def __init__(self, name: str, args: KubeComponentArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skyrig:kube:WorkloadRelease", name, args, args.plan.workload, opts)
        jobs = [o for o in args.plan.workload if o["kind"] == "RayJob"]
        self.rayjob_name = jobs[0]["metadata"]["name"] if jobs else ""
