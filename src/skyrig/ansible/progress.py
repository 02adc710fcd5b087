"""Progress per host and task on a rich console."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skyrig.ansible.events import Event, failure_message
from skyrig.ansible.result import AnsibleRunResult

_STYLE = {
    "runner_on_ok": ("ok", "green"),
    "runner_on_failed": ("failed", "red"),
    "runner_on_unreachable": ("unreachable", "red"),
    "runner_on_skipped": ("skipped", "cyan"),
}


class ConsoleProgress:
    """Prints plays, tasks and each host's result as they happen."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: Event) -> None:
        kind = event.get("event", "")
        data: dict[str, Any] = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.console.print(f"[bold]PLAY[/] {escape(str(data.get('play', '')))}")
        elif kind == "playbook_on_task_start" and not data.get("is_conditional"):
            self.console.print(f"  [bold]TASK[/] {escape(str(data.get('task', '')))}")
        elif kind == "playbook_on_handler_task_start":
            self.console.print(f"  [bold]HANDLER[/] {escape(str(data.get('task', '')))}")
        elif kind in _STYLE:
            word, style = _STYLE[kind]
            res = data.get("res") or {}
            if kind == "runner_on_ok" and isinstance(res, dict) and res.get("changed"):
                word, style = "changed", "yellow"
            line = f"    {escape(str(data.get('host', '?')))}: [{style}]{word}[/]"
            if kind in ("runner_on_failed", "runner_on_unreachable") and isinstance(res, dict):
                note = " (ignored)" if data.get("ignore_errors") else ""
                line += f"{note} {escape(failure_message(res))}"
            self.console.print(line)


def summary_table(result: AnsibleRunResult) -> Table:
    table = Table(title=f"{result.playbook}: {result.status}")
    for col in ("host", "ok", "changed", "failed", "unreachable", "skipped", "rescued"):
        table.add_column(col, justify="left" if col == "host" else "right")
    for name in sorted(result.hosts):
        h = result.hosts[name]
        table.add_row(
            name,
            str(h.ok),
            f"[yellow]{h.changed}[/]" if h.changed else "0",
            f"[red]{h.failed}[/]" if h.failed else "0",
            f"[red]{h.unreachable}[/]" if h.unreachable else "0",
            str(h.skipped),
            str(h.rescued),
        )
    return table
