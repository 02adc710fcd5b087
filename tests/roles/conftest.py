"""Fixtures for the roles tier: podman set up and the Debian 12 systemd image built."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "images"
CONTAINERS_CONF = IMAGES / "containers.conf"
IMAGE = "localhost/debian12-systemd:latest"


def podman_env() -> dict[str, str]:
    """The environment every podman / molecule / ansible call of this tier runs with."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_ROLES_PATH"] = str(REPO / "roles")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"
    venv_bin = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def systemd_image() -> str:
    """Make sure podman works and localhost/debian12-systemd:latest exists (builds it if not)."""
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        subprocess.run(["bash", str(IMAGES / "setup-podman.sh")], check=True)
    subprocess.run(
        ["bash", str(IMAGES / "build-debian12-systemd.sh")], check=True, env=podman_env()
    )
    return IMAGE
