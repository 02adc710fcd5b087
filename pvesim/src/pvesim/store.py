"""The simulator's state: one JSON file, written atomically with group commit.

Every change is made under ``StateStore.lock`` and then made durable with ``commit()`` before the
client gets its answer: the state is serialised, written to a temporary file, fsync'ed and
``os.replace``d over the state file (then the directory is fsync'ed). Concurrent committers share
one write (group commit), so a crash never loses an acknowledged change and never leaves a torn
file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvesim.apierror import PveSimError

STATE_FORMAT = 1
BUSY_WINDOW = 0.05
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateStore:
    """The state dict plus its lock and durable commit."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._writing = False
        self.writes = 0
        #: bumped by every commit(): readers may cache answers per generation
        self.generation = 0
        #: under load (a write within the last BUSY_WINDOW s) the leader waits this long
        #: before serialising, so that more concurrent changes share one write
        self.batch_window = 0.005
        self._last_write = 0.0
        self._task_json: dict[str, tuple[dict[str, Any], str]] = {}

    def load(self, init: Callable[[], dict[str, Any]]) -> bool:
        """Load the state file, or create it with ``init()``. Returns True if it existed."""
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise PveSimError(
                    f"cannot read pvesim state file {self.path}: {exc}",
                    hint="fix or remove the file (`skyrig pvesim reset --state FILE`)",
                ) from exc
            if self.data.get("format") != STATE_FORMAT:
                raise PveSimError(
                    f"pvesim state file {self.path} has format {self.data.get('format')!r}, "
                    f"expected {STATE_FORMAT}",
                    hint="reset it with `skyrig pvesim reset --state FILE`",
                )
            return True
        self.data = init()
        self.data["format"] = STATE_FORMAT
        self.commit()
        return False

    def _serialise(self) -> str:
        """The state as JSON. Finished tasks never change, so their JSON is cached."""
        enc = _ENCODER.encode
        with self.lock:
            parts = []
            for key, value in self.data.items():
                if key != "tasks":
                    parts.append(f"{enc(key)}:{enc(value)}")
                    continue
                items = []
                seen = set()
                for upid, task in value.items():
                    if task.get("status") == "stopped":
                        cached = self._task_json.get(upid)
                        if cached is None or cached[0] is not task:
                            cached = (task, enc(task))
                            self._task_json[upid] = cached
                        items.append(f"{enc(upid)}:{cached[1]}")
                        seen.add(upid)
                    else:
                        items.append(f"{enc(upid)}:{enc(task)}")
                for gone in set(self._task_json) - seen:
                    del self._task_json[gone]
                parts.append('"tasks":{' + ",".join(items) + "}")
            return "{" + ",".join(parts) + "}"

    def commit(self) -> None:
        """Make every change made so far durable (shares the write with concurrent callers)."""
        with self._cond:
            self.generation += 1
            self._requested += 1
            mine = self._requested
            while self._done < mine:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                self._cond.release()
                ok = False
                try:
                    if time.monotonic() - self._last_write < BUSY_WINDOW:
                        time.sleep(self.batch_window)
                    with self._cond:
                        target = self._requested
                    text = self._serialise()
                    write_atomic(self.path, text)
                    ok = True
                finally:
                    self._cond.acquire()
                    self._writing = False
                    if ok:
                        self._done = max(self._done, target)
                        self.writes += 1
                        self._last_write = time.monotonic()
                    self._cond.notify_all()
