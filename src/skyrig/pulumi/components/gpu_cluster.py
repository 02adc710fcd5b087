"""``GpuCluster``: the stack's PCI mappings and GPU VMs, with the outputs the next layers use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi

from skyrig.plan import Plan
from skyrig.pulumi.providers import GpuVm, PciMapping


@dataclass
class GpuClusterArgs:
    """What the component needs: the plan, how to reach PVE, and provisioning behaviour.

    Attributes:
        plan: The stack's plan (mappings and VMs).
        endpoint: The PVE endpoint, or a Pulumi Input of one.
        roles: VM name → inventory roles, copied into the ``inventory`` output.
        reboot_policy: ``never`` or ``when-required`` (see
            :class:`skyrig.proxmox.vms.VmReconciler`).
        task_timeout_s: Timeout of each PVE task, in seconds.
    """

    plan: Plan
    endpoint: pulumi.Input[Any]
    roles: dict[str, list[str]] = field(default_factory=dict)
    reboot_policy: str = "never"
    task_timeout_s: float = 900.0


class GpuCluster(pulumi.ComponentResource):
    """Mappings first, then one ``GpuVm`` per planned VM (each after the mappings it uses).

    A Pulumi component resource (type ``skyrig:proxmox:GpuCluster``) whose children are the
    dynamic ``PciMapping`` (``pci-<id>``) and ``GpuVm`` (``vm-<name>``) resources.

    Args:
        name: Pulumi resource name.
        args: Plan, endpoint and provisioning behaviour.
        opts: Pulumi resource options.

    Attributes:
        mappings: Mapping id → its resource.
        vms: VM name → its resource.
        inventory: ``{"stack", "hosts": [{"name", "ip", "vmid", "node", "roles",
            "gpu_mappings", "gpu_ids"}]}``; ``ip`` is the reported IPv4 address, else the planned
            one; ``gpu_ids`` are ``vendor:device`` hex.
        vm_ips: VM name → IPv4 address (reported, else planned).
        pending_reboot: Names of VMs with changes pending until a reboot.
    """

    mappings: dict[str, PciMapping]
    vms: dict[str, GpuVm]
    inventory: pulumi.Output[dict[str, Any]]
    vm_ips: pulumi.Output[dict[str, str]]
    pending_reboot: pulumi.Output[list[str]]

    def __init__(self, name: str, args: GpuClusterArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skyrig:proxmox:GpuCluster", name, {}, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        self.mappings = {m.id: PciMapping(f"pci-{m.id}", m, args.endpoint, opts=child)
                         for m in plan.pci_mappings}
        device = {m.id: next((e.vendor_device for e in m.entries), "") for m in plan.pci_mappings}
        self.vms = {}
        for vm in plan.vms:
            deps = [self.mappings[g] for g in vm.gpus if g in self.mappings]
            self.vms[vm.name] = GpuVm(
                f"vm-{vm.name}", vm, args.endpoint, reboot_policy=args.reboot_policy,
                task_timeout_s=args.task_timeout_s,
                opts=pulumi.ResourceOptions(parent=self, depends_on=deps))
        names = [vm.name for vm in plan.vms]
        ips = [self.vms[n].ip for n in names]
        pendings = [self.vms[n].pending_reboot for n in names]

        def hosts(values: list[Any]) -> dict[str, Any]:
            out = []
            for vm, ip in zip(plan.vms, values, strict=True):
                out.append({"name": vm.name, "ip": ip or vm.ip, "vmid": vm.vmid, "node": vm.node,
                            "roles": list(args.roles.get(vm.name, [])),
                            "gpu_mappings": list(vm.gpus),
                            "gpu_ids": [device.get(g, "") for g in vm.gpus]})
            return {"stack": plan.stack, "hosts": out}

        self.inventory = pulumi.Output.all(*ips).apply(hosts)
        self.vm_ips = pulumi.Output.all(*ips).apply(
            lambda values: {vm.name: (ip or vm.ip) for vm, ip in zip(plan.vms, values,
                                                                     strict=True)})
        self.pending_reboot = pulumi.Output.all(*pendings).apply(
            lambda values: [n for n, p in zip(names, values, strict=True) if p])
        self.register_outputs({"inventory": self.inventory, "vm_ips": self.vm_ips,
                               "pending_reboot": self.pending_reboot})
