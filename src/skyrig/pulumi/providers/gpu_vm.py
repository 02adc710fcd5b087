"""Dynamic provider for a GPU VM: clone → configure → resize → start → IP, via the core."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from skyrig.plan.proxmox import GpuVmSpec
from skyrig.proxmox.vmdiff import REPLACE_FIELDS, same
from skyrig.proxmox.vms import VmReconciler
from skyrig.pulumi.providers.connection import (
    SECRET_OUTPUTS,
    changed_connection,
    client_from,
    connection_inputs,
)


def spec_from(d: dict[str, Any]) -> GpuVmSpec:
    """Rebuild a :class:`GpuVmSpec` from its dict in Pulumi's state.

    Pulumi's property values carry numbers as floats; integral config values become ``int`` again.

    Args:
        d: The ``spec`` property (see :func:`spec_to_dict`).

    Returns:
        The spec.

    Raises:
        KeyError: A required field is missing.
    """
    config = {k: (int(v) if isinstance(v, float) else v) for k, v in d["config"].items()}
    return GpuVmSpec(name=str(d["name"]), vmid=int(d["vmid"]), node=str(d["node"]),
                     template_vmid=int(d["template_vmid"]), storage=str(d["storage"]),
                     disk=str(d["disk"]), disk_size=str(d["disk_size"]), ip=str(d["ip"]),
                     gpus=tuple(d.get("gpus", ())), config=config,
                     owner_tag=str(d.get("owner_tag", "")))


def spec_to_dict(spec: GpuVmSpec) -> dict[str, Any]:
    """Return a :class:`GpuVmSpec` as a plain dict for Pulumi's state (``gpus`` as a list).

    Args:
        spec: The planned VM.

    Returns:
        The dataclass fields as a dict.
    """
    d = asdict(spec)
    d["gpus"] = list(spec.gpus)
    return d


def _reconciler(props: dict[str, Any]) -> VmReconciler:
    return VmReconciler(client_from(props), task_timeout_s=float(props.get("task_timeout_s", 900)),
                        reboot_policy=props.get("reboot_policy", "never"))


def _outs(props: dict[str, Any], ip: str | None, pending: list[str]) -> dict[str, Any]:
    return {**props, "ip": ip or "", "pending_reboot": pending}


class GpuVmProvider(ResourceProvider):
    """Translate between Pulumi and :class:`VmReconciler` (no Proxmox logic here).

    Implements Pulumi's dynamic ``ResourceProvider`` (Pulumi docs: "Dynamic Resource Providers");
    the resource id is the VMID as text.
    """

    # create: full clone, configure, resize, start, wait for the guest agent's IP
    def create(self, props: dict[str, Any]) -> CreateResult:
        """Create the VM: full clone, configure, resize, start, wait for the guest agent's IP.

        Args:
            props: Inputs: ``spec``, ``reboot_policy``, ``task_timeout_s`` (seconds) and the
                connection keys.

        Returns:
            Id = VMID; outputs = inputs plus ``ip`` (IPv4, ``""`` when unknown) and
            ``pending_reboot`` (config keys).

        Raises:
            OwnershipError: Another VM is at the VMID.
            ProxmoxError: A call failed or the VM would need replacing (Pulumi replaces it instead).
            ProxmoxTaskError: A PVE task failed or timed out.
        """
        spec = spec_from(props["spec"])
        out = _reconciler(props).ensure(spec, allow_replace=False)
        return CreateResult(id_=str(spec.vmid), outs=_outs(props, out.ip, out.pending_reboot))

    # read: live config (pending applied) so that refresh shows drift; also used for import
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Read the live VM (pending values applied) so that refresh shows drift and import works.

        Config values that mean the same as the desired ones (see
        :func:`skyrig.proxmox.vmdiff.same`) keep the desired spelling, so only real drift shows.

        Args:
            id_: The VMID as text.
            props: The resource's last known properties.

        Returns:
            The live properties, or an empty result (id ``None``) when the VM is gone.

        Raises:
            ProxmoxError: A read failed.
        """
        vr = _reconciler(props)
        state = vr.read(int(id_))
        if state is None:
            return ReadResult(None, {})
        spec = dict(props.get("spec") or {})
        desired = dict(spec.get("config") or {})
        live = {k: (desired[k] if k in desired and same(k, desired[k], state.config.get(k))
                    else state.config.get(k)) for k in desired}
        spec.update({"config": live, "node": state.node, "vmid": state.vmid})
        ip = vr.guest_ip(state.node, state.vmid, str(spec.get("ip", ""))) if state.running \
            else None
        return ReadResult(id_, _outs({**props, "spec": spec}, ip,
                                     state.pending_keys if state.running else []))

    # diff: node/template/vmid/storage replace (delete first: the vmid is fixed); a pending
    # reboot under reboot_policy when-required is a change, so that update reboots
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Compare old and new properties.

        ``node``/``template_vmid``/``vmid``/``storage`` force a replacement, deleting first (the
        VMID is fixed); a pending reboot under ``reboot_policy: when-required`` counts as a change
        so that the update reboots.

        Args:
            _id: The VMID as text (unused).
            olds: The old outputs.
            news: The new inputs.

        Returns:
            Whether anything changed, which ``spec.*`` fields force a replacement, and
            ``delete_before_replace=True``.
        """
        old, new = olds.get("spec", {}), news["spec"]
        replaces = [f"spec.{f}" for f in REPLACE_FIELDS if str(old.get(f)) != str(new.get(f))]
        config_changed = old.get("config") != new.get("config") or any(
            old.get(k) != new.get(k) for k in ("disk_size", "gpus", "ip", "name"))
        reboot_due = bool(olds.get("pending_reboot")) and \
            news.get("reboot_policy") == "when-required"
        changes = bool(replaces) or config_changed or reboot_due or \
            changed_connection(olds, news) or olds.get("reboot_policy") != \
            news.get("reboot_policy")
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

    # update: apply the diff in place (hot / pending reboot per reboot_policy)
    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Apply the change in place (hot-plug, or pending reboot per ``reboot_policy``).

        Args:
            _id: The VMID as text (unused).
            _olds: The old outputs (unused).
            news: The new inputs.

        Returns:
            The new outputs with ``ip`` and ``pending_reboot``.

        Raises:
            OwnershipError: The VM at the VMID is not the stack's.
            ProxmoxError: A call failed.
            ProxmoxTaskError: A PVE task failed or timed out.
        """
        out = _reconciler(news).ensure(spec_from(news["spec"]), allow_replace=False)
        return UpdateResult(outs=_outs(news, out.ip, out.pending_reboot))

    # delete: graceful shutdown → stop → destroy with purge; only VMs the stack owns
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Delete the VM: graceful shutdown → stop → destroy with purge; only VMs the stack owns.

        Args:
            id_: The VMID as text.
            props: The resource's outputs (owner tag and clone description from ``spec``).

        Raises:
            OwnershipError: The stack does not own the VM.
            ProxmoxError: A call failed.
            ProxmoxTaskError: A PVE task failed or timed out.
        """
        spec = props.get("spec", {})
        _reconciler(props).delete(int(id_), str(spec.get("owner_tag", "")),
                                  str(spec.get("config", {}).get("description", "")),
                                  name=str(spec.get("name", id_)))


class GpuVm(Resource, module="proxmox", name="GpuVm"):
    """A GPU VM cloned from its node's template, GPUs attached through PCI mappings.

    Args:
        name: Pulumi resource name (the VM name).
        spec: The planned VM.
        endpoint: The PVE endpoint (or an Output of one); its token secret is stored encrypted.
        reboot_policy: ``never`` or ``when-required`` (see :class:`VmReconciler`).
        task_timeout_s: Timeout of each PVE task, in seconds.
        opts: Pulumi resource options.

    Attributes:
        ip: IPv4 address the guest agent reported (``""`` when unknown).
        pending_reboot: Config keys pending until a reboot.
        spec: The VM spec as stored in the state.
    """

    ip: pulumi.Output[str]
    pending_reboot: pulumi.Output[list[str]]
    spec: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, spec: GpuVmSpec, endpoint: Any, *,
                 reboot_policy: str = "never", task_timeout_s: float = 900.0,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"spec": spec_to_dict(spec), "reboot_policy": reboot_policy,
                 "task_timeout_s": task_timeout_s, "ip": None, "pending_reboot": None,
                 **connection_inputs(endpoint)}
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(GpuVmProvider(), name, props, opts)
