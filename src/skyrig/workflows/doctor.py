"""`skyrig doctor`: what is installed and reachable on this machine."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys


def _pkg(name: str) -> tuple[bool, str]:
    try:
        return True, md.version(name)
    except md.PackageNotFoundError:
        return False, "not installed (run `make venv`)"


def _cmd(name: str, *args: str) -> tuple[bool, str]:
    path = shutil.which(name)
    if path is None:
        return False, "not on PATH"
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{path}: {exc}"
    text = (out.stdout or out.stderr).strip().splitlines()
    return out.returncode == 0, text[0] if text else path


def checks() -> list[tuple[str, bool, str]]:
    """(component, ok, detail) rows."""
    rows: list[tuple[str, bool, str]] = [
        ("python", sys.version_info >= (3, 11), sys.version.split()[0]),
    ]
    pulumi_ok, pulumi_detail = _cmd("pulumi", "version")
    rows.append(
        (
            "pulumi CLI",
            pulumi_ok,
            pulumi_detail
            if pulumi_ok
            else "absent: `skyrig up` uses the direct apply (same reconcile core)",
        )
    )
    for pkg in (
        "pulumi",
        "proxmoxer",
        "ansible-core",
        "ansible-runner",
        "ray",
        "torch",
        "jax",
        "mlflow",
        "qso-anomaly",
    ):
        ok, detail = _pkg(pkg)
        rows.append((pkg, ok, detail))
    for cmd, args in (
        ("podman", ("--version",)),
        ("runc", ("--version",)),
        ("qemu-system-x86_64", ("--version",)),
        ("promtool", ("--version",)),
        ("kubectl", ("version", "--client")),
    ):
        ok, detail = _cmd(cmd, *args)
        rows.append((cmd, ok, detail))
    return rows
