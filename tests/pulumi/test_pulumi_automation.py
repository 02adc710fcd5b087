"""The Pulumi path's event collector and the path choice (no Pulumi CLI needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skyrig.proxmox.apply import ApplyResult
from skyrig.pulumi.automation import _collector

pytestmark = pytest.mark.unit


def event(op: str, typ: str, name: str) -> SimpleNamespace:
    urn = f"urn:pulumi:prod::skyrig::skyrig:proxmox:GpuCluster${typ}::{name}"
    meta = SimpleNamespace(op=SimpleNamespace(value=op), type=typ, urn=urn)
    return SimpleNamespace(res_outputs_event=SimpleNamespace(metadata=meta))


def test_engine_events_become_the_apply_result() -> None:
    res = ApplyResult(stack="prod", path="pulumi")
    on_event = _collector(res)
    on_event(event("create", "pulumi-python:dynamic/proxmox:PciMapping", "pci-a4000-pve04-a"))
    on_event(event("update", "pulumi-python:dynamic/proxmox:GpuVm", "vm-gpu-w-01"))
    on_event(event("same", "pulumi-python:dynamic/proxmox:GpuVm", "vm-k8s-cp-01"))
    on_event(event("create", "skyrig:proxmox:GpuCluster", "prod-gpu-cluster"))  # not counted
    on_event(SimpleNamespace(res_outputs_event=None))
    assert res.created == ["pci-mapping/pci-a4000-pve04-a"]
    assert res.updated == ["vm/vm-gpu-w-01"] and res.unchanged == ["vm/vm-k8s-cp-01"]
    assert res.changed and res.path == "pulumi"
