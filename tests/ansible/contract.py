"""Shared helpers of the Ansible contract tests: roles' argument_specs/defaults, the plays of the
playbooks (import_playbook expanded) and an ansible InventoryManager over a generated inventory.

(A plain module, not a package: tests/ansible has no __init__.py so that ``ansible`` resolves to
the real package.)"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
PLAYBOOKS_DIR = REPO / "playbooks"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "meta" / "argument_specs.yml").is_file())
STACKS = ("local", "dev", "prod")


@functools.cache
def argument_specs(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    return dict(data["argument_specs"]["main"]["options"])


@functools.cache
def role_defaults(role: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {})


def role_of(var: str) -> str | None:
    """The role a ``<role>_*`` variable belongs to (longest role-name prefix), else None."""
    owners = [r for r in ROLES if var.startswith(r + "_")]
    return max(owners, key=len) if owners else None


@dataclass
class Play:
    playbook: str
    name: str
    hosts: str
    roles: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    serial: Any = None


ONLY_GROUP = "__only_group__"
_GROUP_WHEN = re.compile(r"inventory_hostname in \(groups\['(\w+)'\]")


def _role_entries(play: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for r in play.get("roles") or []:
        if isinstance(r, str):
            out.append((r, {}))
        else:
            out.append((r["role"], dict(r.get("vars") or {})))
    for section in ("pre_tasks", "tasks", "post_tasks"):
        for t in play.get(section) or []:
            inc = t.get("ansible.builtin.include_role") or t.get("ansible.builtin.import_role")
            if inc:
                rv = dict(t.get("vars") or {})
                m = _GROUP_WHEN.search(str(t.get("when", "")))
                if m:  # `when: inventory_hostname in (groups['X'] ...)`: only X's hosts
                    rv[ONLY_GROUP] = m.group(1)
                out.append((inc["name"], rv))
    return out


@functools.cache
def plays(playbook: str) -> tuple[Play, ...]:
    """The plays of ``playbooks/<playbook>.yml`` in order, imports expanded."""
    out: list[Play] = []
    for entry in yaml.safe_load((PLAYBOOKS_DIR / f"{playbook}.yml").read_text()):
        if "ansible.builtin.import_playbook" in entry:
            out.extend(plays(Path(entry["ansible.builtin.import_playbook"]).stem))
            continue
        out.append(Play(playbook, entry["name"], entry["hosts"], _role_entries(entry),
                        dict(entry.get("vars") or {}), entry.get("serial")))
    return tuple(out)


PLAYBOOKS = sorted(p.stem for p in PLAYBOOKS_DIR.glob("*.yml"))


def ansible_inventory(inventory: dict[str, Any], tmp: Path) -> Any:
    """An ansible ``InventoryManager`` + ``VariableManager`` over ``inventory`` (written to
    ``tmp/inventory.yml``)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(path)])
    return loader, inv, VariableManager(loader=loader, inventory=inv)
