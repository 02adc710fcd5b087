"""`skyrig governance check`: is the evidence the AI RMF catalogue asks for there and current?

For the model version the stack pins (``skyrig:workload.model_alias`` resolved in the stack's
MLflow registry, or an explicit version), every catalogue item (``catalogue.yaml``) is checked
and gets one status:

* ``satisfied`` – the evidence exists and passes its checks;
* ``missing`` – the file / tag / runbook does not exist, or a required field is empty;
* ``failed`` – the evidence exists but says no (``decision: no-go``, automated approver);
* ``stale`` – the evidence was written for another model version, or before the version was
  registered, or longer ago than ``max_age_days``.

A required item that is not ``satisfied`` makes the result fail (exit 1; the prod gate refuses).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skyrig.config import Stack
from skyrig.errors import SkyrigConfigError, SkyrigError
from skyrig.governance.approver import approver_problem
from skyrig.governance.registry import Registry, Version
from skyrig.runbooks.execute import DEFAULT_MODEL_NAME, tracking_uri

SOURCES = ("release_file", "version_tag", "runbook", "alerts")
STATUSES = ("satisfied", "missing", "failed", "stale")


class GovernanceError(SkyrigError):
    """Release evidence is missing, failed or stale for a version about to be deployed."""


@dataclass(frozen=True)
class Item:
    """One catalogue entry: AI RMF subcategory, intent, whether required, the evidence spec."""

    id: str
    intent: str
    required: bool
    evidence: dict[str, Any]

    @property
    def expected(self) -> str:
        """What a reviewer should look for (file, tag or runbooks)."""
        e = self.evidence
        src = e["source"]
        if src == "release_file":
            return f"release/{e['file']}"
        if src == "version_tag":
            return f"model-version tag {e['tag']}"
        if src == "runbook":
            return ", ".join(f"runbooks/{r}.md" for r in e["runbooks"])
        return "runbooks for " + ", ".join(e["alerts"])


@dataclass(frozen=True)
class Catalogue:
    framework: str
    max_age_days: float
    items: tuple[Item, ...]
    path: str


@dataclass
class ItemResult:
    id: str
    intent: str
    required: bool
    expected: str
    status: str
    detail: str = ""


@dataclass
class CheckResult:
    """The outcome for one model version; ``ok`` when every required item is satisfied."""

    stack: str
    model: str
    alias: str
    version: str
    run_id: str
    checked_at: str
    catalogue: str
    items: list[ItemResult] = field(default_factory=list)

    @property
    def blocking(self) -> list[ItemResult]:
        return [i for i in self.items if i.required and i.status != "satisfied"]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["blocking"] = [i.id for i in self.blocking]
        return d


def default_catalogue_path() -> Path:
    return Path(str(resources.files("skyrig.governance") / "catalogue.yaml"))


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Parse and validate the catalogue; raises :class:`SkyrigConfigError` naming the item."""
    p = Path(path) if path else default_catalogue_path()
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SkyrigConfigError(f"cannot read the governance catalogue: {exc}", file=str(p)
                                ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise SkyrigConfigError("the catalogue needs a list `items`", file=str(p))
    items = []
    seen: set[str] = set()
    for n, it in enumerate(raw["items"]):
        where = f"items[{n}]"
        if not isinstance(it, dict) or not {"id", "intent", "required", "evidence"} <= set(it):
            raise SkyrigConfigError(f"{where}: needs id, intent, required, evidence", file=str(p))
        ev = it["evidence"]
        if not isinstance(ev, dict) or ev.get("source") not in SOURCES:
            raise SkyrigConfigError(f"{where} ({it['id']}): evidence.source must be one of"
                                    f" {', '.join(SOURCES)}", file=str(p))
        needs = {"release_file": "file", "version_tag": "tag", "runbook": "runbooks",
                 "alerts": "alerts"}[ev["source"]]
        if needs not in ev:
            raise SkyrigConfigError(f"{where} ({it['id']}): evidence needs `{needs}`",
                                    file=str(p))
        if it["id"] in seen:
            raise SkyrigConfigError(f"{where}: duplicate id {it['id']}", file=str(p))
        seen.add(it["id"])
        items.append(Item(id=str(it["id"]), intent=" ".join(str(it["intent"]).split()),
                          required=bool(it["required"]), evidence=dict(ev)))
    return Catalogue(framework=str(raw.get("framework", "NIST-AI-RMF-1.0")),
                     max_age_days=float(raw.get("max_age_days", 365)), items=tuple(items),
                     path=str(p))


def _lookup(doc: Any, dotted: str) -> Any:
    node = doc
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict | tuple) and len(value) == 0)


def _parse_time(value: Any) -> float | None:
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


class _Evidence:
    """Lazily downloads the version's release files (once each)."""

    def __init__(self, reg: Registry, v: Version, tmp: Path) -> None:
        self.reg, self.v, self.tmp = reg, v, tmp
        self.listing = reg.list_artifacts(v, "release")
        self._docs: dict[str, Any] = {}

    def present(self, name: str) -> bool:
        return name in self.listing

    def doc(self, name: str) -> Any:
        if name not in self._docs:
            got = self.reg.download(self.v, f"release/{name}", self.tmp / name.replace("/", "_"))
            text = got.read_text() if got and got.is_file() else None
            try:
                self._docs[name] = (json.loads(text) if name.endswith(".json") else text
                                    ) if text is not None else None
            except ValueError:
                self._docs[name] = ValueError(f"release/{name} is not valid JSON")
        return self._docs[name]


def _check_release_file(item: Item, ev: _Evidence, v: Version, max_age_days: float,
                        now: float) -> tuple[str, str]:
    e = item.evidence
    name = e["file"]
    if not ev.present(name):
        return "missing", f"release/{name} is not logged with version {v.version}"
    doc = ev.doc(name)
    if isinstance(doc, ValueError):
        return "failed", str(doc)
    if not name.endswith(".json"):
        return ("satisfied", f"release/{name} ({ev.listing[name]} bytes)") if doc else (
            "missing", f"release/{name} is empty")
    empty = [k for k in e.get("nonempty", []) if _empty(_lookup(doc, k))]
    if empty:
        return "missing", f"release/{name}: empty or absent: {', '.join(empty)}"
    vf = e.get("version_field")
    if vf is not None:
        got = _lookup(doc, vf)
        if got is None:
            return "missing", f"release/{name}: no {vf} (which version is this evidence for?)"
        if str(got) != v.version:
            return "stale", f"release/{name} was written for version {got}, not {v.version}"
    tf = e.get("time_field")
    if tf is not None:
        t = _parse_time(_lookup(doc, tf))
        if t is None:
            return "missing", f"release/{name}: {tf} is not an ISO-8601 time"
        if t < v.created_s - 1.0:
            return "stale", (f"release/{name}: {tf} {_lookup(doc, tf)} is older than the version"
                             f" ({dt.datetime.fromtimestamp(v.created_s, dt.UTC):%Y-%m-%d %H:%M})")
        if now - t > max_age_days * 86400:
            return "stale", f"release/{name}: {tf} is more than {max_age_days:g} days old"
    for k, want in (e.get("equals") or {}).items():
        got = _lookup(doc, k)
        if got != want:
            return "failed", f"release/{name}: {k} is {got!r}, must be {want!r}"
    for k, bad in (e.get("not_in") or {}).items():
        got = _lookup(doc, k)
        if got in bad:
            return "failed", f"release/{name}: {k} is {got!r} (not a human reviewer)"
    for k in e.get("person") or []:
        got = _lookup(doc, k)
        problem = approver_problem(str(got))
        if problem is not None:
            return "failed", (f"release/{name}: {k} is {got!r} (not a human reviewer:"
                              f" {problem[0]})")
    return "satisfied", f"release/{name}"


def check_version(stack: Stack, reg: Registry, v: Version, alias: str,
                  catalogue: Catalogue | None = None, now: float | None = None) -> CheckResult:
    """Check every catalogue item for one version; pure reads of registry and repository."""
    from skyrig.runbooks.parse import load_runbooks, parse_runbook

    cat = catalogue or load_catalogue()
    now = now if now is not None else dt.datetime.now(dt.UTC).timestamp()
    res = CheckResult(stack=stack.name, model=reg.name, alias=alias, version=v.version,
                      run_id=v.run_id, catalogue=cat.path,
                      checked_at=dt.datetime.fromtimestamp(now, dt.UTC).isoformat(
                          timespec="seconds"))
    books_dir = stack.root / "runbooks"
    with tempfile.TemporaryDirectory(prefix="skyrig-gov-") as tmp:
        ev = _Evidence(reg, v, Path(tmp))
        for item in cat.items:
            e = item.evidence
            src = e["source"]
            if src == "release_file":
                status, detail = _check_release_file(item, ev, v, cat.max_age_days, now)
            elif src == "version_tag":
                val = v.tags.get(e["tag"])
                status, detail = (("satisfied", f"{e['tag']}={val}") if val else
                                  ("missing", f"version {v.version} has no tag {e['tag']}"))
            elif src == "runbook":
                bad = []
                for rid in e["runbooks"]:
                    f = books_dir / f"{rid}.md"
                    try:
                        parse_runbook(f)
                    except SkyrigError as exc:
                        bad.append(f"runbooks/{rid}.md ({exc.message.splitlines()[-1].strip()})")
                status, detail = (("missing", "; ".join(bad)) if bad else
                                  ("satisfied", ", ".join(e["runbooks"])))
            else:
                status, detail = _check_alerts(stack, e, books_dir, load_runbooks)
            res.items.append(ItemResult(item.id, item.intent, item.required, item.expected,
                                        status, detail))
    return res


def _check_alerts(stack: Stack, e: Mapping[str, Any], books_dir: Path, load: Any
                  ) -> tuple[str, str]:
    key = e.get("stack_key")
    if key:
        node: Any = stack.config
        for part in str(key).split("."):
            node = getattr(node, part, None)
        if not node:
            return "missing", f"stack {stack.name}: {key} is not enabled"
    try:
        answered = {a for b in load(books_dir) for a in b.alerts}
    except SkyrigError as exc:
        return "failed", f"runbooks do not parse: {exc.message}"
    lacking = [a for a in e["alerts"] if a not in answered]
    if lacking:
        return "missing", f"no runbook answers {', '.join(lacking)}"
    return "satisfied", f"monitoring on; runbooks answer {', '.join(e['alerts'])}"


def check_stack(stack: Stack, *, version: str | None = None, model: str = DEFAULT_MODEL_NAME,
                catalogue: Catalogue | None = None) -> CheckResult:
    """Check the version the stack pins (its alias in its registry) or ``version``.

    Raises :class:`~skyrig.governance.registry.RegistryError` when the alias or version does
    not exist (there is nothing to check).
    """
    reg = Registry(tracking_uri(stack), model)
    alias = stack.config.workload.model_alias
    v = reg.get(version) if version else reg.require(alias)
    return check_version(stack, reg, v, alias, catalogue)


def require_release_evidence(stack: Stack, *, version: str | None = None,
                             model: str = DEFAULT_MODEL_NAME) -> CheckResult:
    """The prod gate: refuse a version whose release decision is not ``go`` or whose required
    evidence is missing, failed or stale (raises :class:`GovernanceError` naming each item and
    the file expected). Returns the result when the version may be deployed."""
    res = check_stack(stack, version=version, model=model)
    if res.ok:
        return res
    lines = [f"  {i.id}: {i.status} – {i.detail} (expected {i.expected})" for i in res.blocking]
    raise GovernanceError(
        f"refusing to deploy {res.model} version {res.version} (@{res.alias}) to"
        f" {stack.config.environment} stack {stack.name}: required AI RMF evidence is not"
        " satisfied:\n" + "\n".join(lines),
        hint=f"`skyrig governance check --stack {stack.name}` writes the full report; release"
             " the version with the evidence, or roll the alias back (runbooks/model-rollback.md)")
