"""The provisioning record of a stack (``.skyrig/<stack>/provision.json``).

PVE shows the live config but not how a VM came to be: the record keeps the inputs that force a
replacement (template, storage), the mappings skyrig created (ownership: a mapping is deleted
only when this stack made it), the VMs skyrig started cloning (proof that a stale clone
placeholder is skyrig's) and the VMs' addresses as the last apply saw them. Both provisioning
paths (direct and Pulumi) write it; the Ansible inventory reads the addresses from it. Shape::

    {"mappings": ["a4000-pve1-0"], "vms": {"301": {"name": .., "node": .., "template_vmid": ..,
     "storage": ..}}, "ips": {"gpu-w-1": "10.0.0.31"}}

It holds no secrets.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from skyrig.plan.proxmox import GpuVmSpec


class ProvisionRecord:
    """The provisioning record of one stack, loaded from and saved to a JSON file.

    Thread-safe: provisioning threads may update it concurrently; every mutation is saved at once
    (written to a ``.tmp`` sibling, then renamed over the file). A missing or unreadable file starts
    an empty record.

    Args:
        path: The record file, ``.skyrig/<stack>/provision.json``.

    Attributes:
        path: The record file.
        data: The record itself, shaped as in the module docstring.
    """
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"mappings": [], "vms": {}, "ips": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
                self.data["mappings"] = list(loaded.get("mappings", []))
                self.data["vms"] = dict(loaded.get("vms", {}))
                self.data["ips"] = {str(k): str(v) for k, v in
                                    dict(loaded.get("ips", {})).items()}
            except (OSError, ValueError):
                pass

    def vm(self, vmid: int) -> dict[str, Any] | None:
        """Return the record of one VM skyrig created, if any.

        Args:
            vmid: The VMID.

        Returns:
            A copy of ``{"name", "node", "template_vmid", "storage"}`` as recorded, or ``None``.
        """
        with self._lock:
            v = self.data["vms"].get(str(vmid))
            return dict(v) if v else None

    def vms(self) -> dict[int, dict[str, Any]]:
        """Return every recorded VM.

        Returns:
            VMID → copy of its record (``name``, ``node``, ``template_vmid``, ``storage``).
        """
        with self._lock:
            return {int(k): dict(v) for k, v in self.data["vms"].items()}

    def put_vm(self, spec: GpuVmSpec) -> None:
        """Record that skyrig started making ``spec``'s VM, and save.

        Kept are the inputs that force a replacement (template VMID, target storage) and the node.

        Args:
            spec: The planned GPU VM.

        Raises:
            OSError: The record file cannot be written.
        """
        with self._lock:
            self.data["vms"][str(spec.vmid)] = {"name": spec.name, "node": spec.node,
                                                "template_vmid": spec.template_vmid,
                                                "storage": spec.storage}
        self.save()

    def drop_vm(self, vmid: int) -> None:
        """Forget one VM (after it was destroyed), and save.

        Args:
            vmid: The VMID; an unknown one is ignored.

        Raises:
            OSError: The record file cannot be written.
        """
        with self._lock:
            self.data["vms"].pop(str(vmid), None)
        self.save()

    def ips(self) -> dict[str, str]:
        """Return the VMs' addresses as the last apply (either path) reported them.

        Returns:
            VM name → IPv4 address as text, e.g. ``{"gpu-w-1": "10.0.0.31"}``.
        """
        with self._lock:
            return dict(self.data["ips"])

    def set_ips(self, ips: dict[str, str]) -> None:
        """Replace the recorded addresses (an apply reports every VM of the stack), and save.

        Args:
            ips: VM name → IPv4 address as text.

        Raises:
            OSError: The record file cannot be written.
        """
        with self._lock:
            self.data["ips"] = {str(k): str(v) for k, v in ips.items()}
        self.save()

    def mappings(self) -> list[str]:
        """Return the ids of the cluster PCI mappings this stack created.

        Returns:
            Mapping ids in creation order, e.g. ``["a4000-pve1-0"]``.
        """
        with self._lock:
            return list(self.data["mappings"])

    def put_mapping(self, mid: str) -> None:
        """Record that this stack created a cluster PCI mapping, and save.

        Args:
            mid: The mapping id (``/cluster/mapping/pci/{id}``); recorded once.

        Raises:
            OSError: The record file cannot be written.
        """
        with self._lock:
            if mid not in self.data["mappings"]:
                self.data["mappings"].append(mid)
        self.save()

    def drop_mapping(self, mid: str) -> None:
        """Forget a cluster PCI mapping (after it was deleted), and save.

        Args:
            mid: The mapping id; an unknown one is ignored.

        Raises:
            OSError: The record file cannot be written.
        """
        with self._lock:
            if mid in self.data["mappings"]:
                self.data["mappings"].remove(mid)
        self.save()

    def save(self) -> None:
        """Write the record atomically (``.tmp`` sibling, then rename), creating its directory.

        Raises:
            OSError: The file or its directory cannot be written.
        """
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.path)
