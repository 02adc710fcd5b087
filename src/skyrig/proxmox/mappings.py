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
    """Return the process-wide lock that serialises writes to one cluster config file.

    Args:
        name: The file below ``/etc/pve``, e.g. ``mapping/pci.cfg``.

    Returns:
        The same lock for the same name for the life of the process.
    """
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(name, threading.Lock())


def is_stale_digest(exc: ProxmoxError) -> bool:
    """Say whether PVE refused a write because the config file's digest is stale.

    PVE checks the ``digest`` parameter with ``PVE::Tools::assert_if_modified`` and answers
    ``detected modified configuration - file changed by other user?``.

    Args:
        exc: The error of a failed write.

    Returns:
        ``True`` when the message says the configuration was modified.
    """
    return STALE_DIGEST in (exc.pve_message or str(exc))


@dataclass
class MappingOutcome:
    """What reconciling one mapping did.

    Attributes:
        id: Mapping id.
        action: ``created``, ``updated``, ``unchanged`` or ``deleted``.
        map: The mapping's ``map`` entries after the action (PVE property strings).
        changes: Fields that changed (``map``, ``description``; ``*`` when created).
    """
    id: str
    action: MappingAction
    map: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _norm_entry(text: str) -> tuple[tuple[str, str], ...]:
    d = parse_prop("map", text)
    return tuple(sorted((k, v.lower().removeprefix("0x")) for k, v in d.items()))


def same_map(desired: list[str], live: list[str]) -> bool:
    """Say whether two ``map`` lists are the same mapping, ignoring order, case and ``0x``.

    Args:
        desired: Entries skyrig would write (``id=..,iommugroup=..,node=..,path=..``).
        live: Entries as ``GET /cluster/mapping/pci`` returns them.

    Returns:
        ``True`` when every entry matches one-to-one.
    """
    return sorted(map(_norm_entry, desired)) == sorted(map(_norm_entry, live))


_HOSTPCI = re.compile(r"^hostpci\d+$")


class MappingReconciler:
    """Read, measure and apply cluster PCI mappings (PVE API ``/cluster/mapping/pci``).

    Caches the live mapping list (``live``) for the reconciler's life; writes update the cache.

    Args:
        client: The PVE session.
        recorded: Mapping ids the provisioning record (or Pulumi's state) says this stack made;
            with the owner marker in the description they decide ownership
            (:func:`skyrig.proxmox.ownership.mapping_owned`).
    """

    def __init__(self, client: PveClient, *, recorded: Iterable[str] = ()) -> None:
        self.c = client
        self.recorded = set(recorded)
        self._live: dict[str, dict[str, Any]] | None = None

    def hardware(self, nodes: set[str]) -> tuple[dict[str, list[dict[str, Any]]],
                                                 dict[str, str]]:
        """Read ``GET /nodes/{n}/hardware/pci`` for every node that carries a mapping entry.

        Every API error lands in the second dict (unknown node: ``hostname lookup … failed`` /
        ``unable to get IP for node … node offline?``; offline node: 595 ``no route to host``;
        missing ``Sys.Audit``: 403), refined with ``GET /nodes`` to ``not in the cluster`` / ``node
        offline``, so the preflight reports it with the other problems instead of failing on the
        first one.

        Args:
            nodes: PVE node names.

        Returns:
            ``(hardware, errors)``: node → its PCI device rows, and node → ``"<status> <PVE
            message>"`` for nodes that could not be read.
        """
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
        """Measure every mapping entry on the hardware, fail-closed.

        Args:
            specs: The planned mappings.

        Returns:
            Mapping id → its measured entries.

        Raises:
            PreflightError: Any entry fails the preflight or any node cannot be read; every problem
                is in its ``report`` (see :func:`skyrig.proxmox.hardware.measure_mappings`).
        """
        nodes = {e.node for s in specs for e in s.entries}
        hw, errors = self.hardware(nodes)
        return measure_mappings(specs, hw, errors)

    def live(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """Return the live mappings (``GET /cluster/mapping/pci``), cached.

        Args:
            refresh: Re-read even when cached.

        Returns:
            Mapping id → PVE's row (``id``, ``map``, ``description``, ``digest``, ...); the cache
            itself, not a copy.

        Raises:
            ProxmoxError: The read failed.
        """
        if self._live is None or refresh:
            rows = self.c.get("cluster/mapping/pci") or []
            self._live = {str(r["id"]): r for r in rows}
        return self._live

    def desired(self, spec: PciMappingSpec, measured: list[MeasuredEntry]) -> dict[str, Any]:
        """Return the body skyrig writes for a mapping.

        Args:
            spec: The planned mapping.
            measured: Its measured entries.

        Returns:
            ``{"id", "description" (with the owner marker), "map" (list of map strings)}`` as
            ``POST /cluster/mapping/pci`` takes it.
        """
        return {"id": spec.id, "description": mapping_description(spec.description,
                                                                  spec.owner_tag),
                "map": [m.map_string for m in measured]}

    def owned(self, mapping_id: str, tag: str) -> bool:
        """Say whether the live mapping belongs to ``tag``'s stack.

        Args:
            mapping_id: Mapping id.
            tag: The stack's owner tag, ``skyrig-<stack>``.

        Returns:
            ``False`` when the mapping does not exist or someone else owns it.

        Raises:
            ProxmoxError: Reading the live mappings failed.
        """
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
        """Return the VMs that reference the mapping, for messages (see :meth:`user_vms`).

        Args:
            mapping_id: Mapping id.

        Returns:
            ``"<name> (vmid <id> on <node>)"`` per VM, by VMID.

        Raises:
            ProxmoxError: Listing the cluster's VMs failed.
        """
        return [f"{name} (vmid {vmid} on {node})" for name, vmid, node in
                self.user_vms(mapping_id)]

    def user_vms(self, mapping_id: str) -> list[tuple[str, int, str]]:
        """Return every VM whose ``hostpciN`` references the mapping (pending values included).

        Lists ``GET /cluster/resources?type=vm`` and reads each QEMU VM's config (one
        ``GET /nodes/{node}/qemu/{vmid}/config`` per VM; templates are skipped, VMs gone meanwhile
        are ignored).

        Args:
            mapping_id: Mapping id.

        Returns:
            ``(name, vmid, node)`` per VM, by VMID.

        Raises:
            ProxmoxError: Listing the cluster's VMs failed.
        """
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
        """Return the fields of the live mapping that differ from the desired one.

        Args:
            spec: The planned mapping.
            measured: Its measured entries.

        Returns:
            A subset of ``["map", "description"]``; ``["*"]`` when the mapping does not exist; empty
            when it matches.

        Raises:
            ProxmoxError: Reading the live mappings failed.
        """
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

        PVE API ``POST /cluster/mapping/pci`` (create) or ``PUT /cluster/mapping/pci/{id}`` with the
        file's ``digest`` (update). Writes to ``mapping/pci.cfg`` are serialised in this process; an
        update re-reads the mapping (and with it the file's current digest) right before the PUT,
        and on PVE's ``detected modified configuration`` (or ``already defined``) answer re-diffs
        and retries once.

        Args:
            spec: The planned mapping.
            measured: Its measured entries (from :meth:`measure`).

        Returns:
            ``created``, ``updated`` (with the changed fields) or ``unchanged``.

        Raises:
            OwnershipError: A mapping of this id exists, this stack does not own it and
                ``adopt_existing`` is off.
            ProxmoxError: A read or write failed (a stale digest only after the one retry).
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
        """Delete a mapping this stack owns and no VM references.

        PVE API ``DELETE /cluster/mapping/pci/{id}``, serialised with the other writes to
        ``mapping/pci.cfg``.

        Args:
            mapping_id: Mapping id.
            tag: The stack's owner tag; empty skips the ownership check.

        Returns:
            ``True`` when deleted, ``False`` when it was already gone.

        Raises:
            OwnershipError: ``tag`` is given and the stack does not own the mapping.
            ProxmoxError: VMs still reference it (deleting it would make them fail to start with
                ``PCI device mapping not found``; the message names them), or a call failed.
        """
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
