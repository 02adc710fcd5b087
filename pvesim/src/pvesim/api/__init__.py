"""Endpoint handlers, registered per (method, schema path template)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pvesim.auth import Caller
    from pvesim.backend import Backend

Handler = Callable[["Backend", "Caller", dict[str, Any]], Any]
HANDLERS: dict[tuple[str, str], Handler] = {}


@dataclass
class Reply:
    """A handler answer with extra top-level keys beside ``data`` (e.g. ``total``)."""

    data: Any
    extra: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None  # a complete, already encoded JSON body


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[(method, template)] = fn
        return fn

    return register


def load_all() -> dict[tuple[str, str], Handler]:
    from pvesim.api import (  # noqa: F401
        access,
        cluster,
        mapping,
        monitoring,
        qemu,
        qemu_agent,
        qemu_clone,
        qemu_cloudinit,
        qemu_config,
        qemu_disk,
        qemu_migrate,
        qemu_power,
        tasks_api,
    )

    return HANDLERS
