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
from skyrig.fsutil import private_dir
from skyrig.proxmox.endpoint import Endpoint
from skyrig.proxmox.privileges import MINIMAL_PRIVILEGES


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
        sim = ensure_running(stack.state_dir / "pvesim", hardware=hardware,
                             bootstrap=bootstrap_spec(stack))
    except PveSimError as exc:
        if exc.exit_code == 2:
            raise SkyrigConfigError(str(exc), file=str(stack.file)) from exc
        raise SkyrigError(exc.message, hint=exc.hint) from exc
    token_id = stack.config.proxmox.token_id
    if token_id.startswith("root@pam!"):
        console.print(f"  pvesim: {sim.url} (CA {sim.ca_path}, pid {sim.pid}; as root)")
        return Endpoint.from_pvesim(sim)
    secret = sim.tokens.get(token_id)
    if secret is None:
        raise SkyrigError(f"pvesim did not bootstrap the token {token_id}",
                          hint=f"`skyrig down --stack {stack.name}` and retry; see"
                          f" {pvesim_dir(stack) / 'pvesim.log'}")
    console.print(f"  pvesim: {sim.url} (CA {sim.ca_path}, pid {sim.pid}; token {token_id},"
                  f" least privilege: docs/provisioning.md)")
    return Endpoint.from_dict({"url": str(sim.url).removesuffix("/api2/json"),
                               "token_id": token_id, "token_secret": secret,
                               "ca_path": str(sim.ca_path)})


def bootstrap_spec(stack: Stack) -> dict[str, object] | None:
    """The user + privilege-separated token pvesim creates for the stack (root is used only
    for that): ``proxmox.token_id`` with exactly :data:`MINIMAL_PRIVILEGES`. None when the
    stack still names a root token."""
    token_id = stack.config.proxmox.token_id
    if token_id.startswith("root@pam!"):
        return None
    userid, _, tokenid = token_id.partition("!")
    return {"userid": userid, "tokenid": tokenid,
            "acl": {path: list(privs) for path, privs in MINIMAL_PRIVILEGES.items()}}


def stop_pvesim(stack: Stack) -> bool:
    """Stop the stack's pvesim if it runs (its state is kept). True when one was stopped."""
    if not stack.config.proxmox.embedded:
        return False
    from pvesim.daemon import stop

    return bool(stop(stack.state_dir / "pvesim"))
