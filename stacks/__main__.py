"""Pulumi entry point (``Pulumi.yaml``: ``main: stacks/``): composition only.

Reads ``stacks/Pulumi.<stack>.yaml`` through skyrig.config, builds the plan, provisions it with
the ``GpuCluster`` component and exports what the next layers use. The API token secret comes
from the stack's Pulumi secret (``skyrig:proxmox`` → ``token_secret``), else from the variable the
stack names; ``$SKYRIG_PVESIM_ENDPOINT`` points any stack at a local pvesim.
"""

from __future__ import annotations

import os
from typing import Any

import pulumi

from skyrig.config import load_stack
from skyrig.kube import build_kube, has_platform
from skyrig.plan import build_plan
from skyrig.proxmox.endpoint import PVESIM_ENV, Endpoint, resolve_endpoint
from skyrig.pulumi.components import GpuCluster, GpuClusterArgs
from skyrig.pulumi.components.kube import (
    GpuPlatform,
    KubeComponentArgs,
    RayClusterComponent,
    WorkloadRelease,
    kube_provider,
)
from skyrig.workflows.kube_platform import find_kubeconfig, kubeconfig_sources


def _token(proxmox: Any) -> str | None:
    """The decrypted ``token_secret`` of the ``skyrig:proxmox`` config object, if it is one."""
    if isinstance(proxmox, dict):
        value = proxmox.get("token_secret")
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("secure"), str):
            return None  # not decrypted: no passphrase in this process
    return None


stack = load_stack(pulumi.get_stack())
plan = build_plan(stack)
px = stack.config.proxmox
secret_config = pulumi.Config("skyrig").get_secret_object("proxmox")

if os.environ.get(PVESIM_ENV) or px.embedded or secret_config is None:
    endpoint: Any = pulumi.Output.secret(resolve_endpoint(stack))
else:
    endpoint = pulumi.Output.secret(secret_config).apply(
        lambda cfg: resolve_endpoint(stack, token_secret=_token(cfg)))

cluster = GpuCluster(f"{stack.name}-gpu-cluster", GpuClusterArgs(
    plan=plan, endpoint=endpoint,
    roles={vm.name: list(vm.roles) for vm in stack.config.vms},
    reboot_policy=px.reboot_policy, task_timeout_s=px.task_timeout_s))

pulumi.export("stack", stack.name)
pulumi.export("inventory", cluster.inventory)
pulumi.export("vm_ips", cluster.vm_ips)
pulumi.export("pending_reboot", cluster.pending_reboot)
pulumi.export("pci_mappings", [m.id for m in plan.pci_mappings])
pulumi.export("proxmox_endpoint", endpoint.apply(lambda e: e.url if isinstance(e, Endpoint)
                                                 else str(e)))

# ---- Kubernetes platform and workload release (dev/prod), whenever a kubeconfig is available:
# `secure:` in skyrig:platform.kubeconfig (pulumi config set --secret), the variable the stack
# names, or .skyrig/<stack>/kubeconfig fetched by playbooks/k8s.yml.
if has_platform(stack):
    kubeconfig: Any = None
    platform_cfg = pulumi.Config("skyrig").get_secret_object("platform")
    ref = stack.config.platform.kubeconfig
    if ref is not None and ref.secure and platform_cfg is not None:
        kubeconfig = pulumi.Output.secret(platform_cfg).apply(
            lambda cfg: (cfg.get("kubeconfig") or {}).get("secure")
            if isinstance(cfg.get("kubeconfig"), dict) else cfg.get("kubeconfig"))
    else:
        access = find_kubeconfig(stack)
        kubeconfig = pulumi.Output.secret(access.text) if access is not None else None
    if kubeconfig is None:
        pulumi.log.warn(
            "no kubeconfig: the Kubernetes platform is not deployed. Give one in one of three"
            " ways: " + "; ".join(kubeconfig_sources(stack)))
        pulumi.export("platform", "not deployed: no kubeconfig")
    else:
        kube_plan = build_kube(stack)
        provider = kube_provider(f"{stack.name}-k8s", kubeconfig,
                                 opts=pulumi.ResourceOptions(depends_on=[cluster]))
        kargs = KubeComponentArgs(plan=kube_plan, provider=provider)
        platform = GpuPlatform(f"{stack.name}-platform", kargs)
        ray_cluster = RayClusterComponent(f"{stack.name}-ray", kargs,
                                          opts=pulumi.ResourceOptions(depends_on=[platform]))
        release = WorkloadRelease(f"{stack.name}-release", kargs,
                                  opts=pulumi.ResourceOptions(depends_on=[platform]))
        pulumi.export("platform", "deployed")
        pulumi.export("kubeconfig", pulumi.Output.secret(kubeconfig))
        pulumi.export("rayjob", release.rayjob_name)
        pulumi.export("kubernetes_objects", len(kube_plan.objects()))
