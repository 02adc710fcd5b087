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
    """The KubeRay operator install of ``version`` (CRDs, RBAC, Service, Deployment): fresh
    copies (parsed again from the cached JSON text: faster than a deep copy of 4 MB).

    Raises :class:`SkyrigConfigError` when that release is not vendored.
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
    """(device-plugin DaemonSet, GPU Feature Discovery DaemonSet) of ``version``: deep copies."""
    dp, gfd = _device_plugin(version)
    return copy.deepcopy(dp), copy.deepcopy(gfd)


@cache
def prometheus_operator_crds() -> tuple[Obj, ...]:
    """The ServiceMonitor, PodMonitor and PrometheusRule CRDs (v0.93.0)."""
    out: list[Obj] = []
    for name in PROMETHEUS_OPERATOR_CRDS:
        out.extend(d for d in yaml.load_all(_text("prometheus-operator", name), _Loader) if d)
    return tuple(out)


def crds(kuberay_version: str) -> list[Obj]:
    """Every CRD skyrig validates custom resources against (KubeRay + Prometheus Operator)."""
    ray = [d for d in _kuberay(kuberay_version) if d.get("kind") == "CustomResourceDefinition"]
    return [*ray, *prometheus_operator_crds()]
