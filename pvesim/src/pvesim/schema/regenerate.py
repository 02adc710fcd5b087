"""Regenerate ``pve-8.4-subset.json`` from the full PVE API schema (developer tool).

Usage: ``python -m pvesim.schema.regenerate /path/to/pve-8.4-apischema.json``

Keeps only the paths pvesim covers and drops the prose (``description``, ``verbose_description``,
``format_description``) to keep the vendored file small. Nothing else is changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COVERED_PATHS = (
    "/version",
    "/access/ticket",
    "/nodes",
    "/nodes/{node}/status",
    "/cluster/resources",
    "/cluster/nextid",
    "/cluster/mapping/pci",
    "/cluster/mapping/pci/{id}",
    "/nodes/{node}/storage",
    "/nodes/{node}/storage/{storage}/content",
    "/nodes/{node}/qemu",
    "/nodes/{node}/qemu/{vmid}",
    "/nodes/{node}/qemu/{vmid}/config",
    "/nodes/{node}/qemu/{vmid}/pending",
    "/nodes/{node}/qemu/{vmid}/clone",
    "/nodes/{node}/qemu/{vmid}/status",
    "/nodes/{node}/qemu/{vmid}/status/current",
    "/nodes/{node}/qemu/{vmid}/status/start",
    "/nodes/{node}/qemu/{vmid}/status/stop",
    "/nodes/{node}/qemu/{vmid}/status/shutdown",
    "/nodes/{node}/qemu/{vmid}/status/reboot",
    "/nodes/{node}/qemu/{vmid}/resize",
    "/nodes/{node}/qemu/{vmid}/template",
    "/nodes/{node}/qemu/{vmid}/migrate",
    "/nodes/{node}/qemu/{vmid}/cloudinit",
    "/nodes/{node}/qemu/{vmid}/cloudinit/dump",
    "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    "/nodes/{node}/tasks",
    "/nodes/{node}/tasks/{upid}",
    "/nodes/{node}/tasks/{upid}/status",
    "/nodes/{node}/tasks/{upid}/log",
    "/nodes/{node}/hardware/pci",
    # api/monitoring.py: what prometheus-pve-exporter reads, and a read-only token for it
    "/cluster/status",
    "/cluster/config/qdevice",
    "/cluster/backup-info/not-backed-up",
    "/nodes/{node}/lxc",
    "/nodes/{node}/replication",
    "/nodes/{node}/replication/{id}/status",
    "/nodes/{node}/subscription",
    "/access/users",
    "/access/users/{userid}/token/{tokenid}",
    "/access/acl",
)

_PROSE = {"description", "verbose_description", "format_description"}


def _strip(value: Any, names: bool = False) -> Any:
    """Drop prose keys of schema objects; ``names`` marks a map of property names (whose keys,
    such as a parameter called ``description``, are kept)."""
    if isinstance(value, dict):
        if names:
            return {k: _strip(v) for k, v in value.items()}
        return {
            k: _strip(v, names=k in ("properties", "format") and isinstance(v, dict))
            for k, v in value.items()
            if k not in _PROSE or isinstance(v, dict)
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def trim(full: list[dict[str, Any]]) -> dict[str, Any]:
    flat: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        flat[node["path"]] = node.get("info", {})
        for child in node.get("children") or []:
            walk(child)

    for root in full:
        walk(root)
    out: dict[str, Any] = {}
    for path in COVERED_PATHS:
        info = flat[path]
        out[path] = {method: _strip(spec) for method, spec in sorted(info.items())}
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[1])
    dst = Path(__file__).with_name("pve-8.4-subset.json")
    data = trim(json.loads(src.read_text()))
    dst.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {dst} ({dst.stat().st_size} bytes, {len(data)} paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
