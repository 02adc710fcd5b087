"""``skyrig model show | promote | approve | rollback``: the stack's registered model and its alias.

The stack pins a registry alias (``skyrig:workload.model_alias``, normally ``champion``); the
workload scores with the version the alias points to. Rolling back moves the alias to the
previous version released with ``release_decision=go`` (NIST AI RMF MANAGE 2.4: supersede or
deactivate); promoting refuses a version without ``go`` (MANAGE 1.1). Approving records the
person who reviewed a released version in its ``release_decision.json`` (MEASURE 1.3), for
releases the pipeline made without ``--approver`` (skyrig's own workload job names no one).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from skyrig.runbooks.execute import DEFAULT_MODEL_NAME, CheckFailed

app = typer.Typer(no_args_is_help=True, help="Show, promote or roll back the stack's model.")
console = Console(soft_wrap=True)

StackOpt = Annotated[str, typer.Option("--stack", "-s", help="Stack name.")]
ModelOpt = Annotated[str, typer.Option("--model", help="Registered model name.")]
AliasOpt = Annotated[
    str | None, typer.Option("--alias", help="Alias (default: the stack's model_alias).")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded with the move).")]


def _version_number(value: str | None) -> str | None:
    """A registered version's number as given (``"3"``); anything else is a usage error (2)."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise typer.BadParameter(
            f"{value!r} is not a model version: give its number (1, 2, …) as"
            " `skyrig model show --stack S` lists them")
    return str(int(text))


@app.callback()
def _group() -> None:
    """The stack's registered model: which version its alias serves, promotion, rollback."""


def _open(stack: str, model: str, alias: str | None) -> tuple[object, str]:
    from skyrig.config import load_stack
    from skyrig.governance.registry import Registry
    from skyrig.runbooks.execute import tracking_uri

    st = load_stack(stack)
    return Registry(tracking_uri(st), model), alias or st.config.workload.model_alias


@app.command("show")
def show(
    stack: StackOpt,
    model: ModelOpt = DEFAULT_MODEL_NAME,
    alias: AliasOpt = None,
    expect_version: Annotated[
        str | None, typer.Option("--expect-version", help="Exit 1 unless the alias is here.")
    ] = None,
    expect_decision: Annotated[
        str | None,
        typer.Option("--expect-decision", help="Exit 1 unless the served version has it."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every version with its aliases and release decision; which one the alias serves."""
    from skyrig.governance.registry import Registry

    reg, al = _open(stack, model, alias)
    assert isinstance(reg, Registry)
    cur = reg.require(al)
    versions = reg.versions()
    if as_json:
        typer.echo(json.dumps({"model": model, "alias": al, "version": cur.version,
                               "versions": [v.to_dict() for v in versions],
                               "history": reg.history(al)}))
    else:
        t = Table(title=f"{model} (@{al} = version {cur.version})")
        for col in ("version", "aliases", "release_decision", "rolled back", "created"):
            t.add_column(col)
        for v in versions:
            t.add_row(v.version, ", ".join(v.aliases) or "-", v.decision or "-",
                      v.tags.get("rolled_back_at", "-"), v.to_dict()["created"])
        console.print(t)
    problems = []
    if expect_version is not None and cur.version != expect_version:
        problems.append(f"@{al} is version {cur.version}, expected {expect_version}")
    if expect_decision is not None and cur.decision != expect_decision:
        problems.append(f"version {cur.version} has release_decision={cur.decision!r},"
                        f" expected {expect_decision}")
    if problems:
        raise CheckFailed(f"{model}: check failed: " + "; ".join(problems))


@app.command("rollback")
def rollback(
    stack: StackOpt,
    model: ModelOpt = DEFAULT_MODEL_NAME,
    alias: AliasOpt = None,
    to: Annotated[
        str | None,
        typer.Option("--to", callback=_version_number,
                     help="Version to go back to (default: previous go)."),
    ] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Undo the last skyrig rollback.")] = False,
    reason: ReasonOpt = "",
) -> None:
    """Move the alias back to the previous released version (or --to VERSION)."""
    from skyrig.governance.registry import Registry

    reg, al = _open(stack, model, alias)
    assert isinstance(reg, Registry)
    entry = reg.undo_rollback(al, reason) if undo else reg.rollback(al, to=to, reason=reason)
    console.print(f"[green]✓[/] {model}@{al}: version {entry['from']} → {entry['to']}"
                  f" ({entry['action']}, {entry['who']})")


@app.command("promote")
def promote(
    stack: StackOpt,
    version: Annotated[
        str, typer.Option("--version", callback=_version_number, help="Version to serve.")
    ],
    model: ModelOpt = DEFAULT_MODEL_NAME,
    alias: AliasOpt = None,
    reason: ReasonOpt = "",
) -> None:
    """Point the alias at VERSION; refused unless its release decision is go."""
    from skyrig.governance.registry import Registry

    reg, al = _open(stack, model, alias)
    assert isinstance(reg, Registry)
    entry = reg.promote(al, version, reason=reason)
    console.print(f"[green]✓[/] {model}@{al}: version {entry['from']} → {entry['to']}")


@app.command("approve")
def approve(
    stack: StackOpt,
    version: Annotated[
        str,
        typer.Option("--version", callback=_version_number, help="Released version to approve."),
    ],
    approver: Annotated[str, typer.Option("--approver", help="Your name (the reviewer).")],
    model: ModelOpt = DEFAULT_MODEL_NAME,
    reason: ReasonOpt = "",
) -> None:
    """Record that you reviewed and approved VERSION (NIST AI RMF MEASURE 1.3).

    Only a version released with decision go; an automated name is refused (exit 2).
    """
    from skyrig.governance.registry import Registry, require_person

    require_person(approver)  # a usage error: refused before the stack's registry is opened
    reg, _ = _open(stack, model, None)
    assert isinstance(reg, Registry)
    entry = reg.approve(version, approver, reason=reason)
    if entry["changed"]:
        console.print(f"[green]✓[/] {model} version {entry['version']} approved by"
                      f" {entry['approver']} at {entry['approved_at']}")
    else:
        console.print(f"{model} version {entry['version']} was already approved by"
                      f" {entry['approver']} ({entry['approved_at']}); nothing changed")
