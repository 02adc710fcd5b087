"""Reading a Pulumi stack file the way Pulumi does, keeping the line of every key.

A stack file is ``config: {"<namespace>:<key>": value}``. skyrig reads the ``skyrig:`` keys; other
namespaces (provider settings) are left alone. Every key and list item keeps its line number so
that validation errors point at the exact place in the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from skyrig.errors import ConfigIssue, SkyrigConfigError

NAMESPACE = "skyrig"
KeyPath = tuple[str | int, ...]


@dataclass
class StackSource:
    """The ``skyrig:`` values of one stack file, plain Python data, plus where each key is."""

    file: Path
    values: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    other_namespaces: dict[str, Any] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """Line of the deepest existing prefix of ``path`` (1-based)."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def issue(self, path: Iterable[str | int], message: str, hint: str = "") -> ConfigIssue:
        p = tuple(path)
        return ConfigIssue(
            file=str(self.file),
            line=self.line_of(p),
            path=render_path(p),
            message=message,
            hint=hint,
        )


def render_path(path: KeyPath) -> str:
    """``("vms", 3, "ip")`` → ``skyrig:vms[3].ip``."""
    if not path:
        return "config"
    out = f"{NAMESPACE}:{path[0]}"
    for part in path[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _plain(node: Any, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            kp = (*path, str(key))
            with contextlib.suppress(KeyError, TypeError):
                lines[kp] = node.lc.key(key)[0] + 1
            out[str(key)] = _plain(value, kp, lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            kp = (*path, i)
            with contextlib.suppress(KeyError, TypeError):
                lines[kp] = node.lc.item(i)[0] + 1
            items.append(_plain(value, kp, lines))
        return items
    if isinstance(node, str):
        return str(node)
    return node


def read_stack_file(file: Path) -> StackSource:
    """Parse a stack file; YAML or structure errors raise :class:`SkyrigConfigError`."""
    shown = str(file)
    if not file.is_file():
        raise SkyrigConfigError(
            ConfigIssue(
                shown,
                None,
                "",
                "stack file not found",
                "create it (see stacks/Pulumi.local.yaml) or pass an existing --stack",
            )
        )
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(file.read_text(encoding="utf-8"))
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SkyrigConfigError(
            ConfigIssue(
                shown,
                line,
                "",
                f"not valid YAML: {exc.problem}",
                "fix the YAML syntax at that line",
            )
        ) from None
    except UnicodeDecodeError:
        raise SkyrigConfigError(
            ConfigIssue(shown, None, "", "not UTF-8 text", "save the file as UTF-8")
        ) from None
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("config"), CommentedMap):
        raise SkyrigConfigError(
            ConfigIssue(
                shown,
                1,
                "config",
                "a Pulumi stack file needs a top-level `config:` map",
                "start the file with `config:` and put keys as `skyrig:<key>: ...`",
            )
        )
    config: CommentedMap = doc["config"]
    values: dict[str, Any] = {}
    lines: dict[KeyPath, int] = {(): config.lc.line + 1 if config.lc.line is not None else 1}
    others: dict[str, Any] = {}
    for key in config:
        text = str(key)
        ns, sep, name = text.partition(":")
        if not sep:
            # Pulumi prefixes bare keys with the project name, which is skyrig.
            ns, name = NAMESPACE, text
        if ns != NAMESPACE:
            others[text] = _plain(config[key], (), {})
            continue
        lines[(name,)] = config.lc.key(key)[0] + 1
        values[name] = _plain(config[key], (name,), lines)
    return StackSource(file=file, values=values, lines=lines, other_namespaces=others)
