"""Measured PCI hardware and the fail-closed passthrough preflight (pure functions).

A PCI mapping is built from what ``GET /nodes/{node}/hardware/pci`` reports, never from what the
stack *thinks* is there: vendor:device of function 0, its subsystem id and its IOMMU group. The
preflight refuses (``PreflightError``) when

* the device is missing at the path, or is another device than the stack's GPU model;
* the node has no IOMMU (``iommugroup`` −1);
* the card shares its IOMMU group with a device that is not part of the mapping, including
  another GPU (:func:`group_blockers`: a group attaches to one VM; PCI bridges may stay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skyrig.errors import PreflightError
from skyrig.plan.proxmox import PciMappingSpec

#: PCI classes that may stay in a passed-through card's IOMMU group: PCI-to-PCI bridges (the
#: kernel's vfio group viability check lets bridges stay with the host).
BRIDGE_CLASSES = ("0x0604",)


def group_blockers(unit: set[str], members: list[tuple[str, str]],
                   bridge_classes: tuple[str, ...] | list[str] = BRIDGE_CLASSES) -> list[str]:
    """Return the members of an IOMMU group that block passing a unit through (THE rule).

    An IOMMU group is attached to exactly one VM, as a whole, so every member of the group of a
    passed-through unit (the PCI functions that go to one VM) must be a function of that same unit
    or a PCI bridge. Every other member, another device or a function of another requested card
    alike, blocks the passthrough. Source: the kernel's VFIO group viability
    (Documentation/driver-api/vfio.rst) and PVE's PCI passthrough guide (pve-docs qm "PCI(e)
    Passthrough").

    roles/proxmox_gpu_host/library/proxmox_gpu_host_facts.py carries this function verbatim
    (an Ansible module cannot import skyrig on the target); tests/proxmox/test_iommu_rule.py
    asserts the two are the same code and agree on one fixture table.

    Args:
        unit: Full PCI function addresses that go to the VM, e.g. ``{"0000:01:00.0",
            "0000:01:00.1"}``.
        members: The group's ``(address, class)`` pairs; class as sysfs or PVE write it
            (``0x030000`` or ``030000``).
        bridge_classes: Class prefixes allowed to stay with the host (default: PCI-to-PCI
            bridges, ``0x0604``).

    Returns:
        The blocking addresses in ``members`` order; empty means the passthrough is safe.
    """
    blockers = []
    for address, pci_class in members:
        if address in unit:
            continue
        cls = pci_class.lower()
        if not cls.startswith("0x"):
            cls = "0x" + cls
        if any(cls.startswith(prefix.lower()) for prefix in bridge_classes):
            continue
        blockers.append(address)
    return blockers


@dataclass(frozen=True)
class MeasuredEntry:
    """One node's entry of a PCI mapping as measured on the hardware.

    Attributes:
        node: PVE node name.
        path: PCI slot address without function, e.g. ``0000:01:00``.
        vendor_device: ``vendor:device`` of function 0 in lower-case hex, e.g. ``10de:24b0``.
        subsystem_id: ``subsystem_vendor:subsystem_device`` hex, or ``None`` when PVE gave none.
        iommugroup: IOMMU group number (>= 0).
        map_string: The entry as PVE's mapping ``map`` property string (see
            :meth:`~skyrig.plan.proxmox.PciMappingEntrySpec.as_map_string`).
    """
    node: str
    path: str
    vendor_device: str
    subsystem_id: str | None
    iommugroup: int
    map_string: str


def _hex(value: Any) -> str:
    return str(value or "").lower().removeprefix("0x")


Problems = list[dict[str, Any]]


def measure_entry(spec: PciMappingSpec, node: str, path: str, expected: str,
                  devices: list[dict[str, Any]]) -> tuple[MeasuredEntry | None, Problems]:
    """Measure one mapping entry on a node's hardware list.

    Checks, in order: a function 0 exists at ``path`` (``<path>.0``), it is the expected
    ``vendor:device``, the node has an IOMMU (``iommugroup`` >= 0), and its group holds nothing but
    the card's own functions and PCI bridges (:func:`group_blockers`).

    Args:
        spec: The planned mapping; its entry for ``node``/``path`` gives the map string.
        node: PVE node name.
        path: PCI slot address without function, e.g. ``0000:01:00``.
        expected: Expected ``vendor:device`` hex of the GPU model, e.g. ``10de:24b0``.
        devices: The node's rows of ``GET /nodes/{node}/hardware/pci`` (PVE API; ``id``,
            ``vendor``, ``device``, ``class``, ``iommugroup``, ``subsystem_vendor``, ...).

    Returns:
        ``(entry, problems)``: the measured entry, or ``None`` with one problem dict
        (``mapping``, ``node``, ``path``, ``problem``, ``detail``, ``fix``) saying why not.
    """
    problems: list[dict[str, Any]] = []
    where = {"mapping": spec.id, "node": node, "path": path}
    functions = [d for d in devices if str(d.get("id", "")).startswith(path + ".")]
    fn0 = next((d for d in functions if str(d["id"]) == f"{path}.0"), None)
    if fn0 is None:
        problems.append({**where, "problem": "device missing",
                         "detail": f"no PCI device at {path}.0 on {node}",
                         "fix": "check the slot address in skyrig:nodes[].gpus / pci_mappings"})
        return None, problems
    found = f"{_hex(fn0.get('vendor'))}:{_hex(fn0.get('device'))}"
    if found != expected.lower():
        problems.append({**where, "problem": "wrong device",
                         "detail": f"{path}.0 is {found} ({fn0.get('device_name', '?')}), "
                                   f"expected {expected}",
                         "fix": "fix the GPU model or slot in the stack"})
        return None, problems
    group = int(fn0.get("iommugroup", -1))
    if group < 0:
        problems.append({**where, "problem": "no IOMMU",
                         "detail": f"{node} reports iommugroup -1: IOMMU is off",
                         "fix": "enable IOMMU (intel_iommu=on / amd_iommu=on) and reboot: "
                                "run the host-prep playbook"})
        return None, problems
    in_group = [d for d in devices if int(d.get("iommugroup", -2)) == group]
    blocking = set(group_blockers({str(d["id"]) for d in functions},
                                  [(str(d.get("id", "")), str(d.get("class", "")))
                                   for d in in_group]))
    others = [d for d in in_group if str(d.get("id", "")) in blocking]
    if others:
        names = ", ".join(f"{d['id']} ({d.get('device_name', _hex(d.get('class')))})"
                          for d in others)
        problems.append({**where, "problem": "shared IOMMU group",
                         "detail": f"IOMMU group {group} also holds {names}",
                         "fix": "move the card to another slot or fix ACS in the BIOS; passing "
                                "it through would take those devices from the host"})
        return None, problems
    sv, sd = _hex(fn0.get("subsystem_vendor")), _hex(fn0.get("subsystem_device"))
    subsystem = f"{sv}:{sd}" if sv and sd else None
    entry = next(e for e in spec.entries if e.node == node and e.path == path)
    return MeasuredEntry(node=node, path=path, vendor_device=found, subsystem_id=subsystem,
                         iommugroup=group,
                         map_string=entry.as_map_string(group, subsystem)), problems


def _node_problem(node: str, error: str | None) -> tuple[str, str, str]:
    """(problem, detail, fix) for a node whose hardware could not be read."""
    text = (error or "").lower()
    if error is None or text.startswith("not in the cluster") or "hostname lookup" in text:
        return ("node missing", f"node {node} is not in the cluster"
                + (f" ({error})" if error else ""),
                "fix skyrig:nodes or the mapping's node")
    if error.startswith("403") or "permission check failed" in text:
        return ("permission denied", f"cannot read {node}'s PCI hardware (PVE: {error})",
                "grant Sys.Audit on /nodes/" + node + " to skyrig's token")
    return ("node unreachable", f"node {node} did not answer (PVE: {error})",
            f"bring {node} online (pvecm status) or remove its entries from the stack")


def measure_mappings(specs: list[PciMappingSpec], hardware: dict[str, list[dict[str, Any]]],
                     errors: dict[str, str] | None = None) -> dict[str, list[MeasuredEntry]]:
    """Measure every mapping entry fail-closed; refuse at once with every problem listed.

    Args:
        specs: The stack's planned cluster PCI mappings.
        hardware: Node → its rows of ``GET /nodes/{node}/hardware/pci``; a node missing here is
            a problem of each of its entries.
        errors: Node → PVE's error text for nodes whose hardware could not be read (e.g. ``403
            ...``, ``not in the cluster``), to say why.

    Returns:
        Mapping id → its measured entries, in spec order.

    Raises:
        PreflightError: Any entry is missing, another device, on a node without IOMMU, shares its
            IOMMU group, or its node could not be read; ``report`` lists every problem and nothing
            was changed.
    """
    out: dict[str, list[MeasuredEntry]] = {}
    problems: list[dict[str, Any]] = []
    errors = errors or {}
    for spec in specs:
        entries: list[MeasuredEntry] = []
        for e in spec.entries:
            devices = hardware.get(e.node)
            if devices is None:
                problem, detail, fix = _node_problem(e.node, errors.get(e.node))
                problems.append({"mapping": spec.id, "node": e.node, "path": e.path,
                                 "problem": problem, "detail": detail, "fix": fix})
                continue
            m, p = measure_entry(spec, e.node, e.path, e.vendor_device, devices)
            problems.extend(p)
            if m is not None:
                entries.append(m)
        out[spec.id] = entries
    if problems:
        lines = [f"  {p['mapping']} on {p['node']} {p['path']}: {p['problem']}: {p['detail']}"
                 f"\n      fix: {p['fix']}" for p in problems]
        raise PreflightError(
            "PCI passthrough preflight failed (fail-closed; nothing was changed):\n"
            + "\n".join(lines), report=problems)
    return out
