"""The infrastructure layer of ``skyrig up/down``: which provisioning path runs, with progress.

Two paths, one reconcile core (:mod:`skyrig.proxmox`):

* **pulumi** – when the Pulumi CLI is on PATH (and ``$SKYRIG_FORCE_DIRECT`` is unset): ``pulumi
  up`` through the Automation API (:mod:`skyrig.pulumi.automation`) with a local file backend
  under ``.skyrig/<stack>/pulumi``; the dynamic providers call the same core.
* **direct** – otherwise: :func:`skyrig.proxmox.apply.apply_plan` straight away, on the plan the
  caller built once.

Both end with an :class:`~skyrig.proxmox.apply.ApplyResult` and say which path ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from skyrig.config import Stack
from skyrig.errors import SkyrigConfigError
from skyrig.plan import Plan
from skyrig.proxmox.apply import ApplyFailed, ApplyResult, apply_plan, destroy_plan, preview_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.endpoint import Endpoint, resolve_endpoint
from skyrig.proxmox.state import ProvisionRecord
from skyrig.pulumi.automation import pulumi_cli


def use_pulumi() -> tuple[bool, str]:
    """Whether the Pulumi path runs, and why (for the console line that says which path ran)."""
    if not pulumi_cli():
        return False, "Pulumi CLI not found"
    if os.environ.get("SKYRIG_FORCE_DIRECT"):
        return False, "SKYRIG_FORCE_DIRECT is set"
    return True, "Pulumi CLI found"


def provision_record(stack: Stack) -> ProvisionRecord:
    """The stack's provisioning record (``.skyrig/<stack>/provision.json``), written by both
    paths: what skyrig made (VMs, mappings) and the VMs' addresses."""
    return ProvisionRecord(stack.state_dir / "provision.json")


def client_for(stack: Stack, endpoint: Endpoint) -> PveClient:
    """A PVE API client sized for the stack's ``proxmox.parallelism``."""
    return PveClient(endpoint, pool_size=max(4, stack.config.proxmox.parallelism * 2))


@contextmanager
def _progress(console: Console, names: list[str]) -> Iterator[Callable[[str, str], None]]:
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[vm]:<14}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        ids = {n: progress.add_task("waiting", vm=n, total=None) for n in names}

        def report(name: str, step: str) -> None:
            if name not in ids:
                ids[name] = progress.add_task(step, vm=name, total=None)
            done = step.split(" ", 1)[0] in ("created", "updated", "unchanged", "replaced",
                                             "deleted", "failed:")
            progress.update(ids[name], description=step, total=1 if done else None,
                            completed=1 if done else 0)

        yield report


def summary_table(result: ApplyResult) -> Table:
    """One row per resource: what happened and the detail (address, changes, pending reboot)."""
    t = Table(title=f"provisioning ({result.stack}, {result.path} path)")
    for col in ("resource", "result", "detail"):
        t.add_column(col)
    rows: list[tuple[str, str]] = []
    for label, items in (("created", result.created), ("updated", result.updated),
                         ("replaced", result.replaced), ("deleted", result.deleted),
                         ("unchanged", result.unchanged)):
        rows.extend((r, label) for r in items)
    for res, label in sorted(rows):
        name = res.split("/", 1)[1]
        detail = "; ".join(result.details.get(res, []))
        if name in result.ips:
            detail = f"{result.ips[name]}" + (f"; {detail}" if detail else "")
        t.add_row(res, label, detail)
    return t


def provision(stack: Stack, plan: Plan, *, console: Console,
              endpoint_override: Endpoint | None = None) -> ApplyResult:
    """Provision ``stack`` (Pulumi path when the CLI is present, else the direct apply of
    ``plan``). Raises :class:`~skyrig.proxmox.apply.ApplyFailed` (some resources failed, the
    rest applied) or another :class:`~skyrig.errors.ProxmoxError`."""
    pulumi, why = use_pulumi()
    if pulumi:
        from skyrig.pulumi.automation import pulumi_up

        console.print(f"[bold]provisioning {stack.name}[/] through [cyan]pulumi up[/] "
                      "(Automation API, local file backend under "
                      f"{stack.state_dir / 'pulumi'})")
        result = pulumi_up(stack, console=console, endpoint=endpoint_override)
        record = provision_record(stack)
        for spec in plan.pci_mappings:  # in this stack's Pulumi state: its own
            record.put_mapping(spec.id)
        for vm in plan.vms:
            record.put_vm(vm)
    else:
        endpoint = resolve_endpoint(stack, endpoint_override)
        console.print(f"[bold]provisioning {stack.name}[/] through the [cyan]direct apply[/] "
                      f"({why}; same reconcile core) at {endpoint.url}")
        px = stack.config.proxmox
        with _progress(console, [v.name for v in plan.vms]) as report:
            try:
                result = apply_plan(plan, client_for(stack, endpoint),
                                    parallelism=px.parallelism,
                                    reboot_policy=px.reboot_policy,
                                    task_timeout_s=px.task_timeout_s,
                                    record=provision_record(stack), progress=report)
            except ApplyFailed as exc:
                console.print(summary_table(exc.result))
                raise
    provision_record(stack).set_ips(result.ips)  # the addresses Ansible uses, both paths
    console.print(summary_table(result))
    console.print(("[green]✓[/] " if not result.pending_reboot else "[yellow]![/] ")
                  + result.summary())
    return result


def check_deprovision(stack: Stack, endpoint_override: Endpoint | None = None) -> None:
    """Raise what :func:`deprovision` would raise for missing credentials, contacting nothing.

    The direct apply needs the stack's PVE endpoint and token (``pulumi destroy`` reads the
    token from the stack's Pulumi secret itself); ``skyrig down`` calls this before any layer
    runs, so a missing token stops it before anything is stopped or reported kept.

    Raises:
        SkyrigConfigError: The direct apply would run and the endpoint or its token secret
            cannot be resolved (see :func:`skyrig.proxmox.endpoint.resolve_endpoint`), or
            the CA bundle it verifies the node with is neither a file nor a directory here
            (``requests`` takes either: a PEM bundle, or a directory of hashed certificates).
    """
    if use_pulumi()[0]:
        return
    endpoint = resolve_endpoint(stack, endpoint_override)
    ca = endpoint.verify
    if isinstance(ca, str) and not (Path(ca).is_file() or Path(ca).is_dir()):
        raise SkyrigConfigError(stack.source.issue(
            ("proxmox", "ca_bundle"),
            f"the CA bundle {ca} does not exist on this machine (the PVE API's certificate is"
            " verified with it)",
            "copy the cluster's CA certificate (PEM) there, or fix the path"))


def deprovision(stack: Stack, plan: Plan, *, console: Console,
                endpoint_override: Endpoint | None = None) -> ApplyResult:
    """Remove what the stack owns (``skyrig down``), through the same path choice."""
    pulumi, _why = use_pulumi()
    if pulumi:
        from skyrig.pulumi.automation import pulumi_destroy

        console.print(f"[bold]destroying {stack.name}[/] through [cyan]pulumi destroy[/]")
        result = pulumi_destroy(stack, console=console, endpoint=endpoint_override)
        record = provision_record(stack)
        for mid in record.mappings():
            record.drop_mapping(mid)
        for vmid in record.vms():
            record.drop_vm(vmid)
    else:
        endpoint = resolve_endpoint(stack, endpoint_override)
        console.print(f"[bold]destroying {stack.name}[/] through the [cyan]direct apply[/] at "
                      f"{endpoint.url}")
        with _progress(console, [v.name for v in plan.vms]) as report:
            result = destroy_plan(plan, client_for(stack, endpoint),
                                  parallelism=stack.config.proxmox.parallelism,
                                  task_timeout_s=stack.config.proxmox.task_timeout_s,
                                  record=provision_record(stack), progress=report)
    provision_record(stack).set_ips({})  # nothing left to reach
    console.print(f"[green]✓[/] {len(result.deleted)} resources deleted "
                  f"({result.elapsed_s:.1f}s)" if result.deleted else
                  "[green]✓[/] nothing to delete")
    return result


def preview(stack: Stack, plan: Plan, *,
            endpoint_override: Endpoint | None = None) -> dict[str, list[str]]:
    """Drift of ``stack`` against the live cluster: resource → changes an apply would make."""
    endpoint = resolve_endpoint(stack, endpoint_override)
    return preview_plan(plan, client_for(stack, endpoint))
