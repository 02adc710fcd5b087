"""The compatibility matrix (``compatibility.yaml``): which versions work together."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def matrix() -> dict[str, Any]:
    """Return the parsed compatibility data (cached; it ships with the package).

    Sources of its entries: NVIDIA CUDA release notes (minimum driver per toolkit), PyTorch/JAX CUDA
    wheel matrices, KubeRay's compatibility table, k3s release channels (see the file's header).

    Returns:
        The YAML as nested dicts: ``gpu_models``, ``cuda``, ``debian_driver_branches``, ``torch``,
        ``jax``, ``ray``, ``kuberay``, ``kubernetes``, ... The same object on every call: do not
        mutate it.

    Raises:
        OSError: The packaged file cannot be read.
        yaml.YAMLError: The packaged file is not valid YAML.
    """
    text = resources.files("skyrig.config").joinpath("compatibility.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def version_tuple(v: str) -> tuple[int, ...]:
    """Return the numeric release parts of a version string.

    Args:
        v: A version such as ``"580.126.20"`` or ``"v1.33.4+k3s1"``; a leading ``v``, build
            metadata (``+...``) and a pre-release suffix (``-...``) are dropped.

    Returns:
        E.g. ``(580, 126, 20)`` or ``(1, 33, 4)``; non-numeric parts are skipped.
    """
    core = v.lstrip("v").split("+", 1)[0].split("-", 1)[0]
    return tuple(int(p) for p in core.split(".") if p.isdigit())


def minor(v: str) -> str:
    """Return the ``major.minor`` of a version string.

    Args:
        v: A version such as ``"v1.33.4+k3s1"``.

    Returns:
        E.g. ``"1.33"``.
    """
    parts = version_tuple(v)
    return ".".join(str(p) for p in parts[:2])


def gpu_model(key: str) -> dict[str, Any] | None:
    """Return a GPU model's entry of the compatibility matrix.

    Args:
        key: Model key, e.g. ``rtx-a4000``.

    Returns:
        ``name``, ``vendor_device`` (hex ``vendor:device``), ``memory_mib`` (MiB),
        ``product_label`` and more; ``None`` for an unknown model.
    """
    models: dict[str, dict[str, Any]] = matrix()["gpu_models"]
    return models.get(key)
