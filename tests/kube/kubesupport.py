"""Helpers of the Kubernetes tests: read a render back, the golden view of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

GOLDEN = Path(__file__).parent / "golden"


def read_render(out: Path, stack: str) -> dict[str, list[dict[str, Any]]]:
    """``{component: objects}`` read back from ``out/<stack>/kubernetes/*.yaml``."""
    base = out / stack / "kubernetes"
    return {f.stem: [d for d in yaml.load_all(f.read_text(), Loader=yaml.CSafeLoader) if d]
            for f in sorted(base.glob("*.yaml"))}


def golden_view(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as compared with the golden files: CRDs (4 MB of upstream schema, checked
    against the vendored release by another test) become their name and content digest."""
    out = []
    for obj in objs:
        if obj.get("kind") == "CustomResourceDefinition":
            digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
            out.append({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                        "metadata": {"name": obj["metadata"]["name"]},
                        "sha256": digest})
        else:
            out.append(obj)
    return out


def golden_text(objs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(golden_view(objs), sort_keys=False, explicit_start=True, width=100)
