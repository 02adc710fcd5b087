"""The passthrough preflight on pvesim's `faulty` hardware: fail closed before any change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from skyrig.errors import PreflightError
from skyrig.plan import Plan
from skyrig.plan.proxmox import PciMappingEntrySpec, PciMappingSpec
from skyrig.proxmox.apply import apply_plan
from skyrig.proxmox.client import PveClient
from support import endpoint_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def mapping(mid: str, node: str) -> PciMappingSpec:
    return PciMappingSpec(id=mid, description=mid, model="rtx-a4000", entries=(
        PciMappingEntrySpec(node=node, path="0000:01:00", vendor_device="10de:24b0"),))


@pytest.fixture
def faulty(tmp_path: Any) -> Iterator[Any]:
    from pvesim.testing import running_sim

    with running_sim(tmp_path, hardware="faulty") as s:
        yield s


def test_faulty_hardware_fails_closed(faulty: Any) -> None:
    client = PveClient(endpoint_of(faulty))
    plan = Plan(stack="t", environment="local", inventory={}, vms=[], pci_mappings=[
        mapping("gpu-shared", "pve-shared"), mapping("gpu-noiommu", "pve-noiommu"),
        mapping("gpu-ok", "pve-ok")])
    faulty.reset_request_counts()
    with pytest.raises(PreflightError) as info:
        apply_plan(plan, client)
    problems = {p["mapping"]: p["problem"] for p in info.value.report}
    assert problems == {"gpu-shared": "shared IOMMU group", "gpu-noiommu": "no IOMMU"}
    assert "0000:02:00.0" in str(info.value)  # names the NIC in the GPU's group
    assert {m for m, _ in faulty.request_counts()} == {"GET"}  # nothing was changed
    assert client.get("cluster/mapping/pci") == []


def test_healthy_node_passes(faulty: Any) -> None:
    client = PveClient(endpoint_of(faulty))
    plan = Plan(stack="t", environment="local", inventory={}, vms=[],
                pci_mappings=[mapping("gpu-ok", "pve-ok")])
    res = apply_plan(plan, client)
    assert res.created == ["pci-mapping/gpu-ok"]
    (live,) = client.get("cluster/mapping/pci", **{"check-node": "pve-ok"})
    assert live["checks"] == []  # PVE's own assert_valid agrees with the measured mapping
