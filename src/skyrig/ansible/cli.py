"""``skyrig ansible run PLAYBOOK --stack S``: stack inventory, run through ansible-runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from skyrig.errors import SkyrigConfigError

app = typer.Typer(
    no_args_is_help=True, help="Run playbooks with an inventory derived from a stack."
)
console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Run skyrig's playbooks (playbooks/) with an inventory derived from a stack."""


PLAYBOOK_HELP = "site, host-prep, gpu-guests, k8s, ray, monitoring, upgrade, reset, or a path"


def _provisioned_ips(state_dir: Path) -> dict[str, str]:
    """VM addresses from the stack's provisioning record (``provision.json``, written by both
    the direct and the Pulumi path); they override the stack's planned ones."""
    from skyrig.proxmox.state import ProvisionRecord

    return ProvisionRecord(state_dir / "provision.json").ips()


def _extra_vars(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SkyrigConfigError(f"--extra-var '{pair}' is not KEY=VALUE (VALUE may be YAML)")
        out[key] = yaml.safe_load(value) if value else ""
    return out


@app.command("run")
def run(
    playbook: Annotated[str, typer.Argument(help=PLAYBOOK_HELP)],
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name.")],
    limit: Annotated[
        str | None, typer.Option("--limit", "-l", help="Ansible host pattern.")
    ] = None,
    inventory_only: Annotated[
        bool, typer.Option("--inventory-only", help="Print the generated inventory and stop.")
    ] = False,
    extra_var: Annotated[
        list[str] | None, typer.Option("--extra-var", "-e", help="KEY=VALUE, repeatable.")
    ] = None,
) -> None:
    """Run PLAYBOOK against the inventory generated from the stack; exit non-zero on failure."""
    from skyrig.ansible.runner import resolve_playbook, run_playbook
    from skyrig.ansible.secrets import k3s_token_file
    from skyrig.config import load_stack
    from skyrig.plan.inventory import build_inventory

    st = load_stack(stack)
    state_dir = Path(st.state_dir)
    inventory = build_inventory(st, _provisioned_ips(state_dir))
    if inventory_only:
        typer.echo(yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False))
        return
    path = resolve_playbook(playbook)
    console.print(f"skyrig ansible: {path.name} on stack [bold]{st.name}[/]")
    result = run_playbook(
        str(path),
        inventory,
        private_data_dir=state_dir / "ansible",
        extravars_files=[k3s_token_file(state_dir)],
        extravars=_extra_vars(extra_var or []) or None,
        limit=limit,
        console=console,
    )
    console.print(
        f"[green]✓[/] {result.playbook} succeeded on {len(result.hosts)} host(s), "
        f"{result.changed} change(s)"
    )
