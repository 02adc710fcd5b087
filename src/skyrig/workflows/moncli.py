"""``skyrig monitor status|render-rules --stack S``: the local monitoring stack's state."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="Monitoring: targets, alerts, rules.")
console = Console()

StackOpt = Annotated[
    str, typer.Option("--stack", "-s", help="Stack name (local, dev, prod) or file.")]


@app.callback()
def _group() -> None:
    """Monitoring of a stack (local: the loopback Prometheus started by `skyrig up`)."""


@app.command()
def status(
    stack: StackOpt = "local",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Prometheus URL, targets up out of total, alerts firing (exit 1 when not running)."""
    from skyrig.config import load_stack
    from skyrig.workflows.localmon import print_status
    from skyrig.workflows.localmon import status as mon_status

    st = mon_status(load_stack(stack))
    if as_json:
        typer.echo(json.dumps(st, indent=2))
    else:
        print_status(st, console)


@app.command()
def report(
    stack: StackOpt = "local",
    window_min: Annotated[float, typer.Option("--window-min", help="Minutes to plot.")] = 60.0,
) -> None:
    """Time-series plots from the local Prometheus as an HTML page (path printed)."""
    from skyrig.config import load_stack
    from skyrig.workflows.monreport import build_report

    st = load_stack(stack)
    out = build_report(st, st.state_dir / "monitoring" / "report.html",
                       window_s=window_min * 60)
    console.print(f"monitoring report: {out}", soft_wrap=True, highlight=False)
