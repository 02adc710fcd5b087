"""Nothing left behind when skyrig replaces or drops a disk-like key it writes (issue 13 case
4): no ``unusedN`` entries, no orphaned volumes, no stale ``efidisk0``. The disk-like keys
skyrig writes are ``efidisk0`` (allocated from ``STORAGE:1``) and the boot disk's size (resize
only; a storage change replaces the VM); the cloud-init drive comes with the template. A
GPU VM must have OVMF and an EFI disk (stack validation), so efidisk0 is never dropped; when
it is re-allocated PVE moves the old volume to ``unusedN``, which skyrig destroys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from skyrig.plan import build_plan
from skyrig.proxmox.apply import apply_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.state import ProvisionRecord
from support import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def apply(root: Path, client: PveClient, policy: str = "when-required") -> Any:
    st = stack(root, "local")
    return apply_plan(build_plan(st), client, parallelism=2, reboot_policy=policy,  # type: ignore[arg-type]
                      task_timeout_s=20, record=ProvisionRecord(st.state_dir / "provision.json"))


def volumes(sim: Any, vmid: int) -> set[str]:
    return {f"local-lvm:{n}" for n, v in sim.backend.data["volumes"]["pve1"]["local-lvm"].items()
            if v.get("vmid") == vmid}


def referenced(conf: dict[str, str]) -> set[str]:
    return {str(v).split(",", 1)[0] for k, v in conf.items()
            if re.fullmatch(r"(scsi|virtio|ide|sata|efidisk|unused)\d+", k)}


def test_reallocated_efidisk_leaves_no_unused_volume(sim: Any, client: PveClient,
                                                     root: Path) -> None:
    apply(root, client)
    with sim.backend.store.lock:  # someone switched the EFI vars disk to the 2m layout
        conf = sim.backend.data["vms"]["301"]["conf"]
        conf["efidisk0"] = conf["efidisk0"].replace("efitype=4m", "efitype=2m")
    old_efi = sim.vm(301)["conf"]["efidisk0"].split(",", 1)[0]
    res = apply(root, client)
    assert "gpu-w-1" in res.rebooted
    conf = sim.vm(301)["conf"]
    assert "efitype=4m" in conf["efidisk0"] and conf["efidisk0"].split(",")[0] != old_efi
    assert not [k for k in conf if k.startswith("unused")]
    assert old_efi not in volumes(sim, 301)
    assert volumes(sim, 301) == referenced(conf)
