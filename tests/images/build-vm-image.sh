#!/usr/bin/env bash
# Build the Debian 12 disk image the VM tier (tests/vm) boots under QEMU TCG.
#
# Output (all under .cache/images/vm-bookworm/, gitignored):
#   vm.img          raw ext4 filesystem image (no partition table), label "root", 3 GiB sparse
#   grub.lnx        GRUB (i386-pc core + lnxboot) that QEMU loads with -kernel; it reads
#                   /boot/grub/grub.cfg from vm.img, so kernel command-line changes made inside the
#                   guest (/etc/default/grub + update-grub) take effect on the next boot, as on a
#                   real GRUB-booted host
#   id_ed25519(.pub) the SSH key root logs in with (127.0.0.1 port-forward only)
# Idempotent: nothing is rebuilt when vm.img and its stamp exist (pass --force to rebuild; the VM
# tier always boots a copy-on-write overlay, never vm.img itself).
# Needs root, debootstrap, e2fsprogs (mkfs.ext4 -d), openssh-client (ssh-keygen), qemu-utils.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${SKYRIG_VM_IMAGE_DIR:-$repo/.cache/images/vm-bookworm}"
rootfs="$out/rootfs"
force=0
[ "${1:-}" = "--force" ] && force=1

for tool in debootstrap mkfs.ext4 ssh-keygen qemu-img; do
  command -v "$tool" >/dev/null || {
    echo "build-vm-image.sh: '$tool' is missing; run tests/images/setup-podman.sh --vm first" >&2
    exit 1
  }
done

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

if [ "$force" = 0 ] && [ -f "$out/image.complete" ] && [ -f "$out/vm.img" ] && [ -f "$out/grub.lnx" ]; then
  echo "build-vm-image.sh: $out/vm.img already built, nothing to do"
  exit 0
fi
rm -f "$out/image.complete"

if [ "$force" = 1 ] || [ ! -f "$out/rootfs.complete" ]; then
  mirror="$("$here/debian-mirror.sh" bookworm)"
  echo "build-vm-image.sh: debootstrap bookworm (kernel, GRUB, sshd) from $mirror (about 3 min)"
  rm -rf "$rootfs" "$out/rootfs.complete"
  mkdir -p "$rootfs"
  debootstrap --variant=minbase \
    --include=linux-image-amd64,systemd-sysv,openssh-server,iproute2,python3,sudo,dbus,udev,kmod,pciutils,python3-apt,initramfs-tools,zstd,grub-pc-bin,grub2-common \
    bookworm "$rootfs" "$mirror"
  touch "$out/rootfs.complete"
fi

# --- SSH key -------------------------------------------------------------------------------------
[ -f "$out/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C skyrig-vm-tier -f "$out/id_ed25519"
install -d -m 700 "$rootfs/root/.ssh"
install -m 600 "$out/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
cat > "$rootfs/etc/ssh/sshd_config.d/skyrig.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
CONF

# --- system basics -------------------------------------------------------------------------------
echo "skyrig-vm" > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 skyrig-vm\n' > "$rootfs/etc/hosts"
echo "LABEL=root / ext4 defaults,errors=remount-ro 0 1" > "$rootfs/etc/fstab"
cat > "$rootfs/etc/systemd/network/10-dhcp.network" <<'CONF'
[Match]
# Only the virtio NIC (the SSH port forward); other emulated NICs are passthrough candidates.
Driver=virtio_net

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
CONF
chroot "$rootfs" systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
# A small, fast initramfs (TCG is slow): only the modules this virtual machine boots from.
sed -i -e 's/^MODULES=.*/MODULES=list/' -e 's/^COMPRESS=.*/COMPRESS=zstd/' \
  "$rootfs/etc/initramfs-tools/initramfs.conf"
grep -q '^COMPRESSLEVEL=' "$rootfs/etc/initramfs-tools/initramfs.conf" \
  || echo 'COMPRESSLEVEL=1' >> "$rootfs/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 > "$rootfs/etc/initramfs-tools/modules"
# Units that only slow a headless test guest down.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

# --- GRUB as the boot loader ---------------------------------------------------------------------
# /etc/default/grub is what the proxmox_gpu_host role edits (GRUB_CMDLINE_LINUX_DEFAULT); the serial
# console lives in GRUB_CMDLINE_LINUX so that the role's edit never touches it.
cat > "$rootfs/etc/default/grub" <<'CONF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT="loglevel=5"
GRUB_CMDLINE_LINUX="console=ttyS0,115200 net.ifnames=1"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
GRUB_DISABLE_RECOVERY=true
CONF
kver="$(basename "$(ls -1 "$rootfs"/boot/vmlinuz-* | sort -V | tail -n 1)" | sed 's/^vmlinuz-//')"
# The first boot's grub.cfg is written here (grub-mkconfig needs the running disk); it uses the
# same command line update-grub will generate from /etc/default/grub (no "quiet": the serial log
# shows the boot), so the first converge sees the command line of a fresh host.
install -d "$rootfs/boot/grub"
# What grub-install would put there: the modules grub.cfg loads (insmod gzio, part_msdos, ...).
rm -rf "$rootfs/boot/grub/i386-pc"
cp -a "$rootfs/usr/lib/grub/i386-pc" "$rootfs/boot/grub/i386-pc"
cat > "$rootfs/boot/grub/grub.cfg" <<CONF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry 'Debian GNU/Linux' {
  search --no-floppy --label --set=root root
  linux /boot/vmlinuz-$kver root=LABEL=root ro console=ttyS0,115200 net.ifnames=1 loglevel=5
  initrd /boot/initrd.img-$kver
}
CONF
chroot "$rootfs" update-initramfs -u -k "$kver" >/dev/null
chroot "$rootfs" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0)/boot/grub' \
  biosdisk ext2 linux normal search search_label serial terminal configfile echo test
cat "$rootfs/usr/lib/grub/i386-pc/lnxboot.img" "$rootfs/tmp/core.img" > "$out/grub.lnx"
rm -f "$rootfs/tmp/core.img"
chroot "$rootfs" apt-get clean

# --- the disk image ------------------------------------------------------------------------------
rm -f "$out/vm.img"
truncate -s 3G "$out/vm.img"
mkfs.ext4 -q -F -L root -d "$rootfs" "$out/vm.img"
touch "$out/image.complete"
echo "build-vm-image.sh: built $out/vm.img (kernel $kver) and $out/grub.lnx"
