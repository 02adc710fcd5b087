"""Render the stack-file reference (docs/stack-reference.md) from the typed model itself."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from skyrig.config.model import StackConfig


def _type_name(ann: Any) -> str:
    if getattr(ann, "__metadata__", None) is not None:  # Annotated[T, ...]: show T
        return _type_name(ann.__origin__)
    args = getattr(ann, "__args__", None)
    if args and any(getattr(a, "__metadata__", None) is not None for a in args):
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(ann, '__name__', str(getattr(ann, '__origin__', ann)))}[{inner}]"
    text = str(ann) if args else getattr(ann, "__name__", str(ann))
    return re.sub(r"\b[\w]+\.", "", text.replace("typing.", "")).replace("NoneType", "None")


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{value!r}`" if value not in (None, [], {}) else f"`{value}`"


def _models(model: type[BaseModel], seen: list[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.append(model)
    for field in model.model_fields.values():
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            for inner in (cand, *getattr(cand, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    _models(inner, seen)


def render_markdown() -> str:
    """Render the stack-file reference, one table per concept, in the order the stack uses them.

    Each model's first docstring paragraph heads its table; each field gives key (alias),
    type, default and its ``Field`` description (units are in the descriptions and key names:
    ``*_mib`` MiB, ``*_gib`` GiB, ``*_s`` seconds).

    Returns:
        The Markdown text of docs/stack-reference.md.
    """
    models: list[type[BaseModel]] = []
    _models(StackConfig, models)
    out = [
        "# Stack file reference",
        "",
        "Generated from `skyrig.config.model` (`python -m skyrig.config.reference`); do not edit.",
        "Every key lives under the `skyrig:` namespace of `stacks/Pulumi.<env>.yaml`.",
        "",
    ]
    for model in models:
        out += [
            f"## {model.__name__}",
            "",
            (model.__doc__ or "").strip().split("\n\n")[0],
            "",
            "| key | type | default | description |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            key = field.alias or name
            desc = (field.description or "").replace("|", "\\|")
            out.append(
                f"| `{key}` | {_type_name(field.annotation).replace('|', '/')} |"
                f" {_default(field)} | {desc} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown())
