#!/usr/bin/env bash
# Build the Debian 12 systemd image the molecule scenarios run in: localhost/debian12-systemd:latest.
# Idempotent: does nothing when the image exists (pass --force to rebuild). The debootstrap rootfs is
# cached under .cache/images/ (gitignored) so a re-import does not download again.
# Needs root, podman and debootstrap (tests/images/setup-podman.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
image="${SKYRIG_TEST_IMAGE:-localhost/debian12-systemd:latest}"
cache="${SKYRIG_IMAGE_CACHE:-$repo/.cache/images}"
rootfs="$cache/debian12-systemd/rootfs"
stamp="$cache/debian12-systemd/rootfs.complete"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
force=0
[ "${1:-}" = "--force" ] && force=1

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "build-debian12-systemd.sh: '$tool' is not installed; run tests/images/setup-podman.sh first" >&2
    exit 1
  }
done

mkdir -p "$cache"
# One builder at a time (several test sessions may call this concurrently).
exec 9>"$cache/debian12-systemd.lock"
flock 9

if [ "$force" = 0 ] && podman image exists "$image"; then
  echo "build-debian12-systemd.sh: $image already exists, nothing to do"
  exit 0
fi

if [ "$force" = 1 ] || [ ! -f "$stamp" ]; then
  mirror="$("$here/debian-mirror.sh" bookworm)"
  echo "build-debian12-systemd.sh: debootstrap bookworm from $mirror into $rootfs (about 2 min)"
  rm -rf "$rootfs" "$stamp"
  mkdir -p "$rootfs"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,python3,python3-apt,sudo,dbus,iproute2,procps,ca-certificates \
    bookworm "$rootfs" "$mirror"
  # Container-friendly systemd: no getty, no udev triggers, no hardware units.
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* \
        "$rootfs"/lib/systemd/system/multi-user.target.wants/getty.target
  for unit in systemd-udevd.service systemd-udev-trigger.service systemd-remount-fs.service \
              sys-kernel-debug.mount dev-hugepages.mount getty.target console-getty.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  echo "debian12-systemd" > "$rootfs/etc/hostname"
  # Keep package downloads out of the image.
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  touch "$stamp"
fi

echo "build-debian12-systemd.sh: importing $rootfs as $image"
tar -C "$rootfs" --numeric-owner -c . \
  | podman import --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' - "$image"
podman image exists "$image"
echo "build-debian12-systemd.sh: built $image"
