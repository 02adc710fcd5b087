"""Measured PCI hardware and the fail-closed passthrough preflight (pure functions).

A PCI mapping is built from what ``GET /nodes/{node}/hardware/pci`` reports, never from what the
stack *thinks* is there: vendor:device of function 0, its subsystem id and its IOMMU group. The
preflight refuses (``PreflightError``) when

* the device is missing at the path, or is another device than the stack's GPU model;
* the node has no IOMMU (``iommugroup`` −1);
* the card shares its IOMMU group with a device that is not part of the mapping (bridges, class
  ``06xx``, are ignored as PVE's lspci hides them by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skyrig.errors import PreflightError
from skyrig.plan.proxmox import PciMappingSpec


@dataclass(frozen=True)
class MeasuredEntry:
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
    """Measure one mapping entry on ``devices`` (the node's hardware list); (entry, problems)."""
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
    others = [d for d in devices
              if int(d.get("iommugroup", -2)) == group
              and not str(d.get("id", "")).startswith(path + ".")
              and not _hex(d.get("class")).startswith("06")]
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


def measure_mappings(specs: list[PciMappingSpec], hardware: dict[str, list[dict[str, Any]]]
                     ) -> dict[str, list[MeasuredEntry]]:
    """Measure every mapping; raise one PreflightError listing every problem."""
    out: dict[str, list[MeasuredEntry]] = {}
    problems: list[dict[str, Any]] = []
    for spec in specs:
        entries: list[MeasuredEntry] = []
        for e in spec.entries:
            devices = hardware.get(e.node)
            if devices is None:
                problems.append({"mapping": spec.id, "node": e.node, "path": e.path,
                                 "problem": "node missing",
                                 "detail": f"node {e.node} is not in the cluster",
                                 "fix": "fix skyrig:nodes or the mapping's node"})
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
