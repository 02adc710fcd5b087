"""The vendored PVE 8.4 API schema subset and route matching over it.

``pve-8.4-subset.json`` is AGPL-3.0-or-later data (see PROVENANCE.md beside it).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "pve-8.4-subset.json"


@lru_cache(maxsize=1)
def _schema() -> dict[str, dict[str, Any]]:
    text = resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = json.loads(text)
    return data


def covered_paths() -> list[str]:
    """Every path template in the vendored subset."""
    return sorted(_schema())


def endpoint_info(path: str, method: str) -> dict[str, Any] | None:
    """The schema ``info`` of one method (shared object; do not modify), or None."""
    return _schema().get(path, {}).get(method.upper())


def load_endpoint_schema(path: str, method: str) -> dict[str, Any]:
    """A copy of the PVE 8.4 schema of ``METHOD path``.

    ``path`` is a template such as ``/nodes/{node}/qemu/{vmid}/config`` (a concrete path such as
    ``/nodes/pve1/qemu/100/config`` is matched against the templates too). The result has the
    keys of the upstream schema: ``parameters`` (``{"additionalProperties": 0, "properties":
    {...}}``), ``returns``, ``permissions``, ``allowtoken``, ``protected``, ``proxyto``.

    Raises KeyError when the endpoint is not in the vendored subset.
    """
    info = endpoint_info(path, method)
    if info is None:
        match = match_route(path)
        if match is not None:
            info = endpoint_info(match.template, method)
    if info is None:
        raise KeyError(f"{method.upper()} {path} is not in the vendored PVE 8.4 schema subset")
    return copy.deepcopy(info)


@dataclass(frozen=True)
class RouteMatch:
    template: str
    params: dict[str, str]


_SEGMENT = re.compile(r"\{([^}]+)\}")


@lru_cache(maxsize=1)
def _compiled() -> list[tuple[re.Pattern[str], str, int]]:
    out = []
    for template in _schema():
        pattern = "^" + _SEGMENT.sub(lambda m: f"(?P<{m.group(1).replace('-', '_')}>[^/]+)",
                                     re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
        pattern += "$"
        static = len(template) - sum(len(m.group(0)) for m in _SEGMENT.finditer(template))
        out.append((re.compile(pattern), template, static))
    # prefer templates with more literal text (e.g. /status/current over /{x})
    out.sort(key=lambda item: -item[2])
    return out


def match_route(path: str) -> RouteMatch | None:
    """Match a concrete API path (without ``/api2/json``) against the covered templates."""
    path = path.rstrip("/") or "/"
    for regex, template, _ in _compiled():
        m = regex.match(path)
        if m:
            names = _SEGMENT.findall(template)
            return RouteMatch(template, {n: m.group(n.replace("-", "_")) for n in names})
    return None
