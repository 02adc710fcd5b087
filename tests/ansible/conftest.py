"""A podman container as an Ansible target (connection containers.podman.podman).

(No __init__.py here on purpose: a package named ``ansible`` would shadow the real one.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "images"
CONTAINERS_CONF = IMAGES / "containers.conf"
IMAGE = "localhost/debian12-systemd:latest"


@pytest.fixture(scope="session")
def podman_target() -> Iterator[str]:
    """A running container (host network, unique name); yields its name."""
    os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        subprocess.run(["bash", str(IMAGES / "setup-podman.sh")], check=True)
    subprocess.run(["bash", str(IMAGES / "build-debian12-systemd.sh")], check=True)
    name = f"skyrig-ansible-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["podman", "run", "-d", "--rm", "--name", name, "--network", "host", IMAGE,
         "sleep", "1800"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def target_vars(podman_target: str) -> dict[str, str]:
    """Host variables that reach the container through containers.podman.podman."""
    return {
        "ansible_connection": "containers.podman.podman",
        "ansible_host": podman_target,
        "ansible_python_interpreter": "/usr/bin/python3",
    }


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
