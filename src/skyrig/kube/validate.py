"""Schema validation of rendered Kubernetes objects (pure: no API server).

- Built-in kinds: ``kubernetes-validate`` in **strict** mode at the stack's Kubernetes version
  (unknown fields are errors only in strict mode).
- Custom resources (``ray.io`` RayCluster/RayJob/RayService/RayCronJob, ``monitoring.coreos.com``
  ServiceMonitor/PodMonitor/PrometheusRule): the served version's ``openAPIV3Schema`` of the
  vendored CRD, with ``additionalProperties: false`` added to every object schema that lists
  properties and does not set ``x-kubernetes-preserve-unknown-fields`` (the API server prunes or
  rejects unknown fields; a silent prune is a bug in a manifest we wrote), and ``metadata``
  checked as an ObjectMeta subset.
- A kind with no schema is a failure, never a silent pass.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema
import referencing
from kubernetes_validate import utils as kv
from kubernetes_validate.utils import SchemaNotFoundError

from skyrig.errors import SkyrigError
from skyrig.kube.vendor import Obj, crds

LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                 "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      "maxLength": 63},
        "labels": LABELS,
        "annotations": LABELS,
    },
}


@dataclass(frozen=True)
class ManifestProblem:
    """One object that does not validate: which, where in it, and why.

    Attributes:
        kind: The object's ``kind`` (``<no kind>`` when missing).
        name: ``metadata.name`` (``<unnamed>`` when missing).
        path: Dotted path of the offending field, e.g. ``spec.template.spec.containers.0``; empty
            for the object itself.
        message: The schema validator's message.
    """

    kind: str
    name: str
    path: str
    message: str

    def render(self) -> str:
        """Return the problem as one line: ``<kind>/<name>: <path>: <message>``.

        Returns:
            The line; ``<root>`` stands for an empty path.
        """
        return f"{self.kind}/{self.name}: {self.path or '<root>'}: {self.message}"


class ManifestValidationError(SkyrigError):
    """Rendered Kubernetes objects do not validate against their schemas.

    Args:
        problems: Every problem found; kept as ``problems``.
    """

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} Kubernetes object problem(s):\n"
            + "\n".join("  " + p.render() for p in problems),
            hint="fix the generator in src/skyrig/kube/ (or the stack value it reads)",
        )


def strict_schema(schema: Any) -> Any:
    """Return a deep copy of an OpenAPI v3 schema where object schemas reject unknown fields.

    Adds ``additionalProperties: false`` to every schema that lists ``properties`` and sets
    neither ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` (the API server
    prunes unknown fields of structural schemas; Kubernetes docs: "CustomResourceDefinition ...
    Field pruning").

    Args:
        schema: A schema or any part of one (dicts, lists and scalars are walked).

    Returns:
        The tightened copy; the input is not changed.
    """
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_schema(crd: Obj, version: str) -> Any:
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served", True):
            schema = strict_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            schema.setdefault("properties", {})["metadata"] = OBJECT_META
            schema["required"] = sorted({*schema.get("required", []),
                                         "apiVersion", "kind", "metadata"})
            return schema
    return None


@cache
def _crd_validators(kuberay_version: str) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for crd in crds(kuberay_version):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = _crd_schema(crd, v["name"])
            if schema is not None:
                cls = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
                out[(f"{group}/{v['name']}", kind)] = cls(schema)
    return out


@cache
def _definitions(schema_dir: str, version: str) -> Any:
    return referencing.Resource.from_contents(
        kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version))


@cache
def _builtin_validator(k8s_version: str, api: str, kind: str) -> Any:
    """Return kubernetes-validate's strict schema for (version, apiVersion, kind), compiled once.

    Same schema choice as ``kubernetes_validate.validate(obj, version, strict=True)`` (the newest
    bundled version not newer than ``k8s_version``; tests check both agree), but cached: the
    library re-reads its 2 MB definitions file on every call. Raises SchemaNotFoundError.
    """
    version = [v for v in kv.all_versions()
               if kv.major_minor(v) <= kv.major_minor(k8s_version)][-1]
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api)
    schema_dir = f"v{version}-local-strict"
    try:
        schema = kv.schema_contents(
            f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group}.json", k8s_version)
    except FileNotFoundError:
        raise SchemaNotFoundError(version=kv.major_minor(k8s_version), kind=kind,
                                  api_version=api) from None
    registry: Any = referencing.Registry()
    registry = referencing.Resource.from_contents(schema) @ registry
    registry = _definitions(schema_dir, k8s_version) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def custom_kinds(kuberay_version: str = "1.7.0") -> list[tuple[str, str]]:
    """Return the (apiVersion, kind) pairs validated against vendored CRDs.

    Args:
        kuberay_version: KubeRay release without ``v``.

    Returns:
        Sorted pairs such as ``("ray.io/v1", "RayJob")`` for every served CRD version.

    Raises:
        SkyrigConfigError: That KubeRay release is not vendored.
    """
    return sorted(_crd_validators(kuberay_version))


def _where(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path)


def _name(obj: Obj) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return str(meta.get("name", "<unnamed>")) if meta else "<unnamed>"


def problems(objs: Iterable[Obj], k8s_version: str,
             kuberay_version: str = "1.7.0") -> list[ManifestProblem]:
    """Return every problem of every object (empty list: all valid).

    Built-in kinds use kubernetes-validate's strict schema for the Kubernetes minor (unknown fields
    are errors); custom resources use the served version's ``openAPIV3Schema`` of the vendored CRDs
    of KubeRay ``kuberay_version`` and Prometheus Operator v0.93.0, tightened by
    :func:`strict_schema`. A kind without a schema is a problem, never a silent pass.

    Args:
        objs: Kubernetes manifests as dicts.
        k8s_version: Kubernetes version, ``"1.33.4"`` or ``"1.33"``.
        kuberay_version: KubeRay release without ``v``.

    Returns:
        The problems, object by object, sorted by field path within an object.

    Raises:
        SkyrigConfigError: That KubeRay release is not vendored.
    """
    crd_validators = _crd_validators(kuberay_version)
    out: list[ManifestProblem] = []
    for obj in objs:
        kind, api = str(obj.get("kind", "")), str(obj.get("apiVersion", ""))
        name = _name(obj)
        if not kind or not api:
            out.append(ManifestProblem(kind or "<no kind>", name, "",
                                       "apiVersion and kind are required"))
            continue
        validator = crd_validators.get((api, kind))
        if validator is not None:
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            out.extend(ManifestProblem(kind, name, _where(e), e.message) for e in errors)
            continue
        group = api.split("/")[0] if "/" in api else ""
        if "." in group and not group.endswith(".k8s.io"):
            out.append(ManifestProblem(kind, name, "", f"no schema for {api} {kind}"
                                       " (custom resource without a vendored CRD)"))
            continue
        try:
            builtin = _builtin_validator(k8s_version, api, kind)
        except SchemaNotFoundError:
            out.append(ManifestProblem(kind, name, "", f"no schema for {api} {kind} in"
                                       f" Kubernetes {k8s_version}"))
            continue
        errors = sorted(builtin.iter_errors(obj), key=lambda e: list(e.absolute_path))
        out.extend(ManifestProblem(kind, name, _where(e), e.message) for e in errors)
    return out


def validate_objects(objs: Iterable[Obj], k8s_version: str,
                     kuberay_version: str = "1.7.0") -> None:
    """Validate objects and raise listing every problem (see :func:`problems`).

    Args:
        objs: Kubernetes manifests as dicts.
        k8s_version: Kubernetes version, ``"1.33.4"`` or ``"1.33"``.
        kuberay_version: KubeRay release without ``v``.

    Raises:
        ManifestValidationError: Any object does not validate.
        SkyrigConfigError: That KubeRay release is not vendored.
    """
    found = problems(objs, k8s_version, kuberay_version)
    if found:
        raise ManifestValidationError(found)
