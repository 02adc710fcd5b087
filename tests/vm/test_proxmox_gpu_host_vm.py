"""proxmox_gpu_host on a real (emulated) machine: QEMU TCG q35 with an Intel IOMMU.

The "GPU" is the guest's emulated e1000e NIC, alone in its IOMMU group. The steps run in order on
one guest: the preflight refuses an unsafe group (ICH9 SATA, which shares its group with the LPC
bridge and SMBus) without changing anything; the converge writes the boot configuration, reboots
through GRUB and binds the NIC to vfio-pci; a second converge changes nothing and does not reboot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from skyrig.ansible import AnsibleRunFailed, AnsibleRunResult, run_playbook

from .conftest import Guest

pytestmark = [pytest.mark.vm, pytest.mark.slow]
STATE: dict[str, Any] = {}
SOFTDEP = ["nouveau", "nvidia", "snd_hda_intel", "e1000e"]


def _card(guest: Guest, vendor_device: str) -> str:
    line = guest.run(f"lspci -D -n -d {vendor_device}")
    assert line, f"no {vendor_device} device in the guest"
    return line.split()[0].rsplit(".", 1)[0]


def _converge(guest: Guest, tmp_path: Path, address: str) -> AnsibleRunResult:
    inventory = guest.inventory(
        proxmox_gpu_host_report_dir=str(tmp_path / "reports"),
        proxmox_gpu_host_pci_addresses=[address],
        proxmox_gpu_host_softdep_drivers=SOFTDEP,
        proxmox_gpu_host_reboot_timeout=900,
    )
    return run_playbook("host-prep", inventory, private_data_dir=tmp_path, quiet=True)


@pytest.mark.timeout(1800)  # includes booting the guest (fixture)
def test_preflight_refuses_an_unsafe_group_and_changes_nothing(
    guest: Guest, tmp_path: Path
) -> None:
    sata = guest.run("lspci -D -n -d 8086:2922").split()[0]
    group = guest.run(f"ls /sys/bus/pci/devices/{sata}/iommu_group/devices").split()
    assert len(group) >= 2, f"{sata} should share its IOMMU group, has {group}"
    grub_before = guest.run("sha256sum /etc/default/grub")
    started = time.monotonic()
    with pytest.raises(AnsibleRunFailed) as caught:
        _converge(guest, tmp_path, sata)
    STATE["refusal_s"] = round(time.monotonic() - started, 1)
    [failure] = caught.value.result.failures
    assert failure.host == "pve-vm"
    assert failure.task.startswith("Refuse unsafe")
    others = [d for d in group if d != sata]
    assert all(o in failure.message for o in others), failure.message
    assert "nothing was changed" in failure.message
    # the JSON report names every member of the group
    report = json.loads((tmp_path / "reports" / "pve-vm-iommu.json").read_text())
    assert report["safe"] is False
    assert {m["address"] for m in report["cards"][0]["iommu_groups"][0]["members"]} == set(group)
    # nothing was written
    assert guest.run("sha256sum /etc/default/grub") == grub_before
    assert guest.run(
        "ls /etc/modprobe.d/vfio.conf /etc/modules-load.d/vfio.conf 2>/dev/null | wc -l"
    ) == "0"


@pytest.mark.timeout(2700)
def test_converge_reboots_into_iommu_and_binds_vfio(guest: Guest, tmp_path: Path) -> None:
    card = _card(guest, "8086:10d3")
    function = f"{card}.0"
    STATE["card"] = card
    assert guest.run(f"basename $(readlink /sys/bus/pci/devices/{function}/driver)") == "e1000e"
    boot_before = guest.run("cat /proc/sys/kernel/random/boot_id")
    started = time.monotonic()
    result = _converge(guest, tmp_path, card)
    STATE["converge_s"] = round(time.monotonic() - started, 1)
    assert result.successful
    assert result.hosts["pve-vm"].changed > 0

    boot_after = guest.run("cat /proc/sys/kernel/random/boot_id")
    assert boot_after != boot_before, "the role did not reboot the guest"
    STATE["boot_id"] = boot_after
    cmdline = guest.run("cat /proc/cmdline").split()
    assert "intel_iommu=on" in cmdline and "iommu=pt" in cmdline, cmdline
    assert guest.run("grep -E '^GRUB_CMDLINE_LINUX_DEFAULT=' /etc/default/grub") == (
        'GRUB_CMDLINE_LINUX_DEFAULT="loglevel=5 intel_iommu=on iommu=pt"'
    )
    modules = set(guest.run("cut -d' ' -f1 /proc/modules").split())
    assert {"vfio", "vfio_iommu_type1", "vfio_pci"} <= modules, sorted(modules)
    assert guest.run(f"basename $(readlink /sys/bus/pci/devices/{function}/driver)") == "vfio-pci"
    group = guest.run(f"basename $(readlink /sys/bus/pci/devices/{function}/iommu_group)")
    assert guest.run(f"ls /sys/kernel/iommu_groups/{group}/devices").split() == [function]
    assert guest.run(f"test -e /dev/vfio/{group} && echo yes") == "yes"
    assert int(guest.run("ls /sys/kernel/iommu_groups | wc -l")) >= 5
    assert "DMAR" in guest.run("dmesg | grep -m1 -e DMAR -e IOMMU || true")


@pytest.mark.timeout(1500)
def test_second_converge_changes_nothing(guest: Guest, tmp_path: Path) -> None:
    if "card" not in STATE:
        pytest.skip("the converge step did not run")
    started = time.monotonic()
    result = _converge(guest, tmp_path, STATE["card"])
    STATE["second_converge_s"] = round(time.monotonic() - started, 1)
    assert result.successful
    assert result.hosts["pve-vm"].changed == 0, result.summary_text()
    assert guest.run("cat /proc/sys/kernel/random/boot_id") == STATE["boot_id"], "rebooted again"
    print(json.dumps({"vm_tier_timings_s": {**guest.timings, **STATE}}, default=str))
