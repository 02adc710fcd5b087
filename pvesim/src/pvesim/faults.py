"""Fault injection: per-endpoint errors, latency, dropped connections, lock contention and
failing tasks. Deterministic for a given seed and request order.

Faults file / ``PveSim.set_faults`` shape (YAML or JSON)::

    seed: 7                       # optional; defaults to the simulator's seed
    requests:
      - method: POST              # optional; any method when absent
        path: /nodes/{node}/qemu/{vmid}/clone   # schema template or a glob on the real path
        rate: 0.5                 # chance that the rule fires (default 1.0)
        times: 2                  # fire at most this many times (default: no limit)
        latency: 0.2              # seconds added before answering (when the rule fires)
        status: 500               # answer this error ...
        message: "got no worker upid - start worker failed"
        drop: true                # ... or close the connection without an answer
        lock_timeout: true        # ... or PVE's flock timeout for the VM in the path
    tasks:
      - type: qmclone             # task type (qmclone, qmstart, ...)
        exitstatus: "clone failed: injected"
        after: 1.0                # seconds before the task fails
        rate: 1.0
        times: 1
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pvesim.apierror import ApiError, PveSimError


@dataclass
class RequestFault:
    latency: float = 0.0
    error: ApiError | None = None
    drop: bool = False


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._default_seed = seed
        self._requests: list[dict[str, Any]] = []
        self._tasks: list[dict[str, Any]] = []
        self._counters: dict[tuple[str, int], int] = {}
        self._fired: dict[tuple[str, int], int] = {}

    def configure(self, spec: dict[str, Any] | None) -> None:
        spec = spec or {}
        unknown = set(spec) - {"seed", "requests", "tasks"}
        if unknown:
            raise PveSimError(f"unknown fault keys {sorted(unknown)}",
                              hint="use 'seed', 'requests' and 'tasks' (see pvesim.faults)",
                              exit_code=2)
        with self._lock:
            self._seed = int(spec.get("seed", self._default_seed))
            self._requests = [dict(r) for r in spec.get("requests") or []]
            self._tasks = [dict(t) for t in spec.get("tasks") or []]
            self._counters.clear()
            self._fired.clear()

    def load_file(self, path: Path) -> None:
        try:
            spec = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PveSimError(f"cannot read faults file {path}: {exc}", exit_code=2) from exc
        self.configure(spec)

    def spec(self) -> dict[str, Any]:
        with self._lock:
            return {"seed": self._seed, "requests": list(self._requests),
                    "tasks": list(self._tasks)}

    def _fires(self, kind: str, idx: int, rule: dict[str, Any]) -> bool:
        key = (kind, idx)
        n = self._counters.get(key, 0)
        self._counters[key] = n + 1
        times = rule.get("times")
        if times is not None and self._fired.get(key, 0) >= int(times):
            return False
        rate = float(rule.get("rate", 1.0))
        if rate < 1.0 and random.Random(f"{self._seed}:{kind}:{idx}:{n}").random() >= rate:
            return False
        self._fired[key] = self._fired.get(key, 0) + 1
        return True

    def request_fault(self, method: str, template: str | None, path: str,
                      params: dict[str, str]) -> RequestFault | None:
        with self._lock:
            for idx, rule in enumerate(self._requests):
                if rule.get("method") and str(rule["method"]).upper() != method:
                    continue
                pat = rule.get("path")
                if pat and pat != template and not fnmatch.fnmatchcase(path, str(pat)):
                    continue
                if not self._fires("req", idx, rule):
                    continue
                fault = RequestFault(latency=float(rule.get("latency", 0.0)))
                if rule.get("drop"):
                    fault.drop = True
                elif rule.get("lock_timeout"):
                    vmid = params.get("vmid", "0")
                    fault.error = ApiError(
                        500, f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - "
                             "got timeout")
                elif rule.get("status"):
                    fault.error = ApiError(int(rule["status"]),
                                           str(rule.get("message", "injected fault")),
                                           rule.get("errors"))
                return fault
        return None

    def task_fault(self, typ: str) -> dict[str, Any] | None:
        with self._lock:
            for idx, rule in enumerate(self._tasks):
                if rule.get("type") and rule["type"] != typ:
                    continue
                if self._fires("task", idx, rule):
                    return rule
        return None
