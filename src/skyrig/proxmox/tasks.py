"""Waiting for PVE tasks (UPIDs) correctly.

Unlike ``proxmoxer.tools.Tasks.blocking_status`` this waiter

* polls with backoff (fast at first, capped), and never sleeps after the final poll;
* tolerates ``400 no such task`` for a grace period right after dispatch;
* treats ``OK`` as success and ``WARNINGS: n`` as success with the warning lines logged;
* raises :class:`ProxmoxTaskError` with the tail of the task log for any other exit status;
* raises on timeout (it never returns ``None``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from skyrig.errors import ProxmoxError, ProxmoxTaskError

log = logging.getLogger(__name__)

UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9\-.]*[a-zA-Z0-9])?):(?P<pid>[0-9A-F]{8}):"
    r"(?P<pstart>[0-9A-F]{8,9}):(?P<start>[0-9A-F]{8}):(?P<type>[^:\s/]+):(?P<id>[^:\s/]*):"
    r"(?P<user>[^:\s/]+):$"
)
WARNINGS_RE = re.compile(r"^WARNINGS: (\d+)$")


class _Api(Protocol):
    def get(self, path: str, **params: Any) -> Any: ...


@dataclass(frozen=True)
class Upid:
    """A parsed PVE task id.

    Format (PVE ``PVE::Tools::upid_decode``):
    ``UPID:<node>:<pid hex8>:<pstart hex8-9>:<starttime hex8>:<type>:<id>:<user>:``.

    Attributes:
        node: Node the task runs on (its status is read from ``/nodes/{node}/tasks/{upid}``).
        type: Task type, e.g. ``qmclone``, ``qmstart``, ``qmdestroy``.
        id: Object id, usually the VMID as text (may be empty).
        user: User that started the task, e.g. ``skyrig@pve!provision``.
    """
    node: str
    type: str
    id: str
    user: str

    @classmethod
    def parse(cls, upid: str) -> Upid:
        """Parse a UPID string.

        Args:
            upid: The task id as PVE returned it from a task-starting call.

        Returns:
            Its node, type, id and user.

        Raises:
            ProxmoxError: ``upid`` is not a well-formed UPID.
        """
        m = UPID_RE.match(upid)
        if not m:
            raise ProxmoxError(f"not a PVE task id (UPID): {upid!r}", upid=upid)
        return cls(node=m["node"], type=m["type"], id=m["id"], user=m["user"])


@dataclass(frozen=True)
class TaskResult:
    """How a PVE task ended (only successful ends; failures raise).

    Attributes:
        upid: The task id.
        exitstatus: ``OK`` or ``WARNINGS: n`` as PVE reports it.
        warnings: Log lines starting with ``WARN`` (or the exit status itself) when it warned.
        elapsed_s: Seconds from the first poll to seeing the task stopped.
    """
    upid: str
    exitstatus: str
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class WaitPolicy:
    """How :func:`wait_for_task` polls.

    Attributes:
        timeout_s: Give up after this many seconds (stack key ``proxmox.task_timeout_s``).
        first_poll_s: First sleep between polls, in seconds.
        max_poll_s: Cap on the sleep between polls, in seconds.
        factor: Multiplier applied to the sleep after each poll.
        not_found_grace_s: Seconds after dispatch during which ``400 no such task`` is tolerated
            (a task may not be visible on the node yet).
    """
    timeout_s: float = 900.0
    first_poll_s: float = 0.05
    max_poll_s: float = 1.0
    factor: float = 1.5
    not_found_grace_s: float = 10.0


def _log_lines(client: _Api, node: str, upid: str, limit: int = 50) -> list[str]:
    """The last ``limit`` lines of a task's log (best effort)."""
    try:
        first = client.get(f"nodes/{node}/tasks/{upid}/log", start=0, limit=limit)
        lines = [str(e.get("t", "")) for e in first or [] if isinstance(e, dict)]
        if len(lines) >= limit:  # long log: fetch its tail instead
            total = client.get(f"nodes/{node}/tasks/{upid}/log", start=0, limit=1000)
            lines = [str(e.get("t", "")) for e in total or [] if isinstance(e, dict)]
        return lines[-limit:]
    except ProxmoxError:
        return []


def wait_for_task(client: _Api, upid: str, *, policy: WaitPolicy | None = None,
                  vmid: int | None = None, what: str = "",
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> TaskResult:
    """Poll a task until it stops and return how it ended.

    Reads ``GET /nodes/{node}/tasks/{upid}/status`` (PVE API) with backoff per ``policy``; never
    sleeps past the deadline. ``OK`` is success; ``WARNINGS: n`` is success with the ``WARN`` lines
    of ``GET /nodes/{node}/tasks/{upid}/log`` logged and returned; any other exit status fails.

    Args:
        client: Anything with PVE-style ``get(path, **params)``, normally a :class:`PveClient`.
        upid: The task id returned by the call that started the task.
        policy: Timeouts and poll intervals (default :class:`WaitPolicy`).
        vmid: VMID, only to label errors.
        what: Human label for logs and errors (default ``"<type> <id>"`` from the UPID).
        clock: Monotonic clock in seconds (injected by tests).
        sleep: Sleep function in seconds (injected by tests).

    Returns:
        The task's exit status, warnings and elapsed seconds.

    Raises:
        ProxmoxError: ``upid`` is malformed, or the status call failed (other than ``no such task``
            within the grace period).
        ProxmoxTaskError: The task stopped with another exit status (the last 20 log lines are in
            ``log_tail``), or it did not stop within ``policy.timeout_s``.
    """
    policy = policy or WaitPolicy()
    parsed = Upid.parse(upid)
    node = parsed.node
    label = what or f"{parsed.type} {parsed.id}".strip()
    start = clock()
    deadline = start + policy.timeout_s
    delay = policy.first_poll_s
    while True:
        try:
            status = client.get(f"nodes/{node}/tasks/{upid}/status")
        except ProxmoxError as exc:
            not_yet = exc.status == 400 and "no such task" in (exc.pve_message or "")
            if not (not_yet and clock() - start < policy.not_found_grace_s):
                raise
            status = None
        if isinstance(status, dict) and status.get("status") == "stopped":
            exitstatus = str(status.get("exitstatus", "unexpected status"))
            elapsed = clock() - start
            if exitstatus == "OK":
                return TaskResult(upid, exitstatus, [], elapsed)
            if WARNINGS_RE.match(exitstatus):
                lines = _log_lines(client, node, upid)
                warns = [ln for ln in lines if ln.startswith("WARN")] or [exitstatus]
                for ln in warns:
                    log.warning("%s on %s: %s", label, node, ln)
                return TaskResult(upid, exitstatus, warns, elapsed)
            tail = _log_lines(client, node, upid, limit=20)
            raise ProxmoxTaskError(
                f"task {label} failed: {exitstatus}", log_tail=tail, node=node, vmid=vmid,
                upid=upid, pve_message=exitstatus,
                hint="the task log tail is attached; fix the cause and re-run (re-runs converge)",
            )
        now = clock()
        if now >= deadline:
            raise ProxmoxTaskError(
                f"task {label} did not finish within {policy.timeout_s:g}s",
                log_tail=_log_lines(client, node, upid, limit=20), node=node, vmid=vmid,
                upid=upid, pve_message="timeout",
                hint="raise skyrig:proxmox.task_timeout_s or look at the task on the node",
            )
        sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * policy.factor, policy.max_poll_s)
