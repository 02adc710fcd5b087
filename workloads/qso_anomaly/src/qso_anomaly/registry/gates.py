"""Release gates: thresholds from a YAML file, evaluated against a release's evidence.

The thresholds file (``release/thresholds.yaml``) holds one list of gates per risk tier
(GOVERN 1.3: the tier decides which gates are required; MAP 1.5: the tolerances are written
down). A gate reads one number from the evidence dict by a dotted path and compares it::

    tiers:
      ci:
        - {id: overall_auroc, metric: detection.overall.auroc, op: ">=", value: 0.6,
           rmf: [MEASURE 2.3]}

A missing or non-finite metric fails its gate: a gate that cannot be checked blocks promotion.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qso_anomaly.errors import QsoAnomalyError

OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}
THRESHOLDS_ENV = "QSO_ANOMALY_THRESHOLDS"


class ThresholdsError(QsoAnomalyError):
    """The thresholds file is missing or malformed."""


@dataclass(frozen=True)
class Gate:
    id: str
    metric: str
    op: str
    value: float | bool
    rmf: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class GateResult:
    id: str
    metric: str
    op: str
    threshold: float | bool
    observed: float | bool | None
    passed: bool
    rmf: tuple[str, ...]
    reason: str = ""


@dataclass(frozen=True)
class GateReport:
    tier: str
    thresholds_path: str
    results: tuple[GateResult, ...]
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", all(r.passed for r in self.results))

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "thresholds_path": self.thresholds_path,
            "passed": self.passed,
            "results": [asdict(r) for r in self.results],
        }


@dataclass(frozen=True)
class Thresholds:
    path: str
    benchmark: str
    default_tier: str
    tiers: Mapping[str, tuple[Gate, ...]]
    flag_quantile: float = 0.99

    def gates(self, tier: str | None = None) -> tuple[Gate, ...]:
        name = tier or self.default_tier
        if name not in self.tiers:
            raise ThresholdsError(
                f"{self.path}: risk tier {name!r} has no gates",
                hint=f"use one of {sorted(self.tiers)} or add a 'tiers.{name}' list")
        return self.tiers[name]


def default_thresholds_path() -> Path:
    """$QSO_ANOMALY_THRESHOLDS, else ``release/thresholds.yaml`` of the workload source tree."""
    env = os.environ.get(THRESHOLDS_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "release" / "thresholds.yaml"
        if candidate.is_file():
            return candidate
    cwd = Path.cwd() / "release" / "thresholds.yaml"
    return cwd


def load_thresholds(path: str | os.PathLike[str] | None = None) -> Thresholds:
    """Parse and validate a thresholds file."""
    p = Path(path) if path is not None else default_thresholds_path()
    if not p.is_file():
        raise ThresholdsError(
            f"thresholds file {p} not found",
            hint=f"pass --thresholds PATH or set {THRESHOLDS_ENV}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ThresholdsError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("tiers"), dict) or not raw["tiers"]:
        raise ThresholdsError(f"{p}: expected a mapping with a non-empty 'tiers' mapping",
                              hint="see workloads/qso_anomaly/release/thresholds.yaml")
    tiers: dict[str, tuple[Gate, ...]] = {}
    for tier, gates in raw["tiers"].items():
        if not isinstance(gates, list) or not gates:
            raise ThresholdsError(f"{p}: tiers.{tier} must be a non-empty list of gates")
        parsed = []
        seen: set[str] = set()
        for i, g in enumerate(gates):
            where = f"{p}: tiers.{tier}[{i}]"
            if not isinstance(g, dict):
                raise ThresholdsError(f"{where}: a gate must be a mapping")
            missing = {"id", "metric", "op", "value"} - set(g)
            if missing:
                raise ThresholdsError(f"{where}: missing keys {sorted(missing)}")
            if g["op"] not in OPS:
                raise ThresholdsError(f"{where}: op {g['op']!r} is not one of {sorted(OPS)}")
            if not isinstance(g["value"], (int, float, bool)):
                raise ThresholdsError(f"{where}: value must be a number or a boolean")
            if g["id"] in seen:
                raise ThresholdsError(f"{where}: duplicate gate id {g['id']!r}")
            seen.add(g["id"])
            parsed.append(Gate(id=str(g["id"]), metric=str(g["metric"]), op=str(g["op"]),
                               value=g["value"], rmf=tuple(g.get("rmf", ())),
                               description=str(g.get("description", ""))))
        tiers[str(tier)] = tuple(parsed)
    default = str(raw.get("default_tier", next(iter(tiers))))
    if default not in tiers:
        raise ThresholdsError(f"{p}: default_tier {default!r} is not one of {sorted(tiers)}")
    return Thresholds(path=str(p), benchmark=str(raw.get("benchmark", "qso-inject-v1")),
                      default_tier=default, tiers=tiers,
                      flag_quantile=float(raw.get("flag_quantile", 0.99)))


def lookup(evidence: Mapping[str, Any], dotted: str) -> Any:
    """``evidence["a"]["b"]["c"]`` for ``"a.b.c"``; None when any key is missing."""
    node: Any = evidence
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def evaluate_gates(thresholds: Thresholds, evidence: Mapping[str, Any],
                   tier: str | None = None) -> GateReport:
    """Check every gate of ``tier`` against ``evidence``."""
    name = tier or thresholds.default_tier
    results = []
    for gate in thresholds.gates(name):
        observed = lookup(evidence, gate.metric)
        reason = ""
        if observed is None:
            passed, reason = False, "metric missing from the evidence"
        elif isinstance(gate.value, bool) or isinstance(observed, bool):
            passed = OPS[gate.op](bool(observed), bool(gate.value))
        elif not isinstance(observed, (int, float)) or not math.isfinite(float(observed)):
            passed, reason = False, f"metric is not a finite number ({observed!r})"
        else:
            passed = bool(OPS[gate.op](float(observed), float(gate.value)))
        if not passed and not reason:
            reason = f"{observed} {gate.op} {gate.value} is false"
        obs: float | bool | None
        if observed is None or isinstance(observed, bool):
            obs = observed
        elif isinstance(observed, (int, float)):
            obs = float(observed)
        else:
            obs = None
        results.append(GateResult(id=gate.id, metric=gate.metric, op=gate.op,
                                  threshold=gate.value, observed=obs, passed=bool(passed),
                                  rmf=gate.rmf, reason=reason))
    return GateReport(tier=name, thresholds_path=thresholds.path, results=tuple(results))
