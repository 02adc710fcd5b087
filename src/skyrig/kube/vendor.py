"""Upstream manifests and CRDs vendored under ``skyrig/kube/vendor/`` (read-only, cached).

Nothing is downloaded at run time: the KubeRay operator install (rendered from KubeRay's own
kustomize config), the NVIDIA device plugin DaemonSets and the Prometheus Operator CRDs ship with
the package; ``PROVENANCE.md`` beside each says where they come from.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import yaml

from skyrig.errors import SkyrigConfigError

Obj = dict[str, Any]

try:  # the C loader reads the CRDs ~10x faster; PyYAML without libyaml still works
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Loader = yaml.SafeLoader

PROMETHEUS_OPERATOR_VERSION = "0.93.0"
PROMETHEUS_OPERATOR_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)


def _text(*parts: str) -> str:
    node = resources.files("skyrig.kube").joinpath("vendor")
    for part in parts:
        node = node.joinpath(part)
    return node.read_text("utf-8")


def _exists(*parts: str) -> bool:
    node = resources.files("skyrig.kube").joinpath("vendor")
    for part in parts:
        node = node.joinpath(part)
    return node.is_file()


@cache
def _kuberay_text(version: str) -> str:
    name = f"operator-v{version}.json"
    if not _exists("kuberay", name):
        raise SkyrigConfigError(
            f"KubeRay {version} is not vendored (no skyrig/kube/vendor/kuberay/{name})",
            file="src/skyrig/kube/vendor/kuberay",
        )
    return _text("kuberay", name)


@cache
def _kuberay(version: str) -> tuple[Obj, ...]:
    docs: list[Obj] = json.loads(_kuberay_text(version))
    return tuple(docs)


def kuberay_install(version: str) -> list[Obj]:
    """Return the KubeRay operator install of ``version`` as fresh copies.

    The objects KubeRay's own kustomize config (``ray-operator/config/default``, rendered with
    ``kubectl kustomize``) holds: CRDs, RBAC, Service, Deployment. Parsed again from the cached JSON
    text (faster than a deep copy of 4 MB), so callers may mutate them.

    Args:
        version: KubeRay release without ``v``, e.g. ``1.7.0``.

    Returns:
        The manifests in KubeRay's order.

    Raises:
        SkyrigConfigError: That release is not vendored.
    """
    docs: list[Obj] = json.loads(_kuberay_text(version))
    return docs


@cache
def _device_plugin(version: str) -> tuple[Obj, Obj]:
    dp: Obj = yaml.load(_text("nvidia-device-plugin", "nvidia-device-plugin.yml"), _Loader)
    gfd: Obj = yaml.load(
        _text("nvidia-device-plugin", "gpu-feature-discovery-daemonset.yaml"), _Loader
    )
    image = dp["spec"]["template"]["spec"]["containers"][0]["image"]
    if not image.endswith(f":v{version}"):
        raise SkyrigConfigError(
            f"NVIDIA device plugin {version} is not vendored (the vendored manifest is {image})",
            file="src/skyrig/kube/vendor/nvidia-device-plugin",
        )
    return dp, gfd


def device_plugin_manifests(version: str) -> tuple[Obj, Obj]:
    """Return the NVIDIA device plugin and GPU Feature Discovery DaemonSets of ``version``.

    From NVIDIA's k8s-device-plugin release (``deployments/static/``); see the vendored
    ``PROVENANCE.md``.

    Args:
        version: Device-plugin release without ``v``, e.g. ``0.20.0``.

    Returns:
        ``(device-plugin DaemonSet, GPU Feature Discovery DaemonSet)``: deep copies, safe to mutate.

    Raises:
        SkyrigConfigError: The vendored manifest is of another release.
    """
    dp, gfd = _device_plugin(version)
    return copy.deepcopy(dp), copy.deepcopy(gfd)


@cache
def prometheus_operator_crds() -> tuple[Obj, ...]:
    """Return the ServiceMonitor, PodMonitor and PrometheusRule CRDs of Prometheus Operator v0.93.0.

    Returns:
        The CRD objects (cached and shared: do not mutate).
    """
    out: list[Obj] = []
    for name in PROMETHEUS_OPERATOR_CRDS:
        out.extend(d for d in yaml.load_all(_text("prometheus-operator", name), _Loader) if d)
    return tuple(out)


def crds(kuberay_version: str) -> list[Obj]:
    """Return every CRD skyrig validates custom resources against (KubeRay + Prometheus Operator).

    Args:
        kuberay_version: KubeRay release without ``v``.

    Returns:
        The CRD objects (shared with the cache: do not mutate).

    Raises:
        SkyrigConfigError: That KubeRay release is not vendored.
    """
    ray = [d for d in _kuberay(kuberay_version) if d.get("kind") == "CustomResourceDefinition"]
    return [*ray, *prometheus_operator_crds()]
