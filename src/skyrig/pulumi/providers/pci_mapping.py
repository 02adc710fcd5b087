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
    return PciMappingSpec(id=str(d["id"]), description=str(d.get("description", "")),
                          model=str(d.get("model", "")), entries=tuple(
        PciMappingEntrySpec(node=str(e["node"]), path=str(e["path"]),
                            vendor_device=str(e["vendor_device"])) for e in d["entries"]),
        owner_tag=str(d.get("owner_tag", "")), adopt_existing=bool(d.get("adopt_existing")))


def spec_to_dict(spec: PciMappingSpec) -> dict[str, Any]:
    return {"id": spec.id, "description": spec.description, "model": spec.model,
            "entries": [{"node": e.node, "path": e.path, "vendor_device": e.vendor_device}
                        for e in spec.entries],
            "owner_tag": spec.owner_tag, "adopt_existing": spec.adopt_existing}


class PciMappingProvider(ResourceProvider):
    """Translates between Pulumi and :class:`MappingReconciler` (no Proxmox logic here)."""

    # create: measure the hardware (fail-closed preflight), then create or adopt the mapping
    def create(self, props: dict[str, Any], ours: bool = False) -> CreateResult:
        spec = spec_from(props["spec"])
        mr = MappingReconciler(client_from(props), recorded=[spec.id] if ours else [])
        out = mr.ensure(spec, mr.measure([spec])[spec.id])
        return CreateResult(id_=spec.id, outs={**props, "map": out.map})

    # read: the live mapping (refresh shows drift in `map` and `description`)
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        live = MappingReconciler(client_from(props)).live().get(id_)
        if live is None:
            return ReadResult(None, {})
        spec = dict(props.get("spec") or {"id": id_, "entries": []})
        spec["description"] = mapping_text(live.get("description"))
        return ReadResult(id_, {**props, "spec": spec, "map": list(live.get("map", []))})

    # diff: a new id replaces the mapping; anything else updates it in place
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = ["spec"] if olds.get("spec", {}).get("id") != news["spec"]["id"] else []
        changes = olds.get("spec") != news.get("spec") or bool(replaces)
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

    # update: re-measure and write the mapping (in Pulumi's state: this stack made it)
    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.create(news, ours=True).outs)

    # delete: remove the mapping unless a VM still uses it (idempotent in PVE)
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        tag = str((props.get("spec") or {}).get("owner_tag", ""))
        MappingReconciler(client_from(props), recorded=[id_]).delete(id_, tag)


class PciMapping(Resource, module="proxmox", name="PciMapping"):
    """A cluster PCI mapping built from measured hardware."""

    map: pulumi.Output[list[str]]
    spec: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, spec: PciMappingSpec, endpoint: Any,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"spec": spec_to_dict(spec), "map": None, **connection_inputs(endpoint)}
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(PciMappingProvider(), name, props, opts)
