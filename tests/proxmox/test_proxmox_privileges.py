"""Least privilege: a privsep token with exactly the documented set provisions the stack; raw
hostpci is root-only and skyrig never sends it; a missing privilege is a clear 403."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from proxmoxer.core import ResourceException

from skyrig.errors import ProxmoxError
from skyrig.plan import build_plan
from skyrig.proxmox.apply import ApplyFailed, apply_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.privileges import MINIMAL_PRIVILEGES
from support import endpoint_of, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def token_client(sim: Any, privileges: dict[str, tuple[str, ...]]) -> PveClient:
    sim.add_user("skyrig@pve")
    secret = sim.add_token("skyrig@pve", "provision", privsep=True)
    for path, privs in privileges.items():
        sim.set_acl(path, list(privs), tokenid="skyrig@pve!provision")
        sim.set_acl(path, list(privs), userid="skyrig@pve")  # privsep: token ∩ user
    return PveClient(endpoint_of(sim, ("skyrig@pve!provision", secret)))


def test_minimal_privilege_set_is_enough(sim: Any, root: Path) -> None:
    client = token_client(sim, MINIMAL_PRIVILEGES)
    plan = build_plan(stack(root, "local"))
    res = apply_plan(plan, client, parallelism=2, task_timeout_s=20)
    assert res.ips == {"gpu-w-1": "127.0.10.31", "gpu-w-2": "127.0.10.32"}
    assert not apply_plan(plan, client, task_timeout_s=20).changed


def test_raw_hostpci_is_root_only_and_skyrig_never_tries(sim: Any, root: Path) -> None:
    client = token_client(sim, MINIMAL_PRIVILEGES)
    apply_plan(build_plan(stack(root, "local")), client, parallelism=2, task_timeout_s=20)
    sim.reset_request_counts()
    with pytest.raises(ProxmoxError, match="only root@pam with a ticket"):
        client.request("POST", "nodes/pve1/qemu/301/config", {"hostpci1": "0000:01:00,pcie=1"})
    assert sim.request_counts() == {}  # refused before sending
    # what PVE itself answers a token that tries (bypassing skyrig's guard)
    with pytest.raises(ResourceException) as info:
        client.api("nodes/pve1/qemu/301/config").put(hostpci1="0000:01:00,pcie=1")
    assert "only root can set 'hostpci1' config for non-mapped devices" in info.value.content


def test_a_missing_privilege_is_a_clear_403(sim: Any, root: Path) -> None:
    privs = dict(MINIMAL_PRIVILEGES)
    privs["/mapping/pci"] = ("Mapping.Audit", "Mapping.Modify")  # no Mapping.Use
    client = token_client(sim, privs)
    with pytest.raises(ApplyFailed) as info:
        apply_plan(build_plan(stack(root, "local")), client, parallelism=2, task_timeout_s=20)
    err = next(iter(info.value.failures.values()))
    assert isinstance(err, ProxmoxError) and err.status == 403
    assert "Mapping.Use" in str(err) and "docs/provisioning.md" in str(err)
