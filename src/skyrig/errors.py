"""The one error hierarchy of skyrig.

Every error says what is wrong, where (stack file and key path, or PVE node/vmid/UPID) and what to
do. The CLI prints ``str(error)`` and exits non-zero; tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

from dataclasses import dataclass


class SkyrigError(Exception):
    """Base class of every error skyrig raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  → {hint}")


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a stack file."""

    file: str
    line: int | None
    path: str
    message: str
    hint: str = ""

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = ": ".join(p for p in (where, self.path, self.message) if p)
        return f"{text}\n    fix: {self.hint}" if self.hint else text


class SkyrigConfigError(SkyrigError):
    """A stack file (or other configuration) is invalid. Carries every issue found at once."""

    exit_code = 2

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str, *, file: str = "") -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(file=file or "<config>", line=None, path="", message=issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues: list[ConfigIssue] = list(issues)
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in configuration"
        super().__init__(head + ":\n" + "\n".join("  " + i.render() for i in self.issues))


class ProxmoxError(SkyrigError):
    """A Proxmox VE API call failed. Carries the node, vmid, UPID and PVE's own message."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        vmid: int | None = None,
        upid: str | None = None,
        status: int | None = None,
        pve_message: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.node = node
        self.vmid = vmid
        self.upid = upid
        self.status = status
        self.pve_message = pve_message
        where = ", ".join(
            f"{k}={v}" for k, v in (("node", node), ("vmid", vmid), ("upid", upid)) if v is not None
        )
        super().__init__(f"{message} [{where}]" if where else message, hint=hint)


class ProxmoxTaskError(ProxmoxError):
    """A Proxmox task ended with an exit status other than OK / WARNINGS, or timed out."""

    def __init__(self, message: str, *, log_tail: list[str] | None = None, **kw: object) -> None:
        self.log_tail = log_tail or []
        super().__init__(message, **kw)  # type: ignore[arg-type]


class PreflightError(SkyrigError):
    """A fail-closed safety check refused to go on (IOMMU group, missing device, ...)."""

    def __init__(
        self,
        message: str,
        *,
        report: list[dict[str, object]] | None = None,
        hint: str | None = None,
    ) -> None:
        self.report = report or []
        super().__init__(message, hint=hint)


class OwnershipError(SkyrigError):
    """skyrig refused to touch an object the stack does not own."""


class AnsibleRunError(SkyrigError):
    """An Ansible run failed (task failure or unreachable host)."""


class WorkloadError(SkyrigError):
    """Submitting or running a workload failed."""


class RunInterrupted(SkyrigError):
    """A run was stopped by SIGINT/SIGTERM at a safe point (exit status 130)."""

    exit_code = 130


class RunLockError(SkyrigError):
    """Another skyrig command holds the stack's run lock (names the holder)."""
