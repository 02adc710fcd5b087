"""The one place where skyrig starts and stops pvesim (the `local` stack's Proxmox).

pvesim is its own distribution (``pvesim/``); skyrig's core never imports it. For a stack whose
``proxmox.endpoint`` is ``pvesim`` the workflow calls :func:`ensure_pvesim` and passes the
returned :class:`~skyrig.proxmox.endpoint.Endpoint` down as an explicit override.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from skyrig.config import Stack
from skyrig.config.checks import pvesim_hardware_path
from skyrig.errors import SkyrigConfigError, SkyrigError
from skyrig.proxmox.endpoint import Endpoint
from skyrig.workflows.runlock import private_dir


def pvesim_dir(stack: Stack) -> Path:
    """Where the stack's pvesim keeps its state, CA, token and log."""
    return stack.state_dir / "pvesim"


def ensure_pvesim(stack: Stack, console: Console) -> Endpoint | None:
    """Start (or find) the stack's pvesim in the background; None for a real-cluster stack.

    Raises :class:`SkyrigConfigError` (exit 2) for a bad hardware profile and
    :class:`SkyrigError` when pvesim cannot start (port, state file).
    """
    if not stack.config.proxmox.embedded:
        return None
    profile = pvesim_hardware_path(stack.config.proxmox.pvesim_hardware, stack.root)
    hardware = str(profile) if profile is not None else stack.config.proxmox.pvesim_hardware
    try:
        from pvesim.apierror import PveSimError
        from pvesim.daemon import ensure_running
    except ImportError as exc:
        raise SkyrigError("the local stack needs pvesim, which is not installed",
                          hint="pip install -e pvesim (make venv does this)") from exc
    try:
        private_dir(stack.state_dir)
        sim = ensure_running(stack.state_dir / "pvesim", hardware=hardware)
    except PveSimError as exc:
        if exc.exit_code == 2:
            raise SkyrigConfigError(str(exc), file=str(stack.file)) from exc
        raise SkyrigError(exc.message, hint=exc.hint) from exc
    console.print(f"  pvesim: {sim.url} (CA {sim.ca_path}, pid {sim.pid})")
    return Endpoint.from_pvesim(sim)


def stop_pvesim(stack: Stack) -> bool:
    """Stop the stack's pvesim if it runs (its state is kept). True when one was stopped."""
    if not stack.config.proxmox.embedded:
        return False
    from pvesim.daemon import stop

    return bool(stop(stack.state_dir / "pvesim"))
