"""PCI mapping reconcile: measure hardware → preflight → read → diff → create/update/delete.

Mappings are cluster-wide (``/cluster/mapping/pci``, synchronous calls). Each one is built from
measured values (path, vendor:device, subsystem id, IOMMU group) so PVE never calls it
"incomplete" and its start-time ``assert_valid`` passes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from skyrig.errors import OwnershipError, ProxmoxError
from skyrig.plan.proxmox import PciMappingSpec
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.hardware import MeasuredEntry, measure_mappings
from skyrig.proxmox.ownership import mapping_description, mapping_owned, mapping_owner
from skyrig.proxmox.vmdiff import parse_prop

MappingAction = Literal["created", "updated", "unchanged", "deleted"]

#: PVE's answer when a write carries a digest of ``mapping/pci.cfg`` that is no longer current
#: (``PVE::Tools::assert_if_modified``): the digest covers the whole file, so after any write
#: every other entry's digest is stale.
STALE_DIGEST = "detected modified configuration"

#: One writer at a time per cluster config file in this process (direct apply threads and the
#: Pulumi dynamic providers, which run in parallel in one process, share it).
_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def config_file_lock(name: str) -> threading.Lock:
    """The process-wide lock that serialises writes to one cluster config file
    (``mapping/pci.cfg``)."""
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(name, threading.Lock())


def is_stale_digest(exc: ProxmoxError) -> bool:
    return STALE_DIGEST in (exc.pve_message or str(exc))


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


_HOSTPCI = re.compile(r"^hostpci\d+$")


class MappingReconciler:
    """Reads, measures and applies cluster PCI mappings.

    ``recorded``: mapping ids the provisioning record (or Pulumi's state) says this stack made;
    with the owner marker in the description they decide ownership
    (:func:`skyrig.proxmox.ownership.mapping_owned`)."""

    def __init__(self, client: PveClient, *, recorded: Iterable[str] = ()) -> None:
        self.c = client
        self.recorded = set(recorded)
        self._live: dict[str, dict[str, Any]] | None = None

    def hardware(self, nodes: set[str]) -> tuple[dict[str, list[dict[str, Any]]],
                                                 dict[str, str]]:
        """``GET /nodes/{n}/hardware/pci`` for every node that carries a mapping entry.

        Returns (node → device list, node → PVE's error). Every API error lands in the second
        dict (unknown node: ``hostname lookup … failed`` / ``unable to get IP for node … node
        offline?``; offline node: 595 ``no route to host``; missing ``Sys.Audit``: 403), so the
        preflight reports it with the other problems instead of failing on the first one."""
        out: dict[str, list[dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        for node in sorted(nodes):
            try:
                out[node] = list(self.c.request("GET", f"nodes/{node}/hardware/pci", node=node)
                                 or [])
            except ProxmoxError as exc:
                status = f"{exc.status} " if exc.status is not None else ""
                errors[node] = f"{status}{exc.pve_message or exc.message}".strip()
        if errors:
            try:  # PVE answers an unknown node and an offline one alike: ask the cluster
                members = {str(n.get("node")): str(n.get("status", ""))
                           for n in self.c.get("nodes") or []}
            except ProxmoxError:
                members = {}
            for node in errors:
                if members and node not in members:
                    errors[node] = f"not in the cluster ({errors[node]})"
                elif members.get(node) == "offline":
                    errors[node] = f"node offline ({errors[node]})"
        return out, errors

    def measure(self, specs: list[PciMappingSpec]) -> dict[str, list[MeasuredEntry]]:
        """Measured entries per mapping id; :class:`PreflightError` (with every problem in its
        ``report``) when any entry fails the preflight or any node cannot be read."""
        nodes = {e.node for s in specs for e in s.entries}
        hw, errors = self.hardware(nodes)
        return measure_mappings(specs, hw, errors)

    def live(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        if self._live is None or refresh:
            rows = self.c.get("cluster/mapping/pci") or []
            self._live = {str(r["id"]): r for r in rows}
        return self._live

    def desired(self, spec: PciMappingSpec, measured: list[MeasuredEntry]) -> dict[str, Any]:
        return {"id": spec.id, "description": mapping_description(spec.description,
                                                                  spec.owner_tag),
                "map": [m.map_string for m in measured]}

    def owned(self, mapping_id: str, tag: str) -> bool:
        """Whether the live mapping belongs to ``tag``'s stack (False when it does not exist)."""
        live = self.live().get(mapping_id)
        return live is not None and mapping_owned(live, tag, mapping_id in self.recorded)

    def _check_adopt(self, spec: PciMappingSpec) -> None:
        live = self.live().get(spec.id)
        if live is None or not spec.owner_tag or spec.adopt_existing:
            return
        if mapping_owned(live, spec.owner_tag, spec.id in self.recorded):
            return
        owner = mapping_owner(live.get("description"))
        users = self.users(spec.id)
        raise OwnershipError(
            f"PCI mapping {spec.id} already exists and was not created by this stack ("
            + (f"owner {owner}" if owner else "made by hand or by another tool")
            + (f"; used by {', '.join(users)}" if users else "") + "); skyrig will not "
            "rewrite it",
            hint=f"give the stack's mapping another id, or set adopt_existing: true on "
                 f"skyrig:pci_mappings[id={spec.id}] to take it over (skyrig then rewrites it "
                 "and deletes it on down)")

    def users(self, mapping_id: str) -> list[str]:
        """VMs whose ``hostpciN`` references the mapping, as ``'<name> (vmid <id> on <node>)'``
        (see :meth:`user_vms`)."""
        return [f"{name} (vmid {vmid} on {node})" for name, vmid, node in
                self.user_vms(mapping_id)]

    def user_vms(self, mapping_id: str) -> list[tuple[str, int, str]]:
        """``(name, vmid, node)`` of every VM whose ``hostpciN`` references the mapping
        (pending values included). One ``/config`` read per VM in the cluster."""
        rows = self.c.get("cluster/resources", type="vm") or []
        out = []
        for r in sorted(rows, key=lambda r: int(r.get("vmid", 0))):
            if r.get("type", "qemu") != "qemu" or "vmid" not in r or r.get("template"):
                continue
            node, vmid = str(r["node"]), int(r["vmid"])
            try:
                conf = self.c.request("GET", f"nodes/{node}/qemu/{vmid}/config", node=node,
                                      vmid=vmid) or {}
            except ProxmoxError:
                continue  # gone meanwhile
            if any(_HOSTPCI.match(str(key)) and
                   parse_prop("hostpci", str(value)).get("mapping") == mapping_id
                   for key, value in conf.items()):
                out.append((str(conf.get("name", r.get("name", vmid))), vmid, node))
        return out

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

    def _fresh(self, mapping_id: str) -> dict[str, Any] | None:
        """Re-read one mapping (current digest) and refresh the cache; None when absent."""
        try:
            row = self.c.request("GET", f"cluster/mapping/pci/{mapping_id}")
        except ProxmoxError as exc:
            if exc.status == 500 and "not found" in (exc.pve_message or ""):
                self.live().pop(mapping_id, None)
                return None
            raise
        entry = {"id": mapping_id, **dict(row or {})}
        self.live()[mapping_id] = entry
        return entry

    def ensure(self, spec: PciMappingSpec, measured: list[MeasuredEntry]) -> MappingOutcome:
        """Create or update the mapping so that it matches ``spec`` and the measured hardware.

        Writes to ``mapping/pci.cfg`` are serialised in this process; an update re-reads the
        mapping (and with it the file's current digest) right before the PUT, and on PVE's
        ``detected modified configuration`` answer re-diffs and retries once.
        """
        want = self.desired(spec, measured)
        if not self.diff(spec, measured):
            return MappingOutcome(spec.id, "unchanged", want["map"])
        self._check_adopt(spec)
        with config_file_lock("mapping/pci.cfg"):
            for attempt in (1, 2):
                if self._live is not None and spec.id in self._live:
                    self._fresh(spec.id)
                changes = self.diff(spec, measured)
                if not changes:
                    return MappingOutcome(spec.id, "unchanged", want["map"])
                try:
                    if changes == ["*"]:
                        self.c.request("POST", "cluster/mapping/pci", want)
                        self.live()[spec.id] = dict(want)
                        return MappingOutcome(spec.id, "created", want["map"], ["*"])
                    digest = self.live()[spec.id].get("digest")
                    params = {"map": want["map"], "description": want["description"],
                              "digest": digest}
                    self.c.request("PUT", f"cluster/mapping/pci/{spec.id}", params)
                except ProxmoxError as exc:
                    if attempt == 1 and (is_stale_digest(exc)
                                         or "already defined" in (exc.pve_message or "")):
                        self.live(refresh=True)
                        continue
                    raise
                self.live()[spec.id] = {**self.live()[spec.id], **want}
                return MappingOutcome(spec.id, "updated", want["map"], changes)
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, mapping_id: str, tag: str = "") -> bool:
        """Delete a mapping this stack owns and no VM references (False: already gone).

        Raises :class:`OwnershipError` for a foreign mapping (``tag`` given and not the owner)
        and :class:`ProxmoxError` naming the VMs that still use it: deleting it would make them
        fail to start with ``PCI device mapping not found``."""
        live = self.live().get(mapping_id)
        if live is None:
            return False
        if tag and not mapping_owned(live, tag, mapping_id in self.recorded):
            raise OwnershipError(
                f"PCI mapping {mapping_id} was not created by stack owner {tag}; left alone",
                hint="skyrig deletes only the mappings it created")
        users = self.users(mapping_id)
        if users:
            raise ProxmoxError(
                f"PCI mapping {mapping_id} is still used by {', '.join(users)}; not deleted",
                hint="remove the hostpci entry from those VMs (or delete them), then re-run")
        with config_file_lock("mapping/pci.cfg"):
            self.c.request("DELETE", f"cluster/mapping/pci/{mapping_id}")
        self.live().pop(mapping_id, None)
        return True
