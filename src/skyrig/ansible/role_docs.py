"""Each role README's variable table, generated from the role's ``meta/argument_specs.yml``.

The table sits between ``<!-- BEGIN argument_specs -->`` and ``<!-- END argument_specs -->``
(the way ``docs/stack-reference.md`` is generated from the stack model); a test keeps it
current. Regenerate with ``python -m skyrig.ansible.role_docs [ROLES_DIR]``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from skyrig.errors import SkyrigConfigError

BEGIN = "<!-- BEGIN argument_specs (generated: python -m skyrig.ansible.role_docs) -->"
END = "<!-- END argument_specs -->"
_HAND_TABLE = re.compile(r"^\| variable \|.*?\n(?:\|.*\n)+", re.MULTILINE)


def _cell(text: str) -> str:
    text = re.sub(r"[A-Z]\(([^)]*)\)", r"`\1`", text)  # ansible-doc markup C(x), O(x), ...
    return " ".join(text.split()).replace("|", "\\|")


def _default(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    text = json.dumps(value, sort_keys=True)
    if len(text) > 80:  # long lists (DCGM counters): the table points at the file
        return f"{len(value)} entries (see `defaults/main.yml`)"
    return f"`{text}`"


def render_table(role_dir: Path) -> str:
    """The Markdown table (with its BEGIN/END markers) for ``role_dir``'s main entry point:
    one row per option in argument_specs order: name, type, default, description.

    Raises :class:`~skyrig.errors.SkyrigConfigError` when the role has no
    ``meta/argument_specs.yml`` with an ``argument_specs.main.options`` mapping.
    """
    spec_file = role_dir / "meta" / "argument_specs.yml"
    try:
        options = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]["options"]
    except (OSError, KeyError, TypeError) as exc:
        raise SkyrigConfigError(
            f"no argument_specs.main.options ({exc}): declare every role variable in "
            "meta/argument_specs.yml",
            file=str(spec_file),
        ) from exc
    rows = [BEGIN, "", "| variable | type | default | description |", "|---|---|---|---|"]
    for name, opt in options.items():
        desc = opt.get("description", "")
        if isinstance(desc, list):
            desc = " ".join(desc)
        typ = opt.get("type", "str")
        if opt.get("elements"):
            typ = f"{typ} of {opt['elements']}"
        if opt.get("choices"):
            desc = f"{desc} One of: {', '.join(f'`{c}`' for c in opt['choices'])}."
        default = "(required)" if opt.get("required") else _default(opt.get("default"))
        rows.append(f"| `{name}` | {typ} | {_cell(default)} | {_cell(desc)} |")
    rows += ["", END]
    return "\n".join(rows)


def updated_readme(role_dir: Path) -> str:
    """``role_dir``/README.md with its variable table replaced by :func:`render_table`'s
    (the marked block, or on first use the hand-written ``| variable |`` table)."""
    readme = (role_dir / "README.md").read_text()
    table = render_table(role_dir)
    if BEGIN in readme and END in readme:
        head, _, rest = readme.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + table + tail
    match = _HAND_TABLE.search(readme)
    if match is None:
        return readme.rstrip("\n") + "\n\n## Variables\n\n" + table + "\n"
    return readme[: match.start()] + table + "\n" + readme[match.end():]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README of every role under ``argv[0]`` (default ``roles``); exit 0."""
    roles = Path((argv or sys.argv[1:] or ["roles"])[0])
    dirs = sorted(p for p in roles.iterdir() if (p / "meta" / "argument_specs.yml").is_file())
    for role_dir in dirs:
        (role_dir / "README.md").write_text(updated_readme(role_dir))
        print(f"wrote {role_dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
