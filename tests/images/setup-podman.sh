#!/usr/bin/env bash
# Install what the Ansible test tiers need on a Debian 12 machine (run as root), idempotently:
#   roles tier: podman, runc, debootstrap, fuse-overlayfs, uidmap
#   vm tier   : qemu-system-x86, qemu-utils, openssh-client (pass --vm, or SKYRIG_SETUP_VM=1)
# It does not touch /etc/containers: the project's containers.conf (tests/images/containers.conf)
# is used through CONTAINERS_CONF by the test wrappers and the Makefile.
set -euo pipefail

want_vm="${SKYRIG_SETUP_VM:-0}"
for arg in "$@"; do
  case "$arg" in
    --vm) want_vm=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup-podman.sh: unknown argument '$arg' (expected --vm)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-podman.sh: must run as root (it installs Debian packages with apt-get)" >&2
  exit 1
fi

pkgs=(podman runc debootstrap fuse-overlayfs uidmap e2fsprogs)
if [ "$want_vm" = 1 ]; then
  pkgs+=(qemu-system-x86 qemu-utils openssh-client)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup-podman.sh: all packages present (${pkgs[*]})"
else
  echo "setup-podman.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

conf="$(cd "$(dirname "$0")" && pwd)/containers.conf"
if [ ! -f "$conf" ]; then
  echo "setup-podman.sh: $conf is missing (it is part of the repository)" >&2
  exit 1
fi
echo "setup-podman.sh: done; use CONTAINERS_CONF=$conf"
