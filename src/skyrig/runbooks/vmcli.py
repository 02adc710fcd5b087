"""``skyrig vm status | start | shutdown | reboot``: one VM of a stack, through the PVE API.

These are the operator verbs the runbooks call (pending reboot, GPU replacement, node down).
They act only on VMs the stack owns (tag ``skyrig-<stack>``, :func:`skyrig.proxmox.vms.owned`)
and wait for the Proxmox task to finish (:func:`skyrig.proxmox.tasks.wait_for_task`). A reboot
applies pending configuration (PVE ``POST /nodes/{node}/qemu/{vmid}/status/reboot``: "Reboot
the VM by shutting it down, and starting it again. Applies pending changes.").

Endpoint: ``$SKYRIG_PVESIM_ENDPOINT``, else for an embedded (``pvesim``) stack the running
simulator's ``<state_dir>/pvesim/endpoint.json`` (never started from here), else the stack's.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console

from skyrig.config import Stack
from skyrig.errors import OwnershipError, SkyrigError
from skyrig.proxmox.endpoint import PVESIM_ENV, Endpoint, resolve_endpoint
from skyrig.runbooks.execute import CheckFailed

app = typer.Typer(no_args_is_help=True, help="Inspect, start, shut down or reboot one VM.")
console = Console(soft_wrap=True)

StackOpt = Annotated[str, typer.Option("--stack", "-s", help="Stack name.")]
VmidOpt = Annotated[int, typer.Option("--vmid", help="The VM's id (alert label `vmid`).")]


@app.callback()
def _group() -> None:
    """One VM of a stack: status (with pending changes), start, shutdown, reboot."""


def stack_endpoint(stack: Stack) -> Endpoint:
    """The PVE endpoint for ``stack`` (see the module docstring); raises SkyrigError if none."""
    if not os.environ.get(PVESIM_ENV) and stack.config.proxmox.embedded:
        f = stack.state_dir / "pvesim" / "endpoint.json"
        if not f.is_file():
            raise SkyrigError(f"stack {stack.name}: no running pvesim ({f} is missing)",
                              hint=f"run `skyrig up --stack {stack.name} --only infra` first")
        raw = json.loads(f.read_text())
        return Endpoint(url=str(raw["url"]).removesuffix("/api2/json"),
                        token_id=str(raw["token_id"]), token_secret=str(raw["token_secret"]),
                        ca_path=str(raw.get("ca_path")) if raw.get("ca_path") else None)
    return resolve_endpoint(stack)


def _open(stack_name: str, vmid: int) -> tuple[Stack, object, object]:
    from skyrig.config import load_stack
    from skyrig.proxmox.client import PveClient
    from skyrig.proxmox.vms import VmReconciler

    st = load_stack(stack_name)
    client = PveClient(stack_endpoint(st))
    rec = VmReconciler(client, task_timeout_s=st.config.proxmox.task_timeout_s)
    state = rec.read(vmid)
    if state is None:
        raise SkyrigError(f"VM {vmid} does not exist on the cluster of stack {st.name}",
                          hint=f"`skyrig plan --stack {st.name}` lists the stack's VMs")
    return st, rec, state


def _task(rec: object, node: str, vmid: int, action: str, params: dict[str, object] | None = None
          ) -> None:
    """POST ``status/<action>`` and wait for the task (raises ProxmoxTaskError on failure)."""
    from skyrig.proxmox.tasks import wait_for_task
    from skyrig.proxmox.vms import VmReconciler

    assert isinstance(rec, VmReconciler)
    upid = rec.c.request("POST", f"nodes/{node}/qemu/{vmid}/status/{action}", params or {},
                         node=node, vmid=vmid)
    if upid:
        wait_for_task(rec.c, str(upid), policy=rec.policy, vmid=vmid, what=f"{action} of {vmid}")


def _owned_or_raise(st: Stack, state: object, verb: str) -> None:
    from skyrig.plan import owner_tag
    from skyrig.proxmox.vms import VmState, owned

    assert isinstance(state, VmState)
    if not owned(state, owner_tag(st.name)):
        raise OwnershipError(f"refusing to {verb} VM {state.vmid} on {state.node}: it does not"
                             f" carry the tag {owner_tag(st.name)}",
                             hint="skyrig only acts on VMs its stack owns")


@app.command("status")
def status(
    stack: StackOpt,
    vmid: VmidOpt,
    expect_status: Annotated[
        str | None, typer.Option("--expect-status", help="Exit 1 unless the VM is in this state.")
    ] = None,
    expect_pending: Annotated[
        bool | None,
        typer.Option("--expect-pending/--expect-no-pending",
                     help="Exit 1 unless the VM has (or has no) pending changes."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Power state, node, owner and pending configuration keys of one VM (read-only)."""
    from skyrig.plan import owner_tag
    from skyrig.proxmox.vms import VmState, owned

    st, _rec, state = _open(stack, vmid)
    assert isinstance(state, VmState)
    doc = {"vmid": state.vmid, "node": state.node, "status": state.status,
           "pending": state.pending_keys, "owned": owned(state, owner_tag(st.name)),
           "name": state.config.get("name")}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        pending = ", ".join(state.pending_keys) or "none"
        console.print(f"VM {state.vmid} ({doc['name']}) on {state.node}: {state.status};"
                      f" pending: {pending}; owned by {st.name}: {doc['owned']}")
    problems = []
    if expect_status is not None and state.status != expect_status:
        problems.append(f"status is {state.status}, expected {expect_status}")
    if expect_pending is True and not state.pending_keys:
        problems.append("no pending changes, expected some")
    if expect_pending is False and state.pending_keys:
        problems.append(f"pending changes remain: {', '.join(state.pending_keys)}")
    if problems:
        raise CheckFailed(f"VM {vmid}: check failed: " + "; ".join(problems))


@app.command("reboot")
def reboot(
    stack: StackOpt,
    vmid: VmidOpt,
    only_if_pending: Annotated[
        bool, typer.Option("--only-if-pending", help="Do nothing when no change is pending.")
    ] = False,
) -> None:
    """Reboot a running VM the stack owns (applies pending changes); waits for the task."""
    from skyrig.proxmox.vms import VmReconciler, VmState

    st, rec, state = _open(stack, vmid)
    assert isinstance(state, VmState) and isinstance(rec, VmReconciler)
    _owned_or_raise(st, state, "reboot")
    if only_if_pending and not state.pending_keys:
        console.print(f"VM {vmid}: nothing pending, not rebooted")
        return
    if not state.running:
        raise SkyrigError(f"VM {vmid} on {state.node} is {state.status}, not running",
                          hint="start it with `skyrig vm start` (a start applies pending changes)")
    console.print(f"rebooting VM {vmid} on {state.node} (pending: "
                  f"{', '.join(state.pending_keys) or 'none'})")
    _task(rec, state.node, vmid, "reboot")
    after = rec.read(vmid, state.node)
    assert after is not None
    console.print(f"[green]✓[/] VM {vmid}: {after.status}; pending now: "
                  f"{', '.join(after.pending_keys) or 'none'}")


@app.command("start")
def start(stack: StackOpt, vmid: VmidOpt) -> None:
    """Start a VM the stack owns if it is not running (idempotent); waits for the task."""
    from skyrig.proxmox.vms import VmReconciler, VmState

    st, rec, state = _open(stack, vmid)
    assert isinstance(state, VmState) and isinstance(rec, VmReconciler)
    _owned_or_raise(st, state, "start")
    if state.running:
        console.print(f"VM {vmid} already running")
        return
    _task(rec, state.node, vmid, "start")
    console.print(f"[green]✓[/] VM {vmid} started on {state.node}")


@app.command("shutdown")
def shutdown(
    stack: StackOpt,
    vmid: VmidOpt,
    timeout_s: Annotated[int, typer.Option("--timeout", help="Graceful shutdown timeout (s).")]
    = 120,
) -> None:
    """Shut a VM the stack owns down gracefully, then stop it if it did not (idempotent)."""
    from skyrig.proxmox.vms import VmReconciler, VmState

    st, rec, state = _open(stack, vmid)
    assert isinstance(state, VmState) and isinstance(rec, VmReconciler)
    _owned_or_raise(st, state, "shut down")
    if not state.running:
        console.print(f"VM {vmid} already {state.status}")
        return
    _task(rec, state.node, vmid, "shutdown", {"timeout": timeout_s, "forceStop": 1})
    console.print(f"[green]✓[/] VM {vmid} on {state.node} is down")
