"""The Ansible inventory of a stack (YAML inventory structure, Kubespray-style groups).

Groups: ``proxmox_hosts``, ``gpu_guests``, ``kube_control_plane``, ``kube_node``, ``k8s_cluster``,
``ray_head``, ``ray_worker``, ``ray_cluster``, ``monitoring_targets``. Role variables are set with
the names the roles declare in ``meta/argument_specs.yml``; role defaults stay authoritative for
everything the stack does not say.
"""

from __future__ import annotations

from typing import Any

from skyrig.config.compat import gpu_model
from skyrig.config.loader import Stack

Inventory = dict[str, Any]


def _group(
    hosts: dict[str, dict[str, Any]] | None = None,
    children: list[str] | None = None,
    variables: dict[str, Any] | None = None,
) -> dict[str, Any]:
    g: dict[str, Any] = {}
    if hosts is not None:
        g["hosts"] = hosts
    if children:
        g["children"] = {c: {} for c in children}
    if variables:
        g["vars"] = variables
    return g


def build_inventory(stack: Stack, ips: dict[str, str] | None = None) -> Inventory:
    """The inventory for ``stack``. ``ips`` (VM name → address, from provisioning outputs)
    overrides the stack's planned addresses."""
    cfg = stack.config
    ips = ips or {}
    product = {
        m: (gpu_model(m) or {}).get("product_label", m)
        for m in {g.model for n in cfg.nodes for g in n.gpus}
    }
    hosts_pve: dict[str, dict[str, Any]] = {}
    for node in cfg.nodes:
        hosts_pve[node.name] = {
            "ansible_host": node.address or node.name,
            "ansible_user": node.ssh_user,
            "proxmox_gpu_host_pci_addresses": [g.path for g in node.gpus],
            "proxmox_gpu_host_reboot": True,
        }
    mappings = {m.id: m for m in cfg.pci_mappings}
    vm_hosts: dict[str, dict[str, Any]] = {}
    for vm in cfg.vms:
        has_gpu = bool(vm.gpus)
        models = {mappings[g].model for g in vm.gpus if g in mappings}
        hv: dict[str, Any] = {
            "ansible_host": ips.get(vm.name, str(vm.ip)),
            "ansible_user": cfg.cloud_init.user,
            "proxmox_node": vm.node,
            "vmid": vm.vmid,
            "gpu_mappings": list(vm.gpus),
            "node_monitoring_dcgm_enabled": has_gpu and cfg.monitoring.dcgm_exporter,
        }
        if "kube_control_plane" in vm.roles or "kube_node" in vm.roles:
            hv["k8s_node_role"] = "server" if "kube_control_plane" in vm.roles else "agent"
            hv["k8s_node_gpu"] = has_gpu
            if has_gpu:
                labels = sorted(product.get(m, m) for m in models)
                hv["k8s_node_labels"] = {"nvidia.com/gpu.product": labels[0]}
                hv["k8s_node_taints"] = ["nvidia.com/gpu=present:NoSchedule"]
        if "ray_head" in vm.roles or "ray_worker" in vm.roles:
            hv["ray_node_role"] = "head" if "ray_head" in vm.roles else "worker"
            hv["ray_node_num_gpus"] = len(vm.gpus)
            hv["ray_node_labels"] = {"skyrig/gpu": "rtx-a4000" if has_gpu else "none"}
        vm_hosts[vm.name] = hv

    def members(role: str) -> dict[str, dict[str, Any]]:
        return {vm.name: {} for vm in cfg.vms if role in vm.roles}

    gs, k, r = cfg.gpu_stack, cfg.kubernetes, cfg.ray
    control = [vm for vm in cfg.vms if "kube_control_plane" in vm.roles]
    head = next((vm for vm in cfg.vms if "ray_head" in vm.roles), None)
    all_vars: dict[str, Any] = {
        "skyrig_stack": stack.name,
        "skyrig_environment": cfg.environment,
        "nvidia_driver_source": gs.driver_source,
        "nvidia_driver_version": gs.driver_version,
        "nvidia_driver_cuda_version": gs.cuda_version,
        "nvidia_driver_open_kernel_modules": gs.open_kernel_modules,
        "nvidia_container_toolkit_version": gs.container_toolkit_version,
        "nvidia_container_toolkit_runtime": "containerd",
        "nvidia_container_toolkit_k3s": k.enabled and k.distribution == "k3s",
        "k8s_node_distribution": k.distribution,
        "k8s_node_version": k.version,
        "k8s_node_install_binary": k.install_binary,
        "ray_node_version": r.version,
        "ray_node_port": r.head_port,
        "ray_node_dashboard_host": r.dashboard_host,
        "ray_node_dashboard_port": r.dashboard_port,
        "ray_node_metrics_export_port": r.metrics_export_port,
        "ray_node_workload_package": cfg.workload.name.replace("_", "-"),
        "ray_node_workload_version": cfg.workload.version,
        "node_monitoring_node_exporter_port": cfg.monitoring.node_exporter_port,
        "node_monitoring_dcgm_exporter_port": cfg.monitoring.dcgm_exporter_port,
    }
    if k.artifact_dir:
        all_vars["k8s_node_artifact_dir"] = k.artifact_dir
    if control:
        first = control[0]
        all_vars["k8s_node_server_url"] = f"https://{ips.get(first.name, str(first.ip))}:6443"
    if head is not None:
        all_vars["ray_node_head_address"] = f"{ips.get(head.name, str(head.ip))}:{r.head_port}"

    gpu_guests: dict[str, dict[str, Any]] = {vm.name: {} for vm in cfg.vms if vm.gpus}
    return {
        "all": {
            "vars": all_vars,
            "hosts": {**hosts_pve, **vm_hosts},
            "children": {
                "proxmox_hosts": _group(hosts={n: {} for n in hosts_pve}),
                "gpu_guests": _group(hosts=gpu_guests),
                "kube_control_plane": _group(hosts=members("kube_control_plane")),
                "kube_node": _group(hosts=members("kube_node")),
                "k8s_cluster": _group(children=["kube_control_plane", "kube_node"]),
                "ray_head": _group(hosts=members("ray_head")),
                "ray_worker": _group(hosts=members("ray_worker")),
                "ray_cluster": _group(children=["ray_head", "ray_worker"]),
                "monitoring_targets": _group(hosts={n: {} for n in (*hosts_pve, *vm_hosts)}),
            },
        }
    }
