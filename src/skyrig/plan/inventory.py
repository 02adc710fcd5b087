"""The Ansible inventory of a stack (YAML inventory structure, Kubespray-style groups).

Groups: ``proxmox_hosts`` (every Proxmox node), ``proxmox_gpu_hosts`` (the nodes with GPUs: the
ones ``host-prep.yml`` prepares), ``gpu_guests``, ``kube_control_plane``, ``kube_node``,
``k8s_cluster``, ``ray_head``, ``ray_worker``, ``ray_cluster`` (filled only when
:func:`ray_on_vms`), ``monitoring_targets``.

Role variables use the names the roles declare in ``meta/argument_specs.yml`` and are emitted on
the group whose play runs the role (Kubespray's group_vars layout): ``nvidia_driver_*`` and
``nvidia_container_toolkit_*`` on ``gpu_guests``, ``k8s_node_*`` on ``k8s_cluster``,
``ray_node_*`` on ``ray_cluster``, ``node_monitoring_*`` on ``monitoring_targets``,
``proxmox_gpu_host_*`` on ``proxmox_gpu_hosts``; per-host values are host variables. Role
defaults stay authoritative for everything the stack does not say (the k3s API port is the
role's ``k8s_node_api_port``, referenced, not repeated). The k3s join token is never part of
the inventory: :mod:`skyrig.ansible.secrets` keeps it and passes it as extra variables.
"""

from __future__ import annotations

from typing import Any

from skyrig.config.compat import gpu_model
from skyrig.config.loader import Stack
from skyrig.config.model import StackConfig

Inventory = dict[str, Any]

#: Ray modes whose Ray cluster runs as systemd services on the VMs (the ray_node role).
RAY_VM_MODES = frozenset({"vm"})


def ray_on_vms(cfg: StackConfig) -> bool:
    """Say whether the stack runs Ray on its VMs (``ray.mode`` in :data:`RAY_VM_MODES`).

    The one rule for the ``ray_head``/``ray_worker`` groups: the inventory fills them only when
    this is true, and ``playbooks/ray.yml`` runs the ray_node role only when the inventory's
    ``skyrig_ray_on_vms`` (this value) is true. ``kuberay`` runs Ray as pods; ``local`` on the
    operator's machine.

    Args:
        cfg: The validated stack config.

    Returns:
        ``True`` for ``ray.mode: vm``.
    """
    return cfg.ray.mode in RAY_VM_MODES


def gpu_product_label(model: str) -> str:
    """Return the ``nvidia.com/gpu.product`` node label value of a GPU model key.

    The value NVIDIA's GPU Feature Discovery sets for the card, taken from the compatibility
    matrix (``gpu_models.<model>.product_label``).

    Args:
        model: GPU model key of the compatibility matrix.

    Returns:
        The label value; the key itself when the matrix lacks it.
    """
    return str((gpu_model(model) or {}).get("product_label", model))


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
    """Return the Ansible inventory for ``stack`` as a YAML-inventory dict.

    Shape per Ansible's YAML inventory plugin: ``{"all": {"vars": ..., "hosts": ..., "children":
    {group: {"hosts", "children", "vars"}}}}`` with the groups and role variables of the module
    docstring. Pure: no I/O, no secrets.

    Args:
        stack: The validated stack.
        ips: VM name → IPv4 address from provisioning outputs; overrides the stack's planned
            addresses.

    Returns:
        The inventory; host names are Proxmox node and VM names.
    """
    cfg = stack.config
    ips = ips or {}
    gs, k, r = cfg.gpu_stack, cfg.kubernetes, cfg.ray
    vm_ray = ray_on_vms(cfg)

    hosts_pve: dict[str, dict[str, Any]] = {}
    for node in cfg.nodes:
        hv: dict[str, Any] = {
            "ansible_host": node.address or node.name,
            "ansible_user": node.ssh_user,
        }
        if node.gpus:
            hv["proxmox_gpu_host_pci_addresses"] = [g.path for g in node.gpus]
        hosts_pve[node.name] = hv

    def addr(vm: Any) -> str:
        return ips.get(vm.name, str(vm.ip))

    mappings = {m.id: m for m in cfg.pci_mappings}
    control = [vm for vm in cfg.vms if "kube_control_plane" in vm.roles]
    kube_vms = [vm for vm in cfg.vms if {"kube_control_plane", "kube_node"} & set(vm.roles)]
    vm_hosts: dict[str, dict[str, Any]] = {}
    for vm in cfg.vms:
        has_gpu = bool(vm.gpus)
        models = sorted({mappings[g].model for g in vm.gpus if g in mappings})
        hv = {
            "ansible_host": addr(vm),
            "ansible_user": cfg.cloud_init.user,
            "proxmox_node": vm.node,
            "vmid": vm.vmid,
            "gpu_mappings": list(vm.gpus),
            "node_monitoring_dcgm_enabled": has_gpu and cfg.monitoring.dcgm_exporter,
        }
        if k.enabled and vm in kube_vms:
            hv["k8s_node_role"] = "server" if vm in control else "agent"
            hv["k8s_node_node_ip"] = addr(vm)
            if control and vm is control[0]:
                hv["k8s_node_cluster_init"] = True
            hv["k8s_node_gpu"] = has_gpu
            if has_gpu and models:
                hv["k8s_node_gpu_labels"] = {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": gpu_product_label(models[0]),
                }
                hv["k8s_node_gpu_taints"] = ["nvidia.com/gpu=present:NoSchedule"]
        if vm_ray and ({"ray_head", "ray_worker"} & set(vm.roles)):
            hv["ray_node_role"] = "head" if "ray_head" in vm.roles else "worker"
            hv["ray_node_num_gpus"] = len(vm.gpus)
            hv["ray_node_node_ip_address"] = addr(vm)
            hv["ray_node_labels"] = {"skyrig.io/gpu": models[0] if models else "none"}
        vm_hosts[vm.name] = hv

    def members(role: str) -> dict[str, dict[str, Any]]:
        return {vm.name: {} for vm in cfg.vms if role in vm.roles}

    all_vars: dict[str, Any] = {
        "skyrig_stack": stack.name,
        "skyrig_environment": cfg.environment,
        "skyrig_ray_mode": r.mode,
        "skyrig_ray_on_vms": vm_ray,
    }
    gpu_vars: dict[str, Any] = {
        "nvidia_driver_source": gs.driver_source,
        "nvidia_driver_version": gs.driver_version,
        "nvidia_driver_cuda_version": gs.cuda_version,
        "nvidia_driver_open_kernel_modules": gs.open_kernel_modules,
        "nvidia_container_toolkit_version": gs.container_toolkit_version,
        "nvidia_container_toolkit_runtime": "containerd",
        "nvidia_container_toolkit_k3s": k.enabled and k.distribution == "k3s",
    }
    k8s_vars: dict[str, Any] = {}
    if k.enabled:
        k8s_vars = {
            "k8s_node_distribution": k.distribution,
            "k8s_node_version": k.version,
            "k8s_node_install_binary": k.install_binary,
        }
        if k.artifact_dir:
            k8s_vars["k8s_node_artifact_dir"] = k.artifact_dir
        if control:
            k8s_vars["k8s_node_server_url"] = (
                f"https://{addr(control[0])}:{{{{ k8s_node_api_port }}}}"
            )
    ray_vars: dict[str, Any] = {}
    head = next((vm for vm in cfg.vms if "ray_head" in vm.roles), None)
    if vm_ray:
        ray_vars = {
            "ray_node_version": r.version,
            "ray_node_port": r.head_port,
            "ray_node_dashboard_host": r.dashboard_host,
            "ray_node_dashboard_port": r.dashboard_port,
            "ray_node_metrics_export_port": r.metrics_export_port,
            "ray_node_workload_package": cfg.workload.name.replace("_", "-"),
            "ray_node_workload_version": cfg.workload.version,
        }
        if head is not None:
            ray_vars["ray_node_head_address"] = f"{addr(head)}:{r.head_port}"
    mon_vars = {
        "node_monitoring_node_exporter_port": cfg.monitoring.node_exporter_port,
        "node_monitoring_dcgm_exporter_port": cfg.monitoring.dcgm_exporter_port,
    }

    gpu_pve: dict[str, dict[str, Any]] = {n.name: {} for n in cfg.nodes if n.gpus}
    gpu_guests: dict[str, dict[str, Any]] = {vm.name: {} for vm in cfg.vms if vm.gpus}
    kube_on = k.enabled
    return {
        "all": {
            "vars": all_vars,
            "hosts": {**hosts_pve, **vm_hosts},
            "children": {
                "proxmox_hosts": _group(hosts={n: {} for n in hosts_pve}),
                "proxmox_gpu_hosts": _group(
                    hosts=gpu_pve, variables={"proxmox_gpu_host_reboot": True}
                ),
                "gpu_guests": _group(hosts=gpu_guests, variables=gpu_vars),
                "kube_control_plane": _group(
                    hosts=members("kube_control_plane") if kube_on else {}
                ),
                "kube_node": _group(hosts=members("kube_node") if kube_on else {}),
                "k8s_cluster": _group(
                    children=["kube_control_plane", "kube_node"], variables=k8s_vars
                ),
                "ray_head": _group(hosts=members("ray_head") if vm_ray else {}),
                "ray_worker": _group(hosts=members("ray_worker") if vm_ray else {}),
                "ray_cluster": _group(children=["ray_head", "ray_worker"], variables=ray_vars),
                "monitoring_targets": _group(
                    hosts={n: {} for n in (*hosts_pve, *vm_hosts)}, variables=mon_vars
                ),
            },
        }
    }
