"""The direct apply's record of what it made (``.skyrig/<stack>/provision.json``).

PVE shows the live config but not how a VM came to be: the record keeps the inputs that force a
replacement (template, storage) and the mappings skyrig created, so that a later apply can replace
a VM whose template changed and prune mappings that left the stack. It holds no secrets.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from skyrig.plan.proxmox import GpuVmSpec


class ProvisionRecord:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"mappings": [], "vms": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
                self.data["mappings"] = list(loaded.get("mappings", []))
                self.data["vms"] = dict(loaded.get("vms", {}))
            except (OSError, ValueError):
                pass

    def vm(self, vmid: int) -> dict[str, Any] | None:
        with self._lock:
            v = self.data["vms"].get(str(vmid))
            return dict(v) if v else None

    def vms(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return {int(k): dict(v) for k, v in self.data["vms"].items()}

    def put_vm(self, spec: GpuVmSpec) -> None:
        with self._lock:
            self.data["vms"][str(spec.vmid)] = {"name": spec.name, "node": spec.node,
                                                "template_vmid": spec.template_vmid,
                                                "storage": spec.storage}
        self.save()

    def drop_vm(self, vmid: int) -> None:
        with self._lock:
            self.data["vms"].pop(str(vmid), None)
        self.save()

    def mappings(self) -> list[str]:
        with self._lock:
            return list(self.data["mappings"])

    def put_mapping(self, mid: str) -> None:
        with self._lock:
            if mid not in self.data["mappings"]:
                self.data["mappings"].append(mid)
        self.save()

    def drop_mapping(self, mid: str) -> None:
        with self._lock:
            if mid in self.data["mappings"]:
                self.data["mappings"].remove(mid)
        self.save()

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.path)
