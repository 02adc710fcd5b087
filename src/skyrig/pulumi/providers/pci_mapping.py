"""Dynamic provider for a cluster PCI mapping: measured hardware → ``/cluster/mapping/pci``."""

from __future__ import annotations

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

from skyrig.plan.proxmox import PciMappingEntrySpec, PciMappingSpec
from skyrig.proxmox.mappings import MappingReconciler
from skyrig.proxmox.ownership import mapping_text
from skyrig.pulumi.providers.connection import SECRET_OUTPUTS, client_from, connection_inputs


def spec_from(d: dict[str, Any]) -> PciMappingSpec:
    """Rebuild a :class:`PciMappingSpec` from its dict in Pulumi's state.

    Args:
        d: The ``spec`` property (see :func:`spec_to_dict`).

    Returns:
        The spec.

    Raises:
        KeyError: ``id``, ``entries`` or an entry's ``node``/``path``/``vendor_device`` is missing.
    """
    return PciMappingSpec(id=str(d["id"]), description=str(d.get("description", "")),
                          model=str(d.get("model", "")), entries=tuple(
        PciMappingEntrySpec(node=str(e["node"]), path=str(e["path"]),
                            vendor_device=str(e["vendor_device"])) for e in d["entries"]),
        owner_tag=str(d.get("owner_tag", "")), adopt_existing=bool(d.get("adopt_existing")))


def spec_to_dict(spec: PciMappingSpec) -> dict[str, Any]:
    """Return a :class:`PciMappingSpec` as a plain dict for Pulumi's state.

    Args:
        spec: The planned mapping.

    Returns:
        ``id``, ``description``, ``model``, ``entries`` (``node``, ``path``, ``vendor_device``),
        ``owner_tag`` and ``adopt_existing``.
    """
    return {"id": spec.id, "description": spec.description, "model": spec.model,
            "entries": [{"node": e.node, "path": e.path, "vendor_device": e.vendor_device}
                        for e in spec.entries],
            "owner_tag": spec.owner_tag, "adopt_existing": spec.adopt_existing}


class PciMappingProvider(ResourceProvider):
    """Translate between Pulumi and :class:`MappingReconciler` (no Proxmox logic here).

    Implements Pulumi's dynamic ``ResourceProvider`` (Pulumi docs: "Dynamic Resource Providers");
    the resource id is the mapping id.
    """

    # create: measure the hardware (fail-closed preflight), then create or adopt the mapping
    def create(self, props: dict[str, Any], ours: bool = False) -> CreateResult:
        """Measure the hardware (fail-closed preflight), then create or adopt the mapping.

        Args:
            props: Inputs: ``spec`` and the connection keys.
            ours: Whether Pulumi's state already says this stack made the mapping (updates).

        Returns:
            Id = mapping id; outputs = inputs plus ``map`` (the written map strings).

        Raises:
            PreflightError: The hardware preflight failed; nothing was changed.
            OwnershipError: A mapping of that id exists and is not this stack's.
            ProxmoxError: A call failed.
        """
        spec = spec_from(props["spec"])
        mr = MappingReconciler(client_from(props), recorded=[spec.id] if ours else [])
        out = mr.ensure(spec, mr.measure([spec])[spec.id])
        return CreateResult(id_=spec.id, outs={**props, "map": out.map})

    # read: the live mapping (refresh shows drift in `map` and `description`)
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Read the live mapping (refresh shows drift in ``map`` and ``description``).

        Args:
            id_: The mapping id.
            props: The resource's last known properties.

        Returns:
            The live properties (description without the owner marker), or an empty result (id
            ``None``) when the mapping is gone.

        Raises:
            ProxmoxError: The read failed.
        """
        live = MappingReconciler(client_from(props)).live().get(id_)
        if live is None:
            return ReadResult(None, {})
        spec = dict(props.get("spec") or {"id": id_, "entries": []})
        spec["description"] = mapping_text(live.get("description"))
        return ReadResult(id_, {**props, "spec": spec, "map": list(live.get("map", []))})

    # diff: a new id replaces the mapping; anything else updates it in place
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Compare old and new properties: a new id replaces the mapping, anything else updates it.

        Args:
            _id: The mapping id (unused).
            olds: The old outputs.
            news: The new inputs.

        Returns:
            Whether anything changed, ``["spec"]`` as replacing when the id changed, and
            ``delete_before_replace=True``.
        """
        replaces = ["spec"] if olds.get("spec", {}).get("id") != news["spec"]["id"] else []
        changes = olds.get("spec") != news.get("spec") or bool(replaces)
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

    # update: re-measure and write the mapping (in Pulumi's state: this stack made it)
    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Re-measure and write the mapping (in Pulumi's state, so this stack made it).

        Args:
            _id: The mapping id (unused).
            _olds: The old outputs (unused).
            news: The new inputs.

        Returns:
            The new outputs with ``map``.

        Raises:
            PreflightError: The hardware preflight failed; nothing was changed.
            ProxmoxError: A call failed.
        """
        return UpdateResult(outs=self.create(news, ours=True).outs)

    # delete: remove the mapping unless a VM still uses it (idempotent in PVE)
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Delete the mapping unless a VM still uses it (already gone is fine).

        Args:
            id_: The mapping id.
            props: The resource's outputs (owner tag from ``spec``).

        Raises:
            OwnershipError: The stack does not own the mapping.
            ProxmoxError: VMs still reference it (named in the message), or a call failed.
        """
        tag = str((props.get("spec") or {}).get("owner_tag", ""))
        MappingReconciler(client_from(props), recorded=[id_]).delete(id_, tag)


class PciMapping(Resource, module="proxmox", name="PciMapping"):
    """A cluster PCI mapping built from measured hardware.

    Args:
        name: Pulumi resource name (the mapping id).
        spec: The planned mapping.
        endpoint: The PVE endpoint (or an Output of one); its token secret is stored encrypted.
        opts: Pulumi resource options.

    Attributes:
        map: The mapping's ``map`` entries as written (PVE property strings).
        spec: The mapping spec as stored in the state.
    """

    map: pulumi.Output[list[str]]
    spec: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, spec: PciMappingSpec, endpoint: Any,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"spec": spec_to_dict(spec), "map": None, **connection_inputs(endpoint)}
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(PciMappingProvider(), name, props, opts)
