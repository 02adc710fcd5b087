"""The Pulumi path of ``skyrig up/down``: ``pulumi up`` / ``destroy`` via the Automation API.

State lives in a local file backend under ``.skyrig/<stack>/pulumi`` (no Pulumi Cloud). The
program is ``stacks/__main__.py`` (``Pulumi.yaml``: ``main: stacks/``). An endpoint override (the
embedded pvesim) reaches the program through ``$SKYRIG_PVESIM_ENDPOINT`` in the workspace env.
Only used when the ``pulumi`` CLI is installed; :mod:`skyrig.workflows.provision` chooses between
this and the direct apply of :mod:`skyrig.proxmox.apply`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from rich.console import Console

from skyrig.config import Stack
from skyrig.errors import SkyrigError
from skyrig.proxmox.apply import ApplyResult
from skyrig.proxmox.endpoint import PVESIM_ENV, Endpoint


def pulumi_cli() -> str | None:
    """Return the path of the ``pulumi`` CLI on PATH, or None (then the Automation API cannot run).

    The Automation API drives the CLI (Pulumi docs: "Automation API"), so without it skyrig uses
    the direct apply.

    Returns:
        The executable's path, or ``None``.
    """
    return shutil.which("pulumi")


OPS = {"create": "created", "update": "updated", "replace": "replaced",
       "create-replacement": "replaced", "delete": "deleted", "same": "unchanged"}
TYPES = {"pulumi-python:dynamic/proxmox:GpuVm": "vm",
         "pulumi-python:dynamic/proxmox:PciMapping": "pci-mapping"}


def _stack(stack: Stack, endpoint: Endpoint | None) -> Any:
    try:
        from pulumi import automation as auto
    except ImportError as exc:  # pragma: no cover - pulumi is a project dependency
        raise SkyrigError("the Pulumi path needs the `pulumi` package",
                          hint="pip install pulumi, or remove the pulumi CLI from PATH") from exc
    backend = stack.state_dir / "pulumi"
    backend.mkdir(parents=True, exist_ok=True)
    env = {"PULUMI_BACKEND_URL": backend.resolve().as_uri(),
           "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", ""),
           "PULUMI_SKIP_UPDATE_CHECK": "true"}
    if endpoint is not None:
        env[PVESIM_ENV] = json.dumps(endpoint.to_dict())
    opts = auto.LocalWorkspaceOptions(work_dir=str(stack.root), env_vars=env)
    return auto.create_or_select_stack(stack_name=stack.name, work_dir=str(stack.root), opts=opts)


def _collector(result: ApplyResult) -> Any:
    def on_event(event: Any) -> None:
        ev = getattr(event, "res_outputs_event", None)
        meta = getattr(ev, "metadata", None)
        if meta is None:
            return
        kind = TYPES.get(str(meta.type))
        bucket = OPS.get(str(getattr(meta.op, "value", meta.op)))
        if kind is None or bucket is None:
            return
        name = str(meta.urn).rsplit("::", 1)[-1]
        getattr(result, bucket).append(f"{kind}/{name}")
    return on_event


def pulumi_up(stack: Stack, *, console: Console, endpoint: Endpoint | None) -> ApplyResult:
    """Run ``pulumi up`` of ``stack`` through the Automation API (program ``stacks/__main__.py``).

    The state backend is the local file backend ``<state_dir>/pulumi`` (Pulumi docs: "State and
    backends", ``file://``); the passphrase comes from ``$PULUMI_CONFIG_PASSPHRASE``. Engine
    events of the dynamic ``GpuVm``/``PciMapping`` resources are sorted into the result's lists.

    Args:
        stack: The validated stack.
        console: Where Pulumi's output is printed.
        endpoint: An endpoint override (the embedded pvesim) passed to the program as
            ``$SKYRIG_PVESIM_ENDPOINT``, or ``None``.

    Returns:
        What changed per resource (``vm/<name>``, ``pci-mapping/<id>``), the VMs' addresses from
        the ``inventory`` output, pending reboots and elapsed seconds.

    Raises:
        SkyrigError: The ``pulumi`` Python package is missing.
        pulumi.automation.errors.CommandError: ``pulumi up`` failed (its output names the
            resource and the skyrig error).
    """
    started = time.monotonic()
    result = ApplyResult(stack=stack.name, path="pulumi")
    st = _stack(stack, endpoint)
    up = st.up(on_output=lambda line: console.print(line, end="", markup=False,
                                                    highlight=False),
               on_event=_collector(result))
    outputs = {k: v.value for k, v in up.outputs.items()}
    for host in outputs.get("inventory", {}).get("hosts", []):
        if host.get("ip"):
            result.ips[str(host["name"])] = str(host["ip"])
    result.pending_reboot = [str(v) for v in outputs.get("pending_reboot", [])]
    result.elapsed_s = time.monotonic() - started
    return result


def pulumi_destroy(stack: Stack, *, console: Console, endpoint: Endpoint | None) -> ApplyResult:
    """Run ``pulumi destroy`` of ``stack`` through the Automation API.

    Args:
        stack: The validated stack.
        console: Where Pulumi's output is printed.
        endpoint: An endpoint override (the embedded pvesim), or ``None``.

    Returns:
        What was deleted per resource, and elapsed seconds.

    Raises:
        SkyrigError: The ``pulumi`` Python package is missing.
        pulumi.automation.errors.CommandError: ``pulumi destroy`` failed.
    """
    started = time.monotonic()
    result = ApplyResult(stack=stack.name, path="pulumi")
    st = _stack(stack, endpoint)
    st.destroy(on_output=lambda line: console.print(line, end="", markup=False,
                                                    highlight=False),
               on_event=_collector(result))
    result.elapsed_s = time.monotonic() - started
    return result
