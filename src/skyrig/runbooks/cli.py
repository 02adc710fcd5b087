"""``skyrig runbook list | show ID | run ID --stack S``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skyrig.runbooks.execute import CheckFailed

app = typer.Typer(no_args_is_help=True, help="List, show and run executable runbooks.")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="Runbook directory (default: <project root>/runbooks)."),
]


@app.callback()
def _group() -> None:
    """Executable runbooks (runbooks/*.md): steps run, checked, rolled back and recorded."""


def _dir(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from skyrig.config.loader import project_root

    return project_root() / "runbooks"


@app.command("list")
def list_(
    alert: Annotated[str | None, typer.Option("--alert", help="Only runbooks for this alert.")]
    = None,
    directory: DirOpt = None,
) -> None:
    """Every runbook with its alerts, stacks and risk (optionally only those for one alert)."""
    from skyrig.runbooks.parse import load_runbooks

    books = load_runbooks(_dir(directory))
    if alert:
        books = [b for b in books if alert in b.alerts]
        if not books:
            raise CheckFailed(f"no runbook answers alert {alert}",
                              hint="`skyrig runbook list` shows every runbook and its alerts")
    t = Table(title="runbooks")
    t.add_column("id", no_wrap=True)
    for col in ("title", "alerts", "stacks", "risk", "steps"):
        t.add_column(col)
    for b in books:
        t.add_row(b.id, b.title, ", ".join(b.alerts) or "-", ", ".join(b.stacks), b.risk,
                  str(len(b.steps)))
    console.print(t)


@app.command("show")
def show(rid: Annotated[str, typer.Argument(help="Runbook id.")], directory: DirOpt = None
         ) -> None:
    """The runbook's front matter and its steps with the variables they need."""
    from skyrig.runbooks.parse import find_runbook

    b = find_runbook(_dir(directory), rid)
    console.print(f"[bold]{b.id}[/]: {escape(b.title)}  ({b.path})")
    console.print(f"  alerts: {', '.join(b.alerts) or '-'}; stacks: {', '.join(b.stacks)};"
                  f" risk: {b.risk}")
    for pre in b.preconditions:
        console.print(f"  precondition: {escape(pre)}")
    if b.variables:
        console.print(f"  variables: {', '.join(b.variables)}")
    t = Table(title="steps")
    for col in ("#", "name", "kind", "line", "command / instruction"):
        t.add_column(col)
    for i, s in enumerate(b.steps, start=1):
        kind = s.kind + (" (read-only)" if s.kind == "check" and s.readonly else "")
        t.add_row(str(i), s.name, kind, str(s.line), escape(s.text))
    console.print(t)


@app.command("run")
def run(
    rid: Annotated[str, typer.Argument(help="Runbook id.")],
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name.")],
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="NAME=VALUE (alert labels: vmid, node, gpu, ...); repeatable."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every command; run only read-only checks.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (prod, manual steps).")]
    = False,
    start_from: Annotated[
        str | None, typer.Option("--from", help="Resume at this step (see `runbook show`).")
    ] = None,
    directory: DirOpt = None,
) -> None:
    """Run a runbook step by step; exit 1 when a step failed (rollbacks ran), 0 when done."""
    from skyrig.config import load_stack
    from skyrig.runbooks.execute import execute, parse_vars
    from skyrig.runbooks.parse import find_runbook

    book = find_runbook(_dir(directory), rid)
    st = load_stack(stack)
    interactive = sys.stdin.isatty()
    result = execute(
        book, st, variables=parse_vars(var or []), dry_run=dry_run, yes=yes,
        start_from=start_from, confirm=(lambda q: typer.confirm(q)) if interactive else None,
        console=err)
    if result.exit_code:
        raise CheckFailed(f"runbook {book.id} {result.status} at step {result.failed_step}"
                          f" (rolled back: {', '.join(result.rolled_back) or 'nothing'})",
                          hint=f"record: {result.record}; fix the cause and resume with"
                               f" --from {result.failed_step}")
