"""One skyrig command per stack at a time, and interrupts that stop at a safe point.

**Run lock.** ``up`` and ``down`` hold ``<state_dir>/run.lock`` while they run. The file is
created atomically (written aside, then ``os.link``-ed into place, which fails if it exists) and
holds JSON ``{pid, host, start_ticks, command, since}``. A second command refuses at once, or
waits up to ``wait_s`` seconds, with a message naming the holder. The lock is removed on normal
exit, on error and on interrupt; after a crash (SIGKILL, power loss) the next command finds it
stale — same host and the PID is gone, or the PID now belongs to another process (its start time
in ``/proc/PID/stat`` differs) — and takes it over. A lock from another host is never
taken over automatically (its PID cannot be checked from here): the message says which host
holds it and how to remove it. The check-and-take runs under ``flock`` on
``run.lock.guard`` so two commands never both take over one stale lock.

**Interrupts.** :func:`install_signal_handlers` makes SIGTERM raise :class:`KeyboardInterrupt`
like SIGINT does. :func:`guarded_run` catches it between and inside layers, writes the
interrupted summary atomically, says which layers were done and which were left (and whether a
Proxmox task or Ray job may still be running), and raises
:class:`~skyrig.errors.RunInterrupted` (exit status 130). State files are written with
:func:`write_atomic` (temp file + fsync + rename), so an interrupt never leaves half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrig.errors import RunInterrupted, RunLockError
from skyrig.fsutil import private_dir, write_atomic

LOCK_NAME = "run.lock"


# --------------------------------------------------------------------------------- signals


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM behaves like SIGINT (raises KeyboardInterrupt in the main thread)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while a short critical section runs; deliver them after."""
    pending: list[int] = []

    def _hold(signum: int, _frame: object) -> None:
        pending.append(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, _hold)
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            raise KeyboardInterrupt(signal.Signals(pending[0]).name)


# ------------------------------------------------------------------------------------ lock


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(raw[raw.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a run lock."""

    pid: int
    host: str
    command: str
    since: float
    start_ticks: int | None = None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"`{self.command}` (pid {self.pid} on {self.host}, since {when})"

    def stale(self) -> bool:
        """True when this host's holder process is gone (or its PID was reused)."""
        if self.host != socket.gethostname():
            return False
        if not _pid_alive(self.pid):
            return True
        ticks = _start_ticks(self.pid)
        return self.start_ticks is not None and ticks is not None and ticks != self.start_ticks


def read_holder(lock: Path) -> Holder | None:
    """The holder recorded in ``lock``; None if absent. An unreadable file counts as stale."""
    try:
        raw = json.loads(lock.read_text())
        return Holder(int(raw["pid"]), str(raw["host"]), str(raw["command"]),
                      float(raw["since"]), raw.get("start_ticks"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Holder(0, socket.gethostname(), "unknown (unreadable lock file)", 0.0)


@contextlib.contextmanager
def _guard(state_dir: Path) -> Iterator[None]:
    with open(state_dir / f"{LOCK_NAME}.guard", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _try_take(state_dir: Path, command: str) -> Holder | None:
    """Take the lock (returns None) or return the live holder."""
    lock = state_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "since": time.time(), "start_ticks": _start_ticks(os.getpid())}
    with _guard(state_dir):
        holder = read_holder(lock)
        if holder is not None:
            if not holder.stale():
                return holder
            lock.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".run.lock.", dir=state_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, lock)
        finally:
            os.unlink(tmp)
    return None


@contextlib.contextmanager
def run_lock(state_dir: Path, command: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the stack's run lock while the block runs.

    Raises :class:`~skyrig.errors.RunLockError` naming the holder when another live command
    holds it after ``wait_s`` seconds (0: refuse at once).
    """
    private_dir(state_dir)
    deadline = time.monotonic() + wait_s
    while True:
        holder = _try_take(state_dir, command)
        if holder is None:
            break
        if time.monotonic() >= deadline:
            hint = (f"wait for it to finish, or stop it (kill -INT {holder.pid})"
                    if holder.host == socket.gethostname() else
                    f"it runs on another host; if it is certainly gone, remove"
                    f" {state_dir / LOCK_NAME}")
            raise RunLockError(f"stack state {state_dir} is in use by {holder.describe()}",
                               hint=hint)
        time.sleep(0.5)
    try:
        yield
    finally:
        lock = state_dir / LOCK_NAME
        held = read_holder(lock)
        if held is not None and held.pid == os.getpid() and held.host == socket.gethostname():
            lock.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ interrupts

#: What may keep running after an interrupt inside each layer, and how to see or stop it.
STILL_RUNNING = {
    "infra": "Proxmox tasks already started (clone, start, ...) are not cancelled by PVE and may"
             " still be running; `skyrig up` again waits for them and reconciles",
    "platform": "a Ray head that was starting is stopped; a running head is left as it was",
    "workload": "the Ray job was stopped if this run submitted it; a job it only followed"
                " keeps running (the lines above say which, and how to stop it)",
}


@dataclass
class Guard:
    """Tracks the layer in progress so an interrupt can say what was done and what was left."""

    command: str
    layers: list[str]
    current: str | None = None
    done: list[str] = field(default_factory=list)

    def begin(self, name: str) -> None:
        self.current = name

    def end(self, name: str) -> None:
        self.done.append(name)
        self.current = None


@contextlib.contextmanager
def guarded_run(state_dir: Path, command: str, layers: list[str], *, console: Any,
                summary: dict[str, Any] | None = None, wait_s: float = 0.0) -> Iterator[Guard]:
    """Run lock + interrupt handling around the layers of one ``up``/``down``.

    On SIGINT/SIGTERM: prints the layers done, the one interrupted and those left, saves
    ``summary`` (if given) atomically to ``last-up.json`` with ``interrupted`` filled in, and
    raises :class:`~skyrig.errors.RunInterrupted` (exit 130). The lock is released either way.
    """
    guard = Guard(command, list(layers))
    with run_lock(state_dir, command, wait_s=wait_s):
        try:
            yield guard
        except KeyboardInterrupt as exc:
            how = str(exc) or "SIGINT"
            left = [n for n in guard.layers if n not in guard.done and n != guard.current]
            info = {"signal": how, "done": guard.done, "interrupted": guard.current,
                    "left": left,
                    "still_running": STILL_RUNNING.get(guard.current or "", "nothing")}
            with deferred_signals():
                if summary is not None:
                    summary["interrupted"] = info
                    write_atomic(state_dir / "last-up.json",
                                 json.dumps(summary, indent=2, default=str) + "\n")
                console.print(f"[bold yellow]{command}: interrupted by {how}[/]")
                console.print(f"  done: {', '.join(guard.done) or 'nothing'}")
                console.print(f"  interrupted: {guard.current or '-'}")
                console.print(f"  left: {', '.join(left) or 'nothing'}")
                console.print(f"  still running: {info['still_running']}")
            remaining = ([guard.current] if guard.current else []) + left
            raise RunInterrupted(
                f"{command} interrupted by {how} during {guard.current or 'setup'}"
                f" (done: {', '.join(guard.done) or 'nothing'};"
                f" left: {', '.join(remaining) or 'nothing'})",
                hint=f"re-run `{command}` to finish; it resumes from the current state",
            ) from None
