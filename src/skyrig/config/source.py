"""Reading a Pulumi stack file the way Pulumi does, keeping the line of every key.

A stack file is ``config: {"<namespace>:<key>": value}``. skyrig reads the ``skyrig:`` keys; other
namespaces (provider settings) are left alone. Every key and list item keeps its line number so
that validation errors point at the exact place in the file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from skyrig.errors import ConfigIssue, SkyrigConfigError

NAMESPACE = "skyrig"
#: Largest stack file read (bytes): real ones are 2-8 KiB; the YAML reader needs about a second
#: for this much on a loaded CI machine.
MAX_STACK_BYTES = 64 * 1024
#: Deepest nesting of maps and lists accepted.
MAX_NESTING = 32
#: Most values (map keys, map values, list items, scalars) once aliases are expanded.
MAX_EXPANDED_NODES = 20_000
KeyPath = tuple[str | int, ...]


@dataclass
class StackSource:
    """The ``skyrig:`` values of one stack file, plain Python data, plus where each key is.

    Attributes:
        file: The stack file.
        values: ``skyrig:`` key (without namespace) → plain value (dicts, lists, scalars).
        lines: Key path (e.g. ``("vms", 3, "ip")``) → 1-based line; ``()`` is the ``config:`` line.
        other_namespaces: Keys of other namespaces (``proxmox:password``) → plain value.
        other_lines: Key of another namespace → 1-based line.
    """

    file: Path
    values: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    other_namespaces: dict[str, Any] = field(default_factory=dict)
    #: line of each key of another namespace (``proxmox:password`` → 7)
    other_lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """Return the line of the deepest existing prefix of ``path``.

        Args:
            path: Key path, e.g. ``("vms", 3, "ip")``.

        Returns:
            1-based line number, or ``None`` when not even ``config:`` has one.
        """
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def issue(self, path: Iterable[str | int], message: str, hint: str = "") -> ConfigIssue:
        """Build a config issue located at a key path of this file.

        Args:
            path: Key path, e.g. ``("vms", 3, "ip")``.
            message: What is wrong.
            hint: What to do about it.

        Returns:
            The issue with file, line (see :meth:`line_of`) and rendered path
            (``skyrig:vms[3].ip``).
        """
        p = tuple(path)
        return ConfigIssue(
            file=str(self.file),
            line=self.line_of(p),
            path=render_path(p),
            message=message,
            hint=hint,
        )


def render_path(path: KeyPath) -> str:
    """Render a key path the way errors show it.

    Args:
        path: Key path, e.g. ``("vms", 3, "ip")``.

    Returns:
        E.g. ``skyrig:vms[3].ip``; ``config`` for the empty path.
    """
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


def _refuse(shown: str, message: str, hint: str, line: int | None = None) -> SkyrigConfigError:
    return SkyrigConfigError(ConfigIssue(shown, line, "", message, hint))


def _read_bounded(file: Path, shown: str) -> str:
    """The file's text, refusing what is not a regular UTF-8 file of at most MAX_STACK_BYTES."""
    try:
        st = os.stat(file)
    except FileNotFoundError:
        raise _refuse(shown, "stack file not found",
                      "create it (see stacks/Pulumi.local.yaml) or pass an existing --stack"
                      ) from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, embedded NUL, EACCES
        raise _refuse(shown, f"cannot read the stack file: {exc}",
                      "pass the name or path of a readable stack file") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise _refuse(shown, f"the stack file is {kind}, not a regular file",
                      "pass a Pulumi.<stack>.yaml file")
    if st.st_size > MAX_STACK_BYTES:
        raise _refuse(shown, f"the stack file is {st.st_size} bytes; the limit is"
                      f" {MAX_STACK_BYTES}", "a stack file is a few kilobytes; check the path")
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_STACK_BYTES + 1)
    except OSError as exc:
        raise _refuse(shown, f"cannot read the stack file: {exc.strerror or exc}",
                      "check its permissions") from None
    if len(raw) > MAX_STACK_BYTES:
        raise _refuse(shown, f"the stack file is larger than {MAX_STACK_BYTES} bytes",
                      "a stack file is a few kilobytes; check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _refuse(shown, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset"
                      f" {exc.start})", "save the file as UTF-8", line) from None


def _expanded_size(root: Node) -> tuple[int, int]:
    """(nodes after alias expansion, deepest nesting) of a composed YAML document.

    Aliases point at shared nodes, so a "billion laughs" file is small as a graph but huge once
    expanded; sizes are memoised per node so this costs one pass over the graph, and it stops
    counting as soon as a limit is passed.
    """
    sizes: dict[int, tuple[int, int]] = {}

    def walk(node: Node, depth: int) -> tuple[int, int]:
        if depth > MAX_NESTING:
            return (1, depth)
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = (1, 1)  # a recursive alias counts once
        total, deepest = 1, 1
        children: list[Node] = []
        if isinstance(node, MappingNode):
            for k, v in node.value:
                children.extend((k, v))
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        for child in children:
            n, d = walk(child, depth + 1)
            total += n
            deepest = max(deepest, d + 1)
            if total > MAX_EXPANDED_NODES or deepest > MAX_NESTING:
                break
        sizes[key] = (total, deepest)
        return sizes[key]

    return walk(root, 0)


#: Widest indentation accepted (columns): far beyond any real stack file, and it keeps the YAML
#: scanner away from pathological block nesting.
MAX_INDENT = 256


def _prescan(text: str, shown: str) -> None:
    """Refuse deep flow nesting and wide indentation before the YAML scanner sees the text.

    Limits are MAX_NESTING levels and MAX_INDENT columns (the scanner's cost grows with the square
    of the flow depth). One pass: brackets inside quotes and comments are not counted.
    """
    depth = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" \t-"))
        if indent > MAX_INDENT:
            raise _refuse(shown, f"indentation of {indent} columns (nesting too deep; the"
                          f" limit is {MAX_INDENT})", "flatten the structure", lineno)
        quote = ""
        prev = " "
        for ch in line:
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"" and (prev in " \t,[{:" or depth):
                quote = ch
            elif ch == "#" and prev in " \t":
                break
            elif ch in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    raise _refuse(shown, f"nesting deeper than {MAX_NESTING} levels",
                                  "a stack file nests a few levels; flatten the structure",
                                  lineno)
            elif ch in "]}":
                depth = max(0, depth - 1)
            prev = ch


def _parse(text: str, shown: str) -> Any:
    _prescan(text, shown)
    yaml = YAML(typ="rt")
    try:
        node = yaml.compose(text)
        if node is None:
            return None
        total, deepest = _expanded_size(node)
        if deepest > MAX_NESTING:
            raise _refuse(shown, f"nesting deeper than {MAX_NESTING} levels",
                          "a stack file nests a few levels; flatten the structure")
        if total > MAX_EXPANDED_NODES:
            raise _refuse(shown, f"more than {MAX_EXPANDED_NODES} values once aliases are"
                          " expanded (an alias bomb?)", "remove the nested anchors/aliases")
        # construct from the graph already composed (one pass of the YAML reader, not two)
        return yaml.constructor.construct_document(node)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise _refuse(shown, f"not valid YAML: {exc.problem or exc.context}",
                      "fix the YAML syntax at that line", line) from None
    except YAMLError as exc:  # reader errors: control characters, unreadable code points
        raise _refuse(shown, f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                      "remove control characters; save the file as plain UTF-8 text") from None
    except RecursionError:
        raise _refuse(shown, f"nesting deeper than {MAX_NESTING} levels",
                      "a stack file nests a few levels; flatten the structure") from None


def read_stack_file(file: Path) -> StackSource:
    """Parse a stack file the way Pulumi reads it (``config:`` map of ``<namespace>:<key>``).

    Bounded input: a regular file (not a directory, FIFO or device) of at most
    :data:`MAX_STACK_BYTES` (64 KiB), UTF-8, at most :data:`MAX_NESTING` levels deep and
    :data:`MAX_EXPANDED_NODES` values once aliases are expanded (so "billion laughs" files and
    huge files are refused in well under a second instead of exhausting CPU and memory). Bare
    keys belong to the project namespace ``skyrig`` (Pulumi docs: project configuration).

    Args:
        file: The stack file, ``stacks/Pulumi.<stack>.yaml``.

    Returns:
        The ``skyrig:`` values with the line of every key and list item, and the other
        namespaces.

    Raises:
        SkyrigConfigError: The file is missing, unreadable, not a regular file, too large, not
            UTF-8, not valid YAML, nested too deep, an alias bomb, or has no top-level ``config:``
            map (exit status 2).
    """
    shown = str(file)
    doc = _parse(_read_bounded(file, shown), shown)
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
    other_lines: dict[str, int] = {}
    for key in config:
        text = str(key)
        ns, sep, name = text.partition(":")
        if not sep:
            # Pulumi prefixes bare keys with the project name, which is skyrig.
            ns, name = NAMESPACE, text
        if ns != NAMESPACE:
            others[text] = _plain(config[key], (), {})
            with contextlib.suppress(KeyError, TypeError):
                other_lines[text] = config.lc.key(key)[0] + 1
            continue
        lines[(name,)] = config.lc.key(key)[0] + 1
        values[name] = _plain(config[key], (name,), lines)
    return StackSource(file=file, values=values, lines=lines, other_namespaces=others,
                       other_lines=other_lines)
