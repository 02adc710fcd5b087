"""The os layer of ``skyrig up``: the ``site`` playbook through ansible-runner, on the inventory
derived from the stack (with the addresses the provisioning record holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from skyrig.config import Stack


def run_site(stack: Stack, *, console: Console, playbook: str = "site") -> dict[str, Any]:
    """Run ``playbooks/<playbook>.yml`` on every host of the stack; returns a summary dict.

    Raises :class:`~skyrig.errors.AnsibleRunError` naming the failed host and task.
    """
    from skyrig.ansible.cli import _provisioned_ips
    from skyrig.ansible.runner import resolve_playbook, run_playbook
    from skyrig.ansible.secrets import k3s_token_file
    from skyrig.plan.inventory import build_inventory

    state_dir = Path(stack.state_dir)
    inventory = build_inventory(stack, _provisioned_ips(state_dir))
    path = resolve_playbook(playbook)
    console.print(f"  ansible: {path.name} on stack [bold]{stack.name}[/]")
    result = run_playbook(str(path), inventory, private_data_dir=state_dir / "ansible",
                          extravars_files=[k3s_token_file(state_dir)], console=console)
    return {"playbook": result.playbook, "hosts": len(result.hosts), "changed": result.changed}
