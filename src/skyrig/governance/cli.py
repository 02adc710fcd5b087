"""``skyrig governance check --stack S [--version V] [--json]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from skyrig.runbooks.execute import DEFAULT_MODEL_NAME, CheckFailed

app = typer.Typer(no_args_is_help=True, help="NIST AI RMF evidence of released model versions.")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
COLOUR = {"satisfied": "green", "missing": "red", "failed": "red", "stale": "yellow"}


@app.callback()
def _group() -> None:
    """NIST AI RMF evidence per model version (catalogue: skyrig/governance/catalogue.yaml)."""


@app.command("check")
def check(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name.")],
    version: Annotated[
        str | None, typer.Option("--version", help="Check this version (default: the alias's).")
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Registered model name.")]
    = DEFAULT_MODEL_NAME,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Report directory (default <state_dir>/governance)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Satisfied / missing / failed / stale per AI RMF subcategory; exit 1 if any required
    item is not satisfied. Writes a markdown report (and JSON) a reviewer can read."""
    from skyrig.config import load_stack
    from skyrig.governance.check import check_stack
    from skyrig.governance.report import write_report

    st = load_stack(stack)
    res = check_stack(st, version=version, model=model)
    md, _js = write_report(res, report or st.state_dir / "governance")
    if as_json:
        typer.echo(json.dumps({**res.to_dict(), "report": str(md)}))
    else:
        t = Table(title=f"AI RMF evidence: {res.model} v{res.version} (@{res.alias},"
                        f" stack {res.stack})")
        for col in ("subcategory", "required", "status", "evidence", "detail"):
            t.add_column(col, overflow="fold")
        for i in res.items:
            t.add_row(i.id, "yes" if i.required else "no",
                      f"[{COLOUR.get(i.status, 'white')}]{i.status}[/]", i.expected, i.detail)
        console.print(t)
        verdict = "[green]PASS[/]" if res.ok else (
            f"[red]FAIL[/]: {', '.join(i.id for i in res.blocking)}")
        console.print(f"{verdict}\nreport: {md}", highlight=False)
    if not res.ok:
        raise CheckFailed(f"{res.model} version {res.version}: required AI RMF evidence not"
                          f" satisfied: {', '.join(i.id for i in res.blocking)}",
                          hint=f"read the report: {md}")
