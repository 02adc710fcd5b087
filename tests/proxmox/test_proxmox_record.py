"""The provisioning record is written by both paths and is where Ansible reads VM addresses
(not the `up` summary file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from skyrig.ansible.cli import _provisioned_ips
from skyrig.plan import build_plan
from skyrig.proxmox.apply import ApplyResult
from skyrig.proxmox.endpoint import Endpoint
from skyrig.workflows.provision import deprovision, provision, provision_record
from support import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_direct_path_records_addresses_for_ansible(
        sim: Any, endpoint: Endpoint, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("skyrig.workflows.provision.pulumi_cli", lambda: None)
    st = stack(root, "local")
    provision(st, build_plan(st), console=Console(record=True), endpoint_override=endpoint)
    want = {"gpu-w-1": "127.0.10.31", "gpu-w-2": "127.0.10.32"}
    assert provision_record(st).ips() == want
    assert _provisioned_ips(st.state_dir) == want
    assert not (st.state_dir / "last-up.json").exists()  # not read from the up summary
    deprovision(st, build_plan(st), console=Console(record=True), endpoint_override=endpoint)
    assert _provisioned_ips(st.state_dir) == {}


def test_pulumi_path_writes_the_same_record(root: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the Pulumi CLI run is replaced (no CLI here); the workflow's own code runs."""
    st = stack(root, "local")
    plan = build_plan(st)
    monkeypatch.setattr("skyrig.workflows.provision.pulumi_cli", lambda: "/usr/bin/pulumi")
    monkeypatch.delenv("SKYRIG_FORCE_DIRECT", raising=False)

    def fake_up(stack: Any, *, console: Console, endpoint: Any) -> ApplyResult:
        return ApplyResult(stack=stack.name, path="pulumi", ips={"gpu-w-1": "10.9.0.31"})

    monkeypatch.setattr("skyrig.pulumi.automation.pulumi_up", fake_up)
    provision(st, plan, console=Console(record=True))
    record = provision_record(st)
    assert _provisioned_ips(st.state_dir) == {"gpu-w-1": "10.9.0.31"}
    assert sorted(record.mappings()) == ["a4000-pve1-0", "a4000-pve2-0"]
    assert sorted(record.vms()) == [301, 302]
