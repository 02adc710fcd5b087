"""Runbook files: markdown with YAML front matter and fenced step blocks.

A runbook is ``runbooks/<id>.md``::

    ---
    id: pending-reboot
    title: A VM has a pending reboot
    alerts: [SkyrigVmStopped]
    stacks: [local, dev, prod]
    preconditions: ["the VM's workload is drained or can be interrupted"]
    risk: medium
    vars: {vmid: null}          # optional: variable -> default (null: must be given)
    ---
    prose ...
    ```bash check name=status
    skyrig vm status --stack {{ stack }} --vmid {{ vmid }}
    ```

Steps are fenced blocks whose info string is ``<lang> <kind> name=<step> [key=value ...]`` with
``kind`` one of ``run``, ``check``, ``rollback``, ``manual``; GitHub shows the first word as
the language and the block as it is, so the page stays readable. A fence without a kind is prose
(an example), never executed. Options: ``name`` (required, unique), ``timeout`` (seconds, default
1800), ``readonly`` (``check`` steps default to ``true``: ``--dry-run`` runs them; a check that
changes something says ``readonly=false``), ``expect`` (the exit code that passes, default 0).

A ``run``/``check``/``rollback`` block holds one command (lines joined by a trailing ``\\``;
``#`` comment lines are ignored). A ``manual`` block holds the instruction a person confirms.
Errors are :class:`~skyrig.errors.SkyrigConfigError` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skyrig.errors import ConfigIssue, SkyrigConfigError

KINDS = ("run", "check", "rollback", "manual")
RISKS = ("low", "medium", "high")
REQUIRED = ("id", "title", "alerts", "stacks", "preconditions", "risk")
OPTIONAL = ("vars",)
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
FENCE_RE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
STEP_OPTIONS = ("name", "timeout", "readonly", "expect")


@dataclass(frozen=True)
class Step:
    """One fenced step: ``kind`` (run/check/rollback/manual), its text and where it is."""

    name: str
    kind: str
    text: str
    line: int
    lang: str = "bash"
    timeout_s: float = 1800.0
    readonly: bool = False
    expect: int = 0

    @property
    def variables(self) -> list[str]:
        """The ``{{ var }}`` names the step uses, in order of first use."""
        return list(dict.fromkeys(VAR_RE.findall(self.text)))


@dataclass(frozen=True)
class Runbook:
    """A parsed runbook: front matter fields, steps in file order, and the file."""

    id: str
    title: str
    alerts: tuple[str, ...]
    stacks: tuple[str, ...]
    preconditions: tuple[str, ...]
    risk: str
    path: Path
    steps: tuple[Step, ...] = ()
    vars: dict[str, str | None] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise SkyrigConfigError(
            ConfigIssue(str(self.path), None, "steps", f"runbook {self.id} has no step {name!r}",
                        f"steps: {', '.join(s.name for s in self.steps)}"))

    @property
    def variables(self) -> list[str]:
        names: dict[str, None] = {}
        for s in self.steps:
            names.update(dict.fromkeys(s.variables))
        return list(names)


def _issue(path: Path, line: int | None, key: str, message: str, hint: str = ""
           ) -> SkyrigConfigError:
    return SkyrigConfigError(ConfigIssue(str(path), line, key, message, hint))


def _front_matter(path: Path, lines: list[str]) -> tuple[dict[str, Any], int]:
    """(front matter mapping, index of the first body line)."""
    if not lines or lines[0].strip() != "---":
        raise _issue(path, 1, "front matter", "a runbook starts with a `---` YAML front matter",
                     "add `---`, the keys " + ", ".join(REQUIRED) + ", and a closing `---`")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise _issue(path, 1, "front matter", "the front matter is not closed by `---`") from None
    text = "\n".join(lines[1:end])
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = (mark.line + 2) if mark is not None else 1
        raise _issue(path, line, "front matter", f"not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise _issue(path, 2, "front matter", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise _issue(path, 2, "front matter", "the front matter must be a YAML mapping")
    return data, end + 1


def _key_line(lines: list[str], key: str, default: int = 1) -> int:
    for i, ln in enumerate(lines):
        if ln.startswith(f"{key}:"):
            return i + 1
        if ln.strip() == "---" and i > 0:
            break
    return default


def _strings(path: Path, lines: list[str], data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _issue(path, _key_line(lines, key), key, "must be a list of non-empty strings",
                     f"e.g. `{key}: [a, b]` (an empty list `[]` is allowed)")
    return tuple(value)


def _validate(path: Path, lines: list[str], data: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise _issue(path, 1, "front matter", f"missing keys: {', '.join(missing)}",
                     "every runbook declares " + ", ".join(REQUIRED))
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _issue(path, _key_line(lines, unknown[0]), unknown[0], "unknown front-matter key",
                     "known keys: " + ", ".join((*REQUIRED, *OPTIONAL)))
    rid = data["id"]
    if not isinstance(rid, str) or not ID_RE.match(rid):
        raise _issue(path, _key_line(lines, "id"), "id", f"id {rid!r} is not lower-case-kebab")
    if rid != path.stem:
        raise _issue(path, _key_line(lines, "id"), "id",
                     f"id {rid!r} does not match the file name {path.name}",
                     f"rename the file to {rid}.md (alert runbook_url points at <id>.md)")
    if not isinstance(data["title"], str) or not data["title"].strip():
        raise _issue(path, _key_line(lines, "title"), "title", "title must be a non-empty string")
    if data["risk"] not in RISKS:
        raise _issue(path, _key_line(lines, "risk"), "risk",
                     f"risk {data['risk']!r} is not one of {', '.join(RISKS)}")
    variables = data.get("vars") or {}
    if not isinstance(variables, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str | int | float))
            for k, v in variables.items()):
        raise _issue(path, _key_line(lines, "vars"), "vars",
                     "vars must map a variable name to a default (null: required)")
    return {"id": rid, "title": data["title"].strip(), "risk": data["risk"],
            "alerts": _strings(path, lines, data, "alerts"),
            "stacks": _strings(path, lines, data, "stacks"),
            "preconditions": _strings(path, lines, data, "preconditions"),
            "vars": {k: None if v is None else str(v) for k, v in variables.items()}}


def _step_header(path: Path, line: int, info: str) -> dict[str, str] | None:
    """Parse ``<lang> <kind> key=value ...``; None for a plain (prose) fence."""
    words = info.split()
    if len(words) < 2:
        return None
    lang, kind, *opts = words
    if "=" in kind:
        raise _issue(path, line, "step", f"fence `{info}` has options but no step kind",
                     f"write ```{lang} <kind> {kind} with kind one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise _issue(path, line, "step", f"unknown step kind {kind!r}",
                     f"use one of {', '.join(KINDS)}")
    out = {"lang": lang, "kind": kind}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in STEP_OPTIONS:
            raise _issue(path, line, "step", f"bad step option {opt!r}",
                         f"options are {', '.join(k + '=...' for k in STEP_OPTIONS)}")
        out[key] = value
    if not NAME_RE.match(out.get("name", "")):
        raise _issue(path, line, "step", f"{kind} step without a valid name=... option",
                     "give every step a unique name=lower_case (used by --from)")
    return out


def _command_text(path: Path, line: int, body: list[str], kind: str) -> str:
    if kind == "manual":
        text = "\n".join(body).strip()
        if not text:
            raise _issue(path, line, "step", "a manual step needs the instruction to confirm")
        return text
    joined: list[str] = []
    cur = ""
    for raw in body:
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1].rstrip() + " "
            continue
        joined.append(cur + s)
        cur = ""
    if cur:
        joined.append(cur)
    if len(joined) != 1:
        raise _issue(path, line, "step",
                     f"a {kind} step holds exactly one command (found {len(joined)})",
                     "split it into several steps, or join lines with a trailing `\\`")
    return joined[0].strip()


def _to_bool(path: Path, line: int, value: str) -> bool:
    if value in ("true", "yes"):
        return True
    if value in ("false", "no"):
        return False
    raise _issue(path, line, "step", f"readonly={value!r} is not true/false")


def parse_runbook(path: str | Path) -> Runbook:
    """Parse one runbook file. Raises :class:`SkyrigConfigError` naming ``file:line``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _issue(p, None, "", f"cannot read runbook: {exc}") from exc
    lines = text.splitlines()
    data, start = _front_matter(p, lines)
    fields = _validate(p, lines, data)
    steps: list[Step] = []
    i = start
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, line_no = m.group("fence"), i + 1
        header = _step_header(p, line_no, m.group("info").strip())
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            j += 1
        if j >= len(lines):
            raise _issue(p, line_no, "step", "code fence is not closed")
        if header is not None:
            name = header["name"]
            if any(s.name == name for s in steps):
                raise _issue(p, line_no, "step", f"duplicate step name {name!r}")
            kind = header["kind"]
            try:
                timeout = float(header.get("timeout", 1800))
                expect = int(header.get("expect", 0))
            except ValueError as exc:
                raise _issue(p, line_no, "step", f"bad number in step options: {exc}") from exc
            readonly = (_to_bool(p, line_no, header["readonly"]) if "readonly" in header
                        else kind == "check")
            steps.append(Step(name=name, kind=kind, line=line_no, lang=header["lang"],
                              text=_command_text(p, line_no, lines[i + 1:j], kind),
                              timeout_s=timeout, readonly=readonly, expect=expect))
        i = j + 1
    if not any(s.kind in ("run", "check", "manual") for s in steps):
        raise _issue(p, start + 1, "steps", "a runbook needs at least one run/check/manual step")
    return Runbook(path=p, steps=tuple(steps), **fields)


def runbook_dir(root: Path) -> Path:
    """``<root>/runbooks``."""
    return root / "runbooks"


def load_runbooks(directory: str | Path) -> list[Runbook]:
    """Every ``*.md`` in ``directory`` except ``README.md``, sorted by id."""
    d = Path(directory)
    if not d.is_dir():
        raise SkyrigConfigError(f"no runbook directory {d}", file=str(d))
    return sorted((parse_runbook(f) for f in d.glob("*.md") if f.name != "README.md"),
                  key=lambda r: r.id)


def find_runbook(directory: str | Path, rid: str) -> Runbook:
    """The runbook with id ``rid`` (file ``<rid>.md``)."""
    f = Path(directory) / f"{rid}.md"
    if not f.is_file():
        known = ", ".join(r.id for r in load_runbooks(directory))
        raise SkyrigConfigError(
            ConfigIssue(str(f), None, "", f"no runbook {rid!r}", f"known runbooks: {known}"))
    return parse_runbook(f)
