"""PCI mapping reconcile: measure hardware → preflight → read → diff → create/update/delete.

Mappings are cluster-wide (``/cluster/mapping/pci``, synchronous calls). Each one is built from
measured values (path, vendor:device, subsystem id, IOMMU group) so PVE never calls it
"incomplete" and its start-time ``assert_valid`` passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from skyrig.errors import ProxmoxError
from skyrig.plan.proxmox import PciMappingSpec
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.hardware import MeasuredEntry, measure_mappings
from skyrig.proxmox.vmdiff import parse_prop

MappingAction = Literal["created", "updated", "unchanged", "deleted"]


@dataclass
class MappingOutcome:
    id: str
    action: MappingAction
    map: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _norm_entry(text: str) -> tuple[tuple[str, str], ...]:
    d = parse_prop("map", text)
    return tuple(sorted((k, v.lower().removeprefix("0x")) for k, v in d.items()))


def same_map(desired: list[str], live: list[str]) -> bool:
    return sorted(map(_norm_entry, desired)) == sorted(map(_norm_entry, live))


class MappingReconciler:
    """Reads, measures and applies cluster PCI mappings."""

    def __init__(self, client: PveClient) -> None:
        self.c = client
        self._live: dict[str, dict[str, Any]] | None = None

    def hardware(self, nodes: set[str]) -> dict[str, list[dict[str, Any]]]:
        """``GET /nodes/{n}/hardware/pci`` for every node that carries a mapping entry."""
        out: dict[str, list[dict[str, Any]]] = {}
        for node in sorted(nodes):
            try:
                out[node] = list(self.c.request("GET", f"nodes/{node}/hardware/pci", node=node)
                                 or [])
            except ProxmoxError as exc:
                if exc.status in (403,):
                    raise
                if exc.status == 500 and "does not exist" not in (exc.pve_message or "") \
                        and "hostname lookup" not in (exc.pve_message or ""):
                    raise
                continue  # unknown node: reported by the preflight
        return out

    def measure(self, specs: list[PciMappingSpec]) -> dict[str, list[MeasuredEntry]]:
        nodes = {e.node for s in specs for e in s.entries}
        return measure_mappings(specs, self.hardware(nodes))

    def live(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        if self._live is None or refresh:
            rows = self.c.get("cluster/mapping/pci") or []
            self._live = {str(r["id"]): r for r in rows}
        return self._live

    def desired(self, spec: PciMappingSpec, measured: list[MeasuredEntry]) -> dict[str, Any]:
        return {"id": spec.id, "description": spec.description,
                "map": [m.map_string for m in measured]}

    def diff(self, spec: PciMappingSpec, measured: list[MeasuredEntry]) -> list[str]:
        """Field names that differ (``['*']`` when the mapping does not exist)."""
        live = self.live().get(spec.id)
        if live is None:
            return ["*"]
        want = self.desired(spec, measured)
        out = []
        if not same_map(want["map"], list(live.get("map", []))):
            out.append("map")
        if str(live.get("description", "")) != want["description"]:
            out.append("description")
        return out

    def ensure(self, spec: PciMappingSpec, measured: list[MeasuredEntry]) -> MappingOutcome:
        want = self.desired(spec, measured)
        changes = self.diff(spec, measured)
        if not changes:
            return MappingOutcome(spec.id, "unchanged", want["map"])
        if changes == ["*"]:
            self.c.request("POST", "cluster/mapping/pci", want)
            self.live()[spec.id] = dict(want)
            return MappingOutcome(spec.id, "created", want["map"], ["*"])
        digest = self.live()[spec.id].get("digest")
        params = {"map": want["map"], "description": want["description"], "digest": digest}
        self.c.request("PUT", f"cluster/mapping/pci/{spec.id}", params)
        self.live()[spec.id] = {**self.live()[spec.id], **want}
        return MappingOutcome(spec.id, "updated", want["map"], changes)

    def delete(self, mapping_id: str) -> bool:
        if mapping_id not in self.live():
            return False
        self.c.request("DELETE", f"cluster/mapping/pci/{mapping_id}")
        self.live().pop(mapping_id, None)
        return True
