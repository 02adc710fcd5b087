"""The VM tier: a Debian 12 guest under QEMU (TCG, q35, emulated Intel IOMMU) reached over SSH on
a 127.0.0.1 port forward. The guest's network is slirp with restrict=on: it reaches nothing but
the forwarded port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "images"
IMAGE_DIR = REPO / ".cache" / "images" / "vm-bookworm"
BOOT_TIMEOUT_S = 900


@dataclass
class Guest:
    """A running QEMU guest and how to reach it."""

    port: int
    key: Path
    serial_log: Path
    process: subprocess.Popen[bytes]
    timings: dict[str, float] = field(default_factory=dict)

    def ssh_args(self) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
            "root@127.0.0.1",
        ]

    def run(self, command: str, timeout: float = 120) -> str:
        """Run a shell command in the guest; its stdout. Raises on a non-zero exit."""
        proc = subprocess.run(
            [*self.ssh_args(), command], capture_output=True, text=True, timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"guest command failed ({proc.returncode}): {command}\n{proc.stderr}{proc.stdout}"
            )
        return proc.stdout.strip()

    def wait_for_ssh(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                rc = self.process.returncode
                raise AssertionError(f"QEMU exited ({rc}); see {self.serial_log}")
            probe = subprocess.run(
                [*self.ssh_args(), "true"], capture_output=True, timeout=60, check=False
            )
            if probe.returncode == 0:
                return
            time.sleep(3)
        tail = self.serial_log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no SSH on 127.0.0.1:{self.port} after {timeout}s; serial:\n{tail}")

    def inventory(self, **hostvars: object) -> dict[str, object]:
        host: dict[str, object] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": (
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            ),
            **hostvars,
        }
        return {"all": {"children": {"proxmox_hosts": {"hosts": {"pve-vm": host}},
                                      "proxmox_gpu_hosts": {"hosts": {"pve-vm": {}}}}}}


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def vm_image() -> Path:
    """Install QEMU if needed and build the guest image (cached under .cache/images/)."""
    if shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None:
        subprocess.run(["bash", str(IMAGES / "setup-podman.sh"), "--vm"], check=True)
    subprocess.run(["bash", str(IMAGES / "build-vm-image.sh")], check=True)
    return IMAGE_DIR


@pytest.fixture(scope="module")
def guest(vm_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """Boot a copy-on-write overlay of the image; stop QEMU afterwards."""
    work = tmp_path_factory.mktemp("vm")
    overlay = work / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(vm_image / "vm.img"), "-F", "raw",
         str(overlay)],
        check=True,
    )
    port = _free_loopback_port()
    serial = work / "serial.log"
    cmd = [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi",
        "-cpu", "max,vendor=GenuineIntel",
        "-smp", "2", "-m", "1024",
        "-machine", "q35,kernel-irqchip=split",
        "-device", "intel-iommu,intremap=on",
        "-kernel", str(vm_image / "grub.lnx"),
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        # the passthrough candidate: an emulated NIC alone in its IOMMU group, with no network
        "-device", "e1000e,romfile=",
        "-vga", "none", "-display", "none", "-monitor", "none",
        "-serial", f"file:{serial}",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=(work / "qemu.log").open("wb"))
    g = Guest(port=port, key=vm_image / "id_ed25519", serial_log=serial, process=proc)
    try:
        g.wait_for_ssh()
        g.timings["boot_s"] = round(time.monotonic() - started, 1)
        yield g
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
