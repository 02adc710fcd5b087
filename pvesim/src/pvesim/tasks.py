"""Tasks: UPIDs in PVE's exact format, worker threads, status, exit status and logs."""

from __future__ import annotations

import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pvesim.apierror import ApiError, TaskFailure
from pvesim.faults import FaultInjector
from pvesim.store import StateStore


class TaskHost(Protocol):
    """What the task manager needs of the simulator's backend (:class:`pvesim.backend.Backend`).

    Kept as a protocol so that this module does not import the backend that owns it.
    """

    store: StateStore
    faults: FaultInjector
    durations: dict[str, float]
    stopping: threading.Event

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` (s); False when the simulator is stopping."""
        ...

UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-F]{8}):([0-9A-F]{8,9}):"
    r"([0-9A-F]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)

#: Default task durations in seconds (short, so tests are fast but waiting is exercised).
DEFAULT_DURATIONS: dict[str, float] = {
    "qmcreate": 0.3, "qmclone": 0.5, "qmconfig": 0.05, "qmstart": 0.3, "qmstop": 0.2,
    "qmshutdown": 0.3, "qmreboot": 0.4, "qmdestroy": 0.2, "resize": 0.2, "qmtemplate": 0.3,
    "qmigrate": 0.5, "agent_boot": 0.3,
}
_ALIASES = {"create": "qmcreate", "clone": "qmclone", "config": "qmconfig", "start": "qmstart",
            "stop": "qmstop", "shutdown": "qmshutdown", "reboot": "qmreboot",
            "destroy": "qmdestroy", "delete": "qmdestroy", "template": "qmtemplate",
            "migrate": "qmigrate"}
MAX_FINISHED_TASKS = 2000


def normalise_durations(durations: dict[str, float] | None) -> dict[str, float]:
    out = dict(DEFAULT_DURATIONS)
    for key, value in (durations or {}).items():
        out[_ALIASES.get(key, key)] = float(value)
    return out


def upid_encode(node: str, pid: int, pstart: int, starttime: int, typ: str, tid: str,
                user: str) -> str:
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{typ}:{tid}:{user}:"


@dataclass(frozen=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str


def upid_decode(upid: str) -> Upid | None:
    m = UPID_RE.match(upid)
    if not m:
        return None
    return Upid(m.group(1), int(m.group(3), 16), int(m.group(4), 16), int(m.group(5), 16),
                m.group(6), m.group(7), m.group(8))


def is_error_status(status: str) -> bool:
    return not (status == "OK" or re.fullmatch(r"WARNINGS: \d+", status) is not None)


class TaskContext:
    """What a worker function gets: log lines and warnings go to the task log."""

    def __init__(self, manager: TaskManager, upid: str) -> None:
        self._manager = manager
        self.upid = upid
        self.warnings = 0

    def log(self, line: str) -> None:
        self._manager.append_log(self.upid, line)

    def warn(self, line: str) -> None:
        self.warnings += 1
        self.log(f"WARN: {line}")


Worker = Callable[[TaskContext], None]


class TaskManager:
    def __init__(self, backend: TaskHost) -> None:
        self.b = backend
        self._threads: set[threading.Thread] = set()
        self._tlock = threading.Lock()
        self.pstart = int(time.monotonic() * 100) & 0xFFFFFFF

    @property
    def _tasks(self) -> dict[str, dict[str, Any]]:
        tasks: dict[str, dict[str, Any]] = self.b.store.data.setdefault("tasks", {})
        return tasks

    def _next_pid(self) -> int:
        counters = self.b.store.data.setdefault("counters", {})
        counters["pid"] = counters.get("pid", os.getpid() * 7 % 900000 + 10000) + 1
        return int(counters["pid"])

    def duration(self, typ: str) -> float:
        return self.b.durations.get(typ, 0.1)

    def start(self, node: str, typ: str, tid: str, user: str, worker: Worker,
              *, before: Callable[[], None] | None = None,
              on_fail: Callable[[], None] | None = None,
              on_done: Callable[[], None] | None = None) -> str:
        """Register a task (before the UPID is returned), then run ``worker`` in a thread.

        ``before`` runs under the state lock right after registration (e.g. to set a config
        lock). ``on_done`` runs when the worker thread ends, whatever happened (e.g. to release a
        flock). ``on_fail`` runs under the state lock when the task fails (also by an injected
        fault), to undo what PVE's worker undoes (e.g. unlink a clone's placeholder config).
        The caller must ``commit()`` before answering.
        """
        with self.b.store.lock:
            now = int(time.time())
            upid = upid_encode(node, self._next_pid(), self.pstart, now, typ, tid, user)
            self._tasks[upid] = {
                "upid": upid, "node": node, "pid": int(upid.split(":")[2], 16),
                "pstart": self.pstart, "starttime": now, "type": typ, "id": tid, "user": user,
                "status": "running", "log": [],
            }
            if before is not None:
                before()
        fault = self.b.faults.task_fault(typ)
        thread = threading.Thread(target=self._run,
                                  args=(upid, typ, worker, fault, on_fail, on_done),
                                  name=f"pvesim-task-{typ}", daemon=True)
        with self._tlock:
            self._threads.add(thread)
        thread.start()
        return upid

    def append_log(self, upid: str, line: str) -> None:
        with self.b.store.lock:
            task = self._tasks.get(upid)
            if task is not None:
                task["log"].append(line)

    def _run(self, upid: str, typ: str, worker: Worker, fault: dict[str, Any] | None,
             on_fail: Callable[[], None] | None = None,
             on_done: Callable[[], None] | None = None) -> None:
        try:
            status = self._execute(upid, typ, worker, fault)
            if status is None or self.b.stopping.is_set():
                return  # the simulator stops: the task stays "running" until the next start
            if on_fail is not None and is_error_status(status):
                with self.b.store.lock:
                    try:
                        on_fail()
                    except Exception:  # cleanup is best effort, like PVE's
                        traceback.print_exc()
            self.finish(upid, status)
        finally:
            with self._tlock:
                self._threads.discard(threading.current_thread())
            if on_done is not None:
                on_done()

    def _execute(self, upid: str, typ: str, worker: Worker,
                 fault: dict[str, Any] | None) -> str | None:
        """Run the worker; return the exit status, or None if the simulator is stopping."""
        ctx = TaskContext(self, upid)
        try:
            if fault is not None:
                if not self.b.sleep(float(fault.get("after", 0.0))):
                    return None
                status = str(fault.get("exitstatus", "injected task failure"))
                if is_error_status(status):
                    raise TaskFailure(status)
                # A PVE task that ends in "WARNINGS: n" (or OK) has done its work: run the
                # worker, log the injected warnings, and let the normal cleanup happen.
                worker(ctx)
                m = re.fullmatch(r"WARNINGS: (\d+)", status)
                for i in range(max(0, int(m.group(1)) - ctx.warnings) if m else 0):
                    ctx.warn(f"injected warning {i + 1}")
                return f"WARNINGS: {ctx.warnings}" if ctx.warnings else "OK"
            if not self.b.sleep(self.duration(typ)):
                return None
            worker(ctx)
        except TaskFailure as exc:
            return exc.message.replace("\n", " ")
        except ApiError as exc:
            return exc.message.rstrip("\n").replace("\n", " ")
        except Exception as exc:  # a worker crash is a failed task, like PVE
            traceback.print_exc()
            return f"{exc}".replace("\n", " ") or exc.__class__.__name__
        return f"WARNINGS: {ctx.warnings}" if ctx.warnings else "OK"

    def finish(self, upid: str, status: str) -> None:
        with self.b.store.lock:
            task = self._tasks[upid]
            if status == "OK":
                task["log"].append("TASK OK")
            elif status.startswith("WARNINGS: "):
                task["log"].append(f"TASK {status}")
            else:
                task["log"].append(f"TASK ERROR: {status}")
            task["status"] = "stopped"
            task["exitstatus"] = status
            task["endtime"] = int(time.time())
            self._prune()
        self.b.store.commit()

    def _prune(self) -> None:
        tasks = self._tasks
        finished = [u for u, t in tasks.items() if t["status"] == "stopped"]
        for upid in finished[: max(0, len(finished) - MAX_FINISHED_TASKS)]:
            del tasks[upid]

    def fail_interrupted(self, reason: str) -> int:
        """Mark tasks left running by a previous process as failed (called at start-up)."""
        n = 0
        for task in self._tasks.values():
            if task["status"] == "running":
                task["log"].append(f"TASK ERROR: {reason}")
                task["status"] = "stopped"
                task["exitstatus"] = reason
                task["endtime"] = int(time.time())
                n += 1
        return n

    def running_threads(self) -> list[threading.Thread]:
        with self._tlock:
            return list(self._threads)

    def wait_all(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.running_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
