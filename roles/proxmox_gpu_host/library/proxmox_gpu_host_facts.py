#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skyrig contributors. GNU General Public License v3.0+ (see COPYING or
# https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts for GPU passthrough preparation: IOMMU groups, PCI devices, boot loader."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: proxmox_gpu_host_facts
short_description: Report IOMMU groups, vfio state, kernel command line and boot loader of a host
description:
  - Reads C(/sys/bus/pci/devices), C(/sys/kernel/iommu_groups), C(/sys/module), C(/proc/cmdline),
    C(/proc/cpuinfo), C(/etc/default/grub), C(/etc/kernel/cmdline) and, when present,
    C(proxmox-boot-tool status). Changes nothing.
  - For every requested card it lists the card's functions, their IOMMU groups and every other
    member of those groups, and judges each group safe or unsafe. A group attaches to one VM as
    a whole, so it is safe only when all its members are functions of that one card or PCI
    bridges (allowed classes); two requested cards in one group are unsafe.
options:
  pci_addresses:
    description: Card addresses (C(0000:01:00), all functions) or function addresses (C(0000:01:00.0)).
    type: list
    elements: str
    required: true
  sysfs_root:
    description: Where sysfs is mounted (a crafted tree in tests).
    type: path
    default: /sys
  procfs_root:
    description: Where procfs is mounted.
    type: path
    default: /proc
  allowed_sibling_classes:
    description: PCI class prefixes (hex, C(0x0604) = PCI bridge) allowed to share a group.
    type: list
    elements: str
    default: ['0x0604']
  grub_default_file:
    description: The GRUB defaults file.
    type: path
    default: /etc/default/grub
  kernel_cmdline_file:
    description: The systemd-boot command-line file used by proxmox-boot-tool.
    type: path
    default: /etc/kernel/cmdline
  proxmox_boot_tool:
    description: Path of proxmox-boot-tool.
    type: path
    default: /usr/sbin/proxmox-boot-tool
  bootloader:
    description: C(auto) detects; C(grub) or C(systemd-boot) forces.
    type: str
    default: auto
    choices: [auto, grub, systemd-boot]
author: skyrig contributors
"""

EXAMPLES = r"""
- name: Read IOMMU groups of the A4000
  proxmox_gpu_host_facts:
    pci_addresses: ["0000:01:00"]
  register: gpu_host
"""

RETURN = r"""
report:
  description: One entry per requested card with its functions, groups and verdict.
  type: list
  returned: always
safe:
  description: True when every requested card was found and every group is safe.
  type: bool
  returned: always
problems:
  description: Human-readable reasons why the groups are not safe.
  type: list
  returned: always
"""

import os
import re
import shlex
import subprocess

from ansible.module_utils.basic import AnsibleModule

ADDR_RE = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})(?:\.([0-7]))?$")
VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci")


def normalise(address):
    """'01:00' -> ('0000:01:00', None); '0000:01:00.1' -> ('0000:01:00', '0000:01:00.1')."""
    match = ADDR_RE.match(address.strip())
    if not match:
        return None, None
    domain, bus, slot, func = match.groups()
    card = "%s:%s:%s" % ((domain or "0000").lower(), bus.lower(), slot.lower())
    return card, ("%s.%s" % (card, func) if func is not None else None)


def read(path, default=None):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return default


def link_name(path):
    try:
        return os.path.basename(os.readlink(path))
    except (IOError, OSError):
        return None


def device_info(sysfs, address):
    base = os.path.join(sysfs, "bus", "pci", "devices", address)
    vendor = read(os.path.join(base, "vendor"), "")
    device = read(os.path.join(base, "device"), "")
    sub_vendor = read(os.path.join(base, "subsystem_vendor"), "")
    sub_device = read(os.path.join(base, "subsystem_device"), "")
    return {
        "address": address,
        "id": "%s:%s" % (vendor.replace("0x", ""), device.replace("0x", "")),
        "subsystem_id": "%s:%s" % (sub_vendor.replace("0x", ""), sub_device.replace("0x", "")),
        "class": read(os.path.join(base, "class"), ""),
        "driver": link_name(os.path.join(base, "driver")),
        "iommu_group": link_name(os.path.join(base, "iommu_group")),
    }


def detect_bootloader(params, files):
    forced = params["bootloader"]
    if forced != "auto":
        return forced, "forced by proxmox_gpu_host_bootloader"
    tool = params["proxmox_boot_tool"]
    if os.path.exists(tool):
        try:
            out = subprocess.run([tool, "status"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=60, check=False)
            text = out.stdout.decode("utf-8", "replace")
        except (OSError, subprocess.SubprocessError) as exc:
            text = str(exc)
        if re.search(r"configured with:\s*uefi", text):
            return "systemd-boot", "proxmox-boot-tool status: uefi (systemd-boot)"
        if re.search(r"configured with:\s*grub", text):
            return "grub", "proxmox-boot-tool status: grub"
    if files["grub_default"] is not None:
        return "grub", "%s exists" % params["grub_default_file"]
    if files["kernel_cmdline"] is not None:
        return "systemd-boot", "%s exists" % params["kernel_cmdline_file"]
    return "unknown", "no proxmox-boot-tool, %s or %s" % (
        params["grub_default_file"], params["kernel_cmdline_file"])


def grub_cmdline_default(text):
    if text is None:
        return None
    value = None
    for line in text.splitlines():
        match = re.match(r"^\s*GRUB_CMDLINE_LINUX_DEFAULT=(.*)$", line)
        if match:
            try:
                parts = shlex.split(match.group(1))
                value = " ".join(parts)
            except ValueError:
                value = match.group(1).strip().strip("\"'")
    return value


def cpu_vendor(procfs):
    text = read(os.path.join(procfs, "cpuinfo"), "") or ""
    match = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    return match.group(1) if match else "unknown"


BRIDGE_CLASSES = ("0x0604",)


def group_blockers(unit, members, bridge_classes=BRIDGE_CLASSES):
    """THE IOMMU-group rule, a verbatim copy of skyrig.proxmox.hardware.group_blockers (the
    module cannot import skyrig on the target; skyrig's tests keep the two identical): an IOMMU
    group is attached to exactly one VM, as a whole, so every member of the group of a
    passed-through unit must be a function of that same unit or a PCI bridge. Every other
    member, another device or a function of another requested card alike, blocks it."""
    blockers = []
    for address, pci_class in members:
        if address in unit:
            continue
        cls = pci_class.lower()
        if not cls.startswith("0x"):
            cls = "0x" + cls
        if any(cls.startswith(prefix.lower()) for prefix in bridge_classes):
            continue
        blockers.append(address)
    return blockers


def examine(params):
    sysfs = params["sysfs_root"]
    devices_dir = os.path.join(sysfs, "bus", "pci", "devices")
    groups_dir = os.path.join(sysfs, "kernel", "iommu_groups")
    allowed = [c.lower() for c in params["allowed_sibling_classes"]]
    present = sorted(os.listdir(devices_dir)) if os.path.isdir(devices_dir) else []
    groups = sorted(os.listdir(groups_dir)) if os.path.isdir(groups_dir) else []
    iommu_active = len(groups) > 0

    requested_cards = {}
    problems = []
    for raw in params["pci_addresses"]:
        card, function = normalise(raw)
        if card is None:
            problems.append("%r is not a PCI address (expected 0000:01:00 or 0000:01:00.0)" % raw)
            continue
        wanted = requested_cards.setdefault(card, set())
        if function:
            wanted.add(function)
        else:
            wanted.update(a for a in present if a.startswith(card + "."))

    requested_functions = set()
    for functions in requested_cards.values():
        requested_functions.update(functions)

    report = []
    for card in sorted(requested_cards):
        functions = sorted(requested_cards[card])
        entry = {"card": card, "found": bool(functions), "functions": [], "iommu_groups": [],
                 "safe": True, "problems": []}
        if not functions:
            entry["safe"] = False
            entry["problems"].append("no PCI device %s.* under %s" % (card, devices_dir))
        seen_groups = set()
        for function in functions:
            info = device_info(sysfs, function)
            entry["functions"].append(info)
            group = info["iommu_group"]
            if group is None:
                entry["safe"] = False
                entry["problems"].append(
                    "%s has no IOMMU group (IOMMU not active: enable VT-d/AMD-Vi in firmware "
                    "and the IOMMU kernel arguments)" % function)
                continue
            if group in seen_groups:
                continue
            seen_groups.add(group)
            members = []
            group_devices = os.path.join(groups_dir, group, "devices")
            infos = [device_info(sysfs, m) for m in (
                sorted(os.listdir(group_devices)) if os.path.isdir(group_devices) else [])]
            blockers = group_blockers(set(functions),
                                      [(i["address"], i["class"] or "") for i in infos], allowed)
            for minfo in infos:
                member = minfo["address"]
                if member in functions:
                    minfo["role"] = "requested"
                elif member not in blockers:
                    minfo["role"] = "bridge"
                else:
                    minfo["role"] = "other"
                    entry["safe"] = False
                    if member in requested_functions:
                        why = ("which is a function of another requested card: a group "
                               "attaches to one VM, so the two cards cannot be passed through "
                               "separately")
                    else:
                        why = ("which is not a function of the card: passing the card through "
                               "would hand that device to the VM too")
                    entry["problems"].append(
                        "IOMMU group %s of %s also holds %s (id %s, class %s, driver %s), %s" % (
                            group, function, member, minfo["id"], minfo["class"],
                            minfo["driver"] or "none", why))
                members.append(minfo)
            entry["iommu_groups"].append({"group": group, "members": members})
        problems.extend(entry["problems"])
        report.append(entry)

    if not params["pci_addresses"]:
        problems.append("proxmox_gpu_host_pci_addresses is empty: nothing to prepare")

    modules_dir = os.path.join(sysfs, "module")
    loaded = dict((m, os.path.isdir(os.path.join(modules_dir, m))) for m in VFIO_MODULES)
    bound = dict((f, link_name(os.path.join(devices_dir, f, "driver")))
                 for f in sorted(requested_functions))

    files = {
        "grub_default": read(params["grub_default_file"]),
        "kernel_cmdline": read(params["kernel_cmdline_file"]),
    }
    bootloader, how = detect_bootloader(params, files)
    return {
        "changed": False,
        "safe": not problems,
        "problems": problems,
        "report": report,
        "iommu_active": iommu_active,
        "iommu_group_count": len(groups),
        "requested_functions": sorted(requested_functions),
        "vfio_modules_loaded": loaded,
        "drivers": bound,
        "all_bound_to_vfio": bool(bound) and all(d == "vfio-pci" for d in bound.values()),
        "proc_cmdline": read(os.path.join(params["procfs_root"], "cmdline"), "") or "",
        "cpu_vendor": cpu_vendor(params["procfs_root"]),
        "bootloader": bootloader,
        "bootloader_detected_by": how,
        "grub_cmdline_linux_default": grub_cmdline_default(files["grub_default"]),
        "kernel_cmdline_file_content": files["kernel_cmdline"],
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pci_addresses=dict(type="list", elements="str", required=True),
            sysfs_root=dict(type="path", default="/sys"),
            procfs_root=dict(type="path", default="/proc"),
            allowed_sibling_classes=dict(type="list", elements="str", default=["0x0604"]),
            grub_default_file=dict(type="path", default="/etc/default/grub"),
            kernel_cmdline_file=dict(type="path", default="/etc/kernel/cmdline"),
            proxmox_boot_tool=dict(type="path", default="/usr/sbin/proxmox-boot-tool"),
            bootloader=dict(type="str", default="auto", choices=["auto", "grub", "systemd-boot"]),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**examine(module.params))


if __name__ == "__main__":
    main()
