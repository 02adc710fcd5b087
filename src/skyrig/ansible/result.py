"""What an Ansible run produced: per-host counts, the failures, where the artifacts are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrig.errors import AnsibleRunError

STAT_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


@dataclass
class HostSummary:
    """The play recap of one host."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def successful(self) -> bool:
        return self.failed == 0 and self.unreachable == 0


@dataclass(frozen=True)
class TaskFailure:
    """One task that failed on one host (or found the host unreachable)."""

    host: str
    task: str
    message: str
    play: str = ""
    unreachable: bool = False

    def render(self) -> str:
        what = "UNREACHABLE" if self.unreachable else "FAILED"
        return f"{what}: host {self.host}, task '{self.task}': {self.message}"


@dataclass
class AnsibleRunResult:
    """The outcome of :func:`skyrig.ansible.run_playbook`."""

    playbook: str
    ident: str
    status: str
    rc: int
    artifact_dir: Path
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def successful(self) -> bool:
        return (
            self.status == "successful"
            and self.rc == 0
            and all(h.successful for h in self.hosts.values())
        )

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def summary_lines(self) -> list[str]:
        lines = [
            f"playbook {self.playbook}: {self.status} (rc {self.rc}), artifacts {self.artifact_dir}"
        ]
        for name in sorted(self.hosts):
            h = self.hosts[name]
            lines.append(
                f"  {name}: ok={h.ok} changed={h.changed} failed={h.failed} "
                f"unreachable={h.unreachable} skipped={h.skipped} rescued={h.rescued}"
            )
        lines.extend("  " + f.render() for f in self.failures)
        return lines

    def summary_text(self) -> str:
        return "\n".join(self.summary_lines())


class AnsibleRunFailed(AnsibleRunError):
    """An Ansible run failed; ``result`` holds the per-host summary and the failures."""

    def __init__(self, result: AnsibleRunResult) -> None:
        self.result = result
        if result.failures:
            head = "; ".join(f.render() for f in result.failures[:5])
            more = len(result.failures) - 5
            if more > 0:
                head += f"; and {more} more"
        else:
            head = f"ansible-runner ended with status {result.status} (rc {result.rc})"
        super().__init__(
            f"Ansible run of {result.playbook} failed: {head}",
            hint=(
                f"the full run is in {result.artifact_dir} (stdout, job_events/); fix the cause "
                "and run again (the roles are idempotent)"
            ),
        )
