"""Fail-closed passthrough preflight on measured hardware (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from skyrig.errors import PreflightError
from skyrig.plan.proxmox import PciMappingEntrySpec, PciMappingSpec
from skyrig.proxmox.hardware import measure_mappings

pytestmark = pytest.mark.unit

SPEC = PciMappingSpec(id="gpu0", description="A4000", model="rtx-a4000", entries=(
    PciMappingEntrySpec(node="pve1", path="0000:01:00", vendor_device="10de:24b0"),))


def dev(fid: str, cls: str, vendor: str, device: str, group: int, **kw: Any) -> dict[str, Any]:
    return {"id": fid, "class": cls, "vendor": vendor, "device": device, "iommugroup": group,
            **kw}


GPU = [dev("0000:01:00.0", "0x030000", "0x10de", "0x24b0", 14, subsystem_vendor="0x10de",
           subsystem_device="0x14ad", device_name="GA104GL [RTX A4000]"),
       dev("0000:01:00.1", "0x040300", "0x10de", "0x228b", 14)]
BRIDGE = dev("0000:00:01.1", "0x060400", "0x1022", "0x1483", 14)
NIC = dev("0000:02:00.0", "0x020000", "0x8086", "0x1521", 15, device_name="I350")


def test_mapping_is_built_from_measured_values() -> None:
    out = measure_mappings([SPEC], {"pve1": [*GPU, BRIDGE, NIC]})
    (entry,) = out["gpu0"]
    assert entry.map_string == ("id=10de:24b0,iommugroup=14,node=pve1,path=0000:01:00,"
                                "subsystem-id=10de:14ad")


@pytest.mark.parametrize(("devices", "problem"), [
    ([NIC], "device missing"),
    ([{**GPU[0], "device": "0x2531"}, GPU[1]], "wrong device"),
    ([{**d, "iommugroup": -1} for d in GPU], "no IOMMU"),
    ([*GPU, {**NIC, "iommugroup": 14}], "shared IOMMU group"),
])
def test_preflight_fails_closed_with_a_report(devices: list[dict[str, Any]],
                                              problem: str) -> None:
    with pytest.raises(PreflightError) as info:
        measure_mappings([SPEC], {"pve1": devices})
    assert [p["problem"] for p in info.value.report] == [problem]
    assert "gpu0 on pve1 0000:01:00" in str(info.value)
    assert "fix:" in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    other = PciMappingSpec(id="gpu1", description="", model="rtx-a4000", entries=(
        PciMappingEntrySpec(node="pve9", path="0000:01:00", vendor_device="10de:24b0"),))
    with pytest.raises(PreflightError) as info:
        measure_mappings([SPEC, other], {"pve1": [*GPU, {**NIC, "iommugroup": 14}]})
    assert sorted(p["problem"] for p in info.value.report) == ["node missing",
                                                               "shared IOMMU group"]
