"""The compatibility matrix (``compatibility.yaml``): which versions work together."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def matrix() -> dict[str, Any]:
    """The parsed compatibility data (cached; it ships with the package)."""
    text = resources.files("skyrig.config").joinpath("compatibility.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def version_tuple(v: str) -> tuple[int, ...]:
    """``"580.126.20"`` → ``(580, 126, 20)``; ``"v1.33.4+k3s1"`` → ``(1, 33, 4)``."""
    core = v.lstrip("v").split("+", 1)[0].split("-", 1)[0]
    return tuple(int(p) for p in core.split(".") if p.isdigit())


def minor(v: str) -> str:
    """``"v1.33.4+k3s1"`` → ``"1.33"``."""
    parts = version_tuple(v)
    return ".".join(str(p) for p in parts[:2])


def gpu_model(key: str) -> dict[str, Any] | None:
    models: dict[str, dict[str, Any]] = matrix()["gpu_models"]
    return models.get(key)
