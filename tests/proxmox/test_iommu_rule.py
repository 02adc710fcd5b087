"""One IOMMU-group rule (issue 13 case 6): the API-side preflight
(:func:`skyrig.proxmox.hardware.group_blockers` via ``measure_mappings``) and the Ansible host
module (roles/proxmox_gpu_host/library/proxmox_gpu_host_facts.py, which cannot import skyrig on
the target and carries a verbatim copy) are the same code, and judge one fixture table alike:
the table is rendered both as a fake sysfs tree (the module's input, laid out like the role's
molecule ``make-fake-sysfs.sh``) and as ``GET /nodes/{node}/hardware/pci`` rows (the API's)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from skyrig.errors import PreflightError
from skyrig.plan.proxmox import PciMappingEntrySpec, PciMappingSpec
from skyrig.proxmox import hardware
from skyrig.proxmox.hardware import measure_mappings

pytestmark = pytest.mark.unit

MODULE = (Path(__file__).resolve().parents[2] / "roles" / "proxmox_gpu_host" / "library"
          / "proxmox_gpu_host_facts.py")

# address, vendor, device, class, driver, IOMMU group
ROOT_PORT = ("0000:00:01.0", "0x8086", "0x1901", "0x060400", "pcieport", 2)
HOST_BRIDGE = ("0000:00:00.0", "0x8086", "0x29c0", "0x060000", "", 0)
GPU1 = [("0000:01:00.0", "0x10de", "0x24b0", "0x030000", "nouveau", 2),
        ("0000:01:00.1", "0x10de", "0x228b", "0x040300", "snd_hda_intel", 2)]
GPU2_SAME_GROUP = [("0000:03:00.0", "0x10de", "0x24b0", "0x030000", "nouveau", 2),
                   ("0000:03:00.1", "0x10de", "0x228b", "0x040300", "snd_hda_intel", 2)]
GPU2_OWN_GROUP = [(a, v, d, c, drv, 3) for a, v, d, c, drv, _ in GPU2_SAME_GROUP]
NIC_SAME_GROUP = ("0000:02:00.0", "0x8086", "0x1533", "0x020000", "igb", 2)

# name, devices, requested cards, expected verdict per card (True: safe)
TABLE: list[tuple[str, list[tuple[str, str, str, str, str, int]], list[str], dict[str, bool]]] = [
    ("gpu with bridge", [HOST_BRIDGE, ROOT_PORT, *GPU1], ["0000:01:00"], {"0000:01:00": True}),
    ("gpu and nic share a group", [HOST_BRIDGE, ROOT_PORT, *GPU1, NIC_SAME_GROUP],
     ["0000:01:00"], {"0000:01:00": False}),
    ("two requested gpus in one group", [HOST_BRIDGE, ROOT_PORT, *GPU1, *GPU2_SAME_GROUP],
     ["0000:01:00", "0000:03:00"], {"0000:01:00": False, "0000:03:00": False}),
    ("two gpus, own groups", [HOST_BRIDGE, ROOT_PORT, *GPU1, *GPU2_OWN_GROUP],
     ["0000:01:00", "0000:03:00"], {"0000:01:00": True, "0000:03:00": True}),
    ("unrequested gpu in the group", [HOST_BRIDGE, ROOT_PORT, *GPU1, *GPU2_SAME_GROUP],
     ["0000:01:00"], {"0000:01:00": False}),
]


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proxmox_gpu_host_facts", MODULE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_sysfs(root: Path, devices: list[tuple[str, str, str, str, str, int]]) -> Path:
    """The layout of the role's molecule make-fake-sysfs.sh (devices, bus links, groups)."""
    for addr, vendor, device, cls, driver, group in devices:
        d = root / "devices" / "pci0000:00" / addr
        d.mkdir(parents=True)
        (root / "bus/pci/devices").mkdir(parents=True, exist_ok=True)
        gdir = root / "kernel/iommu_groups" / str(group) / "devices"
        gdir.mkdir(parents=True, exist_ok=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", cls),
                            ("subsystem_vendor", vendor), ("subsystem_device", "0x14ad")):
            (d / name).write_text(value + "\n")
        (d / "iommu_group").symlink_to(f"../../../kernel/iommu_groups/{group}")
        if driver:
            (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
            (d / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
        (root / "bus/pci/devices" / addr).symlink_to(f"../../../devices/pci0000:00/{addr}")
        (gdir / addr).symlink_to(f"../../../../devices/pci0000:00/{addr}")
    return root


def hardware_rows(devices: list[tuple[str, str, str, str, str, int]]) -> list[dict[str, Any]]:
    """The same devices as PVE's ``GET /nodes/{node}/hardware/pci`` reports them."""
    return [{"id": a, "vendor": v, "device": d, "class": c, "iommugroup": g,
             "subsystem_vendor": v, "subsystem_device": "0x14ad"} for a, v, d, c, _, g in devices]


def api_verdict(devices: list[tuple[str, str, str, str, str, int]],
                cards: list[str]) -> dict[str, bool]:
    specs = [PciMappingSpec(id=f"gpu{i}", description="", model="rtx-a4000", entries=(
        PciMappingEntrySpec(node="pve1", path=c, vendor_device="10de:24b0"),))
        for i, c in enumerate(cards)]
    try:
        measure_mappings(specs, {"pve1": hardware_rows(devices)})
    except PreflightError as exc:
        bad = {str(p["path"]) for p in exc.report}
        return {c: c not in bad for c in cards}
    return dict.fromkeys(cards, True)


def module_verdict(mod: ModuleType, sysfs: Path, cards: list[str]) -> dict[str, bool]:
    out = mod.examine({"sysfs_root": str(sysfs), "procfs_root": str(sysfs / "proc"),
                       "pci_addresses": cards, "allowed_sibling_classes": ["0x0604"],
                       "grub_default_file": str(sysfs / "none"),
                       "kernel_cmdline_file": str(sysfs / "none"),
                       "proxmox_boot_tool": str(sysfs / "none"), "bootloader": "grub"})
    return {e["card"]: e["safe"] for e in out["report"]}


@pytest.mark.parametrize(("name", "devices", "cards", "expected"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_both_preflights_agree_on_the_fixture_table(
        tmp_path: Path, name: str, devices: list[tuple[str, str, str, str, str, int]],
        cards: list[str], expected: dict[str, bool]) -> None:
    assert api_verdict(devices, cards) == expected
    assert module_verdict(load_module(), fake_sysfs(tmp_path / "sys", devices), cards) == expected


def test_module_names_the_other_requested_card(tmp_path: Path) -> None:
    devices = [ROOT_PORT, *GPU1, *GPU2_SAME_GROUP]
    out = load_module().examine({
        "sysfs_root": str(fake_sysfs(tmp_path / "sys", devices)), "procfs_root": str(tmp_path),
        "pci_addresses": ["0000:01:00", "0000:03:00"], "allowed_sibling_classes": ["0x0604"],
        "grub_default_file": "/nonexistent", "kernel_cmdline_file": "/nonexistent",
        "proxmox_boot_tool": "/nonexistent", "bootloader": "grub"})
    assert not out["safe"]
    assert any("0000:03:00.0" in p and "another requested card" in p for p in out["problems"])


def _rule_ast(source: str) -> str:
    """The function's code without annotations and docstring (the module copy has neither
    type hints nor skyrig's docstring)."""
    fn = ast.parse(textwrap.dedent(source)).body[0]
    assert isinstance(fn, ast.FunctionDef)
    fn.returns = None
    for a in [*fn.args.args, *fn.args.kwonlyargs]:
        a.annotation = None
    if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value,
                                                                   ast.Constant):
        fn.body = fn.body[1:]
    return ast.dump(fn)


def test_the_rule_is_one_code() -> None:
    module_fn = next(n for n in ast.parse(MODULE.read_text()).body
                     if isinstance(n, ast.FunctionDef) and n.name == "group_blockers")
    copy = ast.get_source_segment(MODULE.read_text(), module_fn)
    assert copy is not None
    assert _rule_ast(copy) == _rule_ast(inspect.getsource(hardware.group_blockers))
    assert load_module().BRIDGE_CLASSES == hardware.BRIDGE_CLASSES
