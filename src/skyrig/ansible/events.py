"""Turn ansible-runner events into a summary (and, optionally, progress lines)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skyrig.ansible.result import STAT_KEYS, HostSummary, TaskFailure

Event = dict[str, Any]
MAX_MESSAGE = 1200


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and value:
        return "; ".join(str(v) for v in value)
    return ""


def failure_message(res: dict[str, Any]) -> str:
    """The most useful one-line reason from a task result: the module's message, followed by
    stderr (or stdout) when the message alone is generic ("non-zero return code")."""
    parts: list[str] = []
    for key in ("msg", "reason"):
        if _text(res.get(key)):
            parts.append(_text(res[key]))
            break
    for key in ("stderr", "module_stderr", "stdout", "module_stdout"):
        extra = _text(res.get(key))
        if extra and not any(extra in p for p in parts):
            parts.append(extra)
            break
    if not parts:
        items = [r for r in res.get("results", []) if isinstance(r, dict) and r.get("failed")]
        parts.append("; ".join(failure_message(r) for r in items) if items else "no message")
    text = " ".join(": ".join(parts).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class EventCollector:
    """Collects failures and the play recap; forwards every event to ``forward``."""

    def __init__(self, forward: Callable[[Event], None] | None = None) -> None:
        self.forward = forward
        self.failures: list[TaskFailure] = []
        self.hosts: dict[str, HostSummary] = {}
        self.stats: dict[str, Any] = {}

    def __call__(self, event: Event) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            res = data.get("res") or {}
            self.failures.append(
                TaskFailure(
                    host=str(data.get("host", "?")),
                    task=str(data.get("task", "?")),
                    play=str(data.get("play", "")),
                    message=failure_message(res if isinstance(res, dict) else {"msg": str(res)}),
                    unreachable=kind == "runner_on_unreachable",
                )
            )
        elif kind == "playbook_on_stats":
            self.stats = {k: data.get(k) or {} for k in STAT_KEYS}
            names: set[str] = set()
            for key in STAT_KEYS:
                names.update((data.get(key) or {}).keys())
            for name in names:
                counts = {
                    attr: int((data.get(key) or {}).get(name, 0)) for key, attr in STAT_KEYS.items()
                }
                self.hosts[name] = HostSummary(host=name, **counts)
        if self.forward is not None:
            self.forward(event)
        return True

    def final_failures(self) -> list[TaskFailure]:
        """Failures that count: on hosts whose recap shows a failure or unreachability (a failure
        caught by a rescue block does not)."""
        if not self.hosts:
            return list(self.failures)
        bad = {n for n, h in self.hosts.items() if not h.successful}
        return [f for f in self.failures if f.host in bad]
