#!/bin/sh
# Build a crafted sysfs tree for the IOMMU preflight: make-fake-sysfs.sh ROOT safe|unsafe
#   safe:   group 2 = root port 0000:00:01.0 (bridge) + RTX A4000 0000:01:00.0 + its audio .1
#   unsafe: the same, plus an Intel I210 NIC 0000:02:00.0 in group 2
set -eu
root="$1"
layout="$2"

dev() {
    addr="$1"; vendor="$2"; device="$3"; class="$4"; driver="$5"; group="$6"
    d="$root/devices/pci0000:00/$addr"
    mkdir -p "$d" "$root/bus/pci/devices" "$root/kernel/iommu_groups/$group/devices"
    echo "$vendor" > "$d/vendor"
    echo "$device" > "$d/device"
    echo "$class" > "$d/class"
    echo "$vendor" > "$d/subsystem_vendor"
    echo "0x14ad" > "$d/subsystem_device"
    ln -sfn "../../../kernel/iommu_groups/$group" "$d/iommu_group"
    if [ -n "$driver" ]; then
        mkdir -p "$root/bus/pci/drivers/$driver"
        ln -sfn "../../../bus/pci/drivers/$driver" "$d/driver"
    fi
    ln -sfn "../../../devices/pci0000:00/$addr" "$root/bus/pci/devices/$addr"
    ln -sfn "../../../../devices/pci0000:00/$addr" "$root/kernel/iommu_groups/$group/devices/$addr"
}

rm -rf "$root"
dev 0000:00:00.0 0x8086 0x29c0 0x060000 "" 0
dev 0000:00:01.0 0x8086 0x1901 0x060400 pcieport 2
dev 0000:01:00.0 0x10de 0x24b0 0x030000 nouveau 2
dev 0000:01:00.1 0x10de 0x228b 0x040300 snd_hda_intel 2
case "$layout" in
    safe) ;;
    unsafe) dev 0000:02:00.0 0x8086 0x1533 0x020000 igb 2 ;;
    *) echo "layout must be safe or unsafe" >&2; exit 2 ;;
esac
touch "$root/.complete"
